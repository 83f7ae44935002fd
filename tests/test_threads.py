"""The CPU thread policy (bytezoo.threads): pure logic with a mocked load, the overrides, and the CLI's switches."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bytezoo import threads
from bytezoo.errors import InvalidArgumentError


@pytest.mark.parametrize(
    "usable, busy, expected",
    [
        (2, 0.0, 2),  # idle machine: both cores
        (2, 0.3, 2),  # a little background noise does not cost a thread
        (2, 0.6, 1),  # most of a core busy: give it up
        (2, 1.0, 1),  # one busy-loop process
        (2, 5.0, 1),  # overloaded: never fewer than one
        (16, 3.2, 13),
        (1, 0.0, 1),
    ],
)
def test_choose_threads(usable, busy, expected):
    assert threads.choose_threads(usable, busy) == expected


def test_busy_cpus_from_mocked_proc_stat(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    samples = iter([(100.0, 1000.0), (150.0, 1100.0)])  # 50 of 100 jiffies busy over 2 cores: one core
    busy = threads.busy_cpus(reader=lambda cpus: next(samples), sleep=lambda s: None, own_cpu_seconds=lambda: 0.0)
    assert busy == pytest.approx(1.0)
    unreadable = threads.busy_cpus(reader=lambda cpus: None, sleep=lambda s: None)
    assert unreadable is None


def test_busy_cpus_reads_this_machine():
    busy = threads.busy_cpus(sample_seconds=0.02)
    assert busy is None or 0.0 <= busy <= threads.usable_cpus() + 1e-6


def test_resolve_order_explicit_env_measured(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    measured = lambda: 1.0  # noqa: E731  one core busy
    assert threads.resolve_threads(3, environ={threads.ENV_VAR: "2"}, measure=measured).threads == 3
    assert threads.resolve_threads(None, environ={threads.ENV_VAR: "2"}, measure=measured).threads == 2
    assert threads.resolve_threads(None, environ={}, measure=measured).threads == 1
    assert threads.resolve_threads(None, environ={}, measure=lambda: 0.1).threads == 2
    assert threads.resolve_threads(None, environ={}, measure=lambda: None).threads == 0  # PyTorch's default
    with pytest.raises(InvalidArgumentError, match=threads.ENV_VAR):
        threads.resolve_threads(None, environ={threads.ENV_VAR: "two"})
    with pytest.raises(InvalidArgumentError):
        threads.resolve_threads(-1, environ={})


def test_ensure_threads_respects_a_callers_choice(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_state", {})
    monkeypatch.setattr(threads, "_default_threads", lambda: before + 5)  # the caller's count differs from default
    called = []
    monkeypatch.setattr(threads, "configure_threads", lambda *a, **k: called.append(1))
    threads.ensure_threads("cpu")
    assert called == []
    threads.ensure_threads("cuda")
    assert called == []
    monkeypatch.setattr(threads, "_default_threads", lambda: torch.get_num_threads())
    threads.ensure_threads("cpu")
    assert called == [1]


def test_configure_threads_sets_and_logs_once(monkeypatch, capsys):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_state", {})
    monkeypatch.delenv("BYTEZOO_QUIET_THREADS", raising=False)
    try:
        assert threads.configure_threads(1) == 1
        assert threads.configure_threads(1) == 1
        err = capsys.readouterr().err
        assert err.count("CPU thread") == 1 and "--threads" in err
    finally:
        torch.set_num_threads(before)


def test_wait_policy_is_chosen_from_the_load_only_before_torch():
    env = {}
    assert threads.openmp_wait_before_torch(env, measure=lambda: 0.0) is None  # torch is imported in this process
    assert env == {}
    code = ("import sys; import bytezoo.threads as t; t.usable_cpus = lambda: 2; "
            "busy = {'idle': 0.1, 'busy': 1.0, 'unknown': None}[sys.argv[1]]; env = {}; "
            "print(t.openmp_wait_before_torch(env, measure=lambda: busy), sorted(env.items()), "
            "t.openmp_wait_before_torch({'OMP_WAIT_POLICY': 'ACTIVE'}), t.openmp_wait_before_torch({'GOMP_SPINCOUNT': '5'}), "
            "'torch' in sys.modules)")
    results = {load: subprocess.run([sys.executable, "-c", code, load], capture_output=True, text=True, check=True).stdout.strip()
               for load in ("idle", "busy", "unknown")}
    spin = f"GOMP_SPINCOUNT={threads.SHORT_SPIN}"
    assert results["idle"] == f"{spin} [('GOMP_SPINCOUNT', '{threads.SHORT_SPIN}')] None None False"
    assert results["busy"] == "OMP_WAIT_POLICY=PASSIVE [('OMP_WAIT_POLICY', 'PASSIVE')] None None False"
    assert results["unknown"] == results["busy"]  # unmeasurable: the side that cannot collapse


def test_cli_threads_option_sets_the_environment_and_a_wait_policy():
    code = ("import os; from bytezoo.cli import main; "
            "rc = main(['--threads', '1', 'models']); print('ENV', os.environ.get('BYTEZOO_NUM_THREADS'), "
            "os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", threads.ENV_VAR)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "ENV 1 PASSIVE None" in out or f"ENV 1 None {threads.SHORT_SPIN}" in out  # which one depends on the load now


def test_busy_cpus_does_not_count_this_process(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads, "_clock_ticks", lambda: 100.0)
    samples = iter([(100.0, 1000.0), (300.0, 1400.0)])  # 200 of 400 jiffies busy over 2 cores (2 s): one core
    own = iter([5.0, 6.5])  # this process used 1.5 CPU-seconds of the 2 s window: 0.75 core was ours
    busy = threads.busy_cpus(reader=lambda cpus: next(samples), sleep=lambda s: None, own_cpu_seconds=lambda: next(own))
    assert busy == pytest.approx(0.25)


@pytest.mark.parametrize("content, expected", [("max 100000\n", None), ("150000 100000\n", 1.5), ("50000 100000", 0.5),
                                               ("garbage", None)])
def test_cgroup_quota_caps_the_usable_cores(tmp_path, monkeypatch, content, expected):
    path = tmp_path / "cpu.max"
    path.write_text(content)
    assert threads.cgroup_cpu_quota(str(path)) == expected
    assert threads.cgroup_cpu_quota(str(tmp_path / "absent")) is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: expected)
    assert threads.usable_cpus() == (64 if expected is None else max(1, round(expected)))


def test_a_launchers_omp_num_threads_is_kept(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    choice = threads.resolve_threads(None, environ={"OMP_NUM_THREADS": "2"}, measure=lambda: 0.0)
    assert choice.threads == 2 and not choice.measured
    assert threads.resolve_threads(None, environ={"OMP_NUM_THREADS": "2", threads.ENV_VAR: "3"}).threads == 3
    assert threads.resolve_threads(None, environ={}, measure=lambda: 0.0).measured


def test_long_work_gives_a_thread_back_when_load_appears_and_takes_it_again(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_state", {})
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "_default_threads", lambda: torch.get_num_threads())
    monkeypatch.setattr(threads, "_clock_ticks", lambda: 100.0)
    monkeypatch.setenv("BYTEZOO_QUIET_THREADS", "1")
    for name in (threads.ENV_VAR, "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    # A simulated machine: 2 cores; this process keeps one core busy; "others" the cores other processes use.
    machine = {"now": 1000.0, "busy": 0.0, "total": 0.0, "own": 0.0}

    def advance(seconds: float, others: float) -> None:
        machine["now"] += seconds
        machine["total"] += 2 * 100.0 * seconds
        machine["busy"] += min(2.0, others + 1.0) * 100.0 * seconds
        machine["own"] += 1.0 * seconds

    monkeypatch.setattr(threads.time, "monotonic", lambda: machine["now"])
    monkeypatch.setattr(threads, "load_sample", lambda: threads.LoadSample(machine["busy"], machine["total"], machine["own"], 2))
    monkeypatch.setattr(threads, "busy_cpus", lambda *a, **k: 0.0)  # the standing start: an idle machine
    try:
        threads.ensure_threads("cpu")
        seen = [torch.get_num_threads()]
        for others in (0.0, 1.0, 1.0, 0.0):  # the load during each step before a look
            advance(threads.RECHECK_SECONDS + 0.1, others)
            threads.ensure_threads("cpu")
            seen.append(torch.get_num_threads())
        assert seen == [2, 2, 1, 1, 2]
        advance(threads.RECHECK_SECONDS / 2, 1.0)  # too soon for another look: the count stays
        threads.ensure_threads("cpu")
        assert torch.get_num_threads() == 2
        advance(threads.RECHECK_SECONDS, 1.0)
        monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
        threads.ensure_threads("cpu", coarse=True)  # sleeping threads: big products take every core anyway
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_load_between_samples_excludes_this_process():
    before = threads.LoadSample(busy=0.0, total=0.0, own=0.0, cores=2)
    after = threads.LoadSample(busy=2 * 100.0 * 4, total=2 * 100.0 * 4, own=4 * 1.4, cores=2)  # 4 s, both cores busy
    assert threads.busy_between(before, after) == pytest.approx(0.6)  # we used 1.4 cores: others the other 0.6
    assert threads.busy_between(before, threads.LoadSample(1.0, 1.0, 0.0, 2)) is None  # 5 ms: too short to tell


def test_coarse_work_takes_every_core_only_with_passive_waiting(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_state", {})
    monkeypatch.setattr(threads, "_default_threads", lambda: torch.get_num_threads())
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    measured = []
    monkeypatch.setattr(threads, "configure_threads", lambda *a, **k: measured.append(1))
    try:
        monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
        threads.ensure_threads("cpu", coarse=True)
        assert torch.get_num_threads() == 2 and measured == []
        monkeypatch.setattr(threads, "_state", {})
        monkeypatch.delenv("OMP_WAIT_POLICY")
        threads.ensure_threads("cpu", coarse=True)  # spinning threads: measured like any other work
        assert measured == [1]
    finally:
        torch.set_num_threads(before)
    assert threads.passive_waiting({"GOMP_SPINCOUNT": "0"}) and not threads.passive_waiting({})
