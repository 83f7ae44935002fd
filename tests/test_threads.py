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
    busy = threads.busy_cpus(reader=lambda cpus: next(samples), sleep=lambda s: None)
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


def test_passive_wait_only_before_torch():
    env = {}
    assert threads.passive_wait_before_torch(env) is False  # torch is imported in this test process
    code = ("import os, sys; from bytezoo.threads import passive_wait_before_torch as p; "
            "e = {}; print(p(e), e.get('OMP_WAIT_POLICY'), p({'OMP_WAIT_POLICY': 'ACTIVE'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "PASSIVE", "False"]


def test_cli_threads_option_sets_the_environment():
    code = ("import os; from bytezoo.cli import main; "
            "rc = main(['--threads', '1', 'models']); print('ENV', os.environ.get('BYTEZOO_NUM_THREADS'), "
            "os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", threads.ENV_VAR)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "ENV 1 PASSIVE" in out


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
