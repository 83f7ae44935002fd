"""Runs that reproduce on a shared machine and say what happened (issue 28), for both objectives: the CPU thread
count kept as part of a run, the training data's identity checked on resume, a damaged newest checkpoint passed over,
a full disk as one line, and lines that say how a run resumed and how it ended."""
from __future__ import annotations

import contextlib
import errno
import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bytezoo import threads
from bytezoo.cli import main as bytezoo_main
from bytezoo.training import checkpoint as ckpt
from bytezoo.training.stop import StopRequest

from test_pretrain_runs import TINY, corpus, snapshot  # noqa: F401  (corpus: a fixture, random reviews as text)


@pytest.fixture
def fresh_process(monkeypatch):
    """This process's thread policy as a new process has it, the thread lines shown; torch's count restored after."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_state", {})
    monkeypatch.setenv(threads.ENV_VAR, "0")  # recorded, so that what the CLI sets is undone after the test
    monkeypatch.delenv("BYTEZOO_QUIET_THREADS", raising=False)
    yield monkeypatch
    torch.set_num_threads(before)


@contextlib.contextmanager
def busy_core():
    """Another process keeping one core busy."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def out_of_time_after(steps: int, monkeypatch, command: list[str]) -> int:
    """Runs ``command`` with its --max-time spent from the ``steps``-th step's check on."""
    calls = []

    def fake_clock():  # the deadline is set at call 1, then one call per step
        calls.append(1)
        return 1000.0 + (100.0 if len(calls) > steps else 0.0)

    monkeypatch.setattr(StopRequest, "clock", staticmethod(fake_clock))
    try:
        return bytezoo_main(command)
    finally:
        monkeypatch.setattr(StopRequest, "clock", staticmethod(time.monotonic))


def exported(output: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output / "model" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    expected, got = exported(a), exported(b)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def one_error(capsys, command: str) -> str:
    error = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in error if line.startswith(f"bytezoo {command}: error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in error), error
    return errors[0]


# --- the thread count is part of a run ---------------------------------------------------------------------------------
def test_a_run_started_on_two_threads_resumes_on_two_beside_a_busy_core_and_ends_bitwise_equal(
        corpus, tmp_path, capsys, fresh_process):
    monkeypatch = fresh_process  # even this small model sums in another order on one and on two threads
    common = [*TINY, "--data", str(corpus), "--max-steps", "4", "--lr", "3e-3"]
    assert bytezoo_main(["--threads", "2", "pretrain", *common, "--output", str(tmp_path / "whole")]) == 0
    start = [line for line in capsys.readouterr().err.splitlines() if "CPU thread" in line]
    assert len(start) == 1 and "(--threads 2)" in start[0] and threads.ENV_VAR not in start[0], start

    monkeypatch.setattr(threads, "_state", {})  # a new process
    output = tmp_path / "stopped"
    assert out_of_time_after(2, monkeypatch, ["--threads", "2", "pretrain", *common, "--output", str(output),
                                              "--max-time", "50"]) == 0  # the time limit asked for: exit 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "stopped by --max-time spent (as asked) at step 2 of 4, exit code 0; --resume continues it"

    monkeypatch.setattr(threads, "_state", {})  # a new process, told no count: on its own the load would choose
    monkeypatch.delenv(threads.ENV_VAR)
    with busy_core():
        assert bytezoo_main(["pretrain", *common, "--output", str(output), "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from step 2 of 4 (checkpoint {output / 'checkpoints' / 'step-00000002'}); 2 CPU thread(s) as the " \
           f"run started (--threads 2)" in out
    assert out.strip().splitlines()[-1] == "finished: 4 of 4 steps"
    summary = json.loads((output / "summary.json").read_text())
    assert summary["threads"]["count"] == 2 and summary["bit_reproducible"] and summary["exit_code"] == 0
    assert_same_weights(tmp_path / "whole", output)


def test_resume_names_another_thread_count_and_adapting_is_an_opt_in_that_the_summary_records(
        corpus, tmp_path, capsys, fresh_process):
    monkeypatch = fresh_process
    output = tmp_path / "run"
    common = [*TINY, "--data", str(corpus), "--output", str(output), "--save-every", "3"]
    assert bytezoo_main(["--threads", "1", "pretrain", *common, "--max-steps", "3"]) == 0
    assert json.loads((output / "run.json").read_text())["threads"]["count"] == 1
    capsys.readouterr()
    monkeypatch.setattr(threads, "_state", {})
    assert bytezoo_main(["--threads", "2", "pretrain", *common, "--max-steps", "6", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "2 CPU thread(s) (--threads 2), not the run's 1: the sums change" in out
    assert "not bit-reproducible: the thread count changed from 1 to 2 at step 3 (--threads 2)" in out
    summary = json.loads((output / "summary.json").read_text())
    assert not summary["bit_reproducible"] and summary["threads"]["changes"][0]["to"] == 2

    assert bytezoo_main(["--threads", "1", "pretrain", *common, "--max-steps", "1", "--adapt-threads",
                         "--output", str(tmp_path / "both")]) == 2
    assert "--adapt-threads lets the load choose the thread count and --threads fixes it" in one_error(capsys, "pretrain")
    monkeypatch.setattr(threads, "_state", {})
    monkeypatch.delenv(threads.ENV_VAR)
    assert bytezoo_main(["pretrain", *TINY, "--data", str(corpus), "--output", str(tmp_path / "adapting"),
                         "--max-steps", "2", "--adapt-threads"]) == 0
    summary = json.loads((tmp_path / "adapting" / "summary.json").read_text())
    assert summary["threads"]["adaptive"] and not summary["bit_reproducible"]
    assert "followed the load (--adapt-threads" in summary["not_bit_reproducible_because"]


def test_fine_tuning_keeps_its_thread_count_on_resume(finetune_task, tmp_path, capsys, fresh_process):
    from finetune_task import common

    monkeypatch = fresh_process
    output = tmp_path / "run"
    command = common(finetune_task, output, "--max-steps", "6", "--patience", "0")
    assert out_of_time_after(3, monkeypatch, ["--threads", "1", *command, "--max-time", "50"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("stopped by --max-time spent (as asked) at step 3")
    monkeypatch.setattr(threads, "_state", {})
    monkeypatch.delenv(threads.ENV_VAR)
    assert bytezoo_main([*command, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from step 3 of 6 (checkpoint " in out and "1 CPU thread(s) as the run started (--threads 1)" in out
    summary = json.loads((output / "summary.json").read_text())
    assert summary["threads"]["count"] == 1 and summary["bit_reproducible"]


# --- the data a run trains on is part of it ----------------------------------------------------------------------------
def test_resume_on_changed_training_bytes_is_refused_in_one_line_naming_the_file(corpus, tmp_path, capsys):
    output = tmp_path / "run"
    command = ["pretrain", *TINY, "--data", str(corpus), "--output", str(output), "--save-every", "2"]
    assert bytezoo_main([*command, "--max-steps", "4"]) == 0
    original = corpus.read_bytes()
    assert b"good" in original
    packed = snapshot(output / "corpus")
    capsys.readouterr()

    corpus.write_bytes(original.replace(b"good", b"goad", 1))  # edited in place: the same size
    assert bytezoo_main([*command, "--max-steps", "6", "--resume"]) == 2
    error = one_error(capsys, "pretrain")
    assert f"{corpus} changed since the run started (the same {len(original):,} bytes with other content" in error
    assert "--overwrite" in error and "--output" in error and "{" not in error
    assert snapshot(output / "corpus") == packed  # the run's packed corpus as it was

    corpus.write_bytes(original[: len(original) // 2])  # shrunk
    assert bytezoo_main([*command, "--max-steps", "6", "--resume"]) == 2
    error = one_error(capsys, "pretrain")
    assert f"{corpus} changed since the run started ({len(original):,} bytes then, {len(original) // 2:,} now)" in error

    corpus.write_bytes(original)  # put back: the run continues
    assert bytezoo_main([*command, "--max-steps", "6", "--resume"]) == 0


def test_fine_tuning_resume_on_changed_training_data_is_refused_naming_the_file(finetune_task, tmp_path, capsys):
    from finetune_task import common

    output = tmp_path / "run"
    assert bytezoo_main(common(finetune_task, output, "--max-steps", "2", "--save-every", "1")) == 0
    train = finetune_task["train"]
    text = train.read_text()
    train.write_text(text.replace("neg,", "pos,", 1))  # one label flipped
    capsys.readouterr()
    assert bytezoo_main(common(finetune_task, output, "--max-steps", "4", "--resume")) == 2
    error = one_error(capsys, "finetune")
    assert f"{train} changed since the run started (the same 96 rows with other content" in error
    assert "--overwrite" in error and "{" not in error


# --- damaged checkpoints, a full disk ---------------------------------------------------------------------------------
def test_a_damaged_newest_checkpoint_is_passed_over_and_the_run_still_ends_bitwise_equal(corpus, tmp_path, capsys,
                                                                                          monkeypatch):
    common = ["pretrain", *TINY, "--data", str(corpus), "--max-steps", "8", "--lr", "3e-3"]
    assert bytezoo_main([*common, "--output", str(tmp_path / "whole")]) == 0
    output = tmp_path / "damaged"
    assert out_of_time_after(6, monkeypatch, [*common, "--output", str(output), "--save-every", "2",
                                              "--max-time", "50"]) == 0
    newest = ckpt.checkpoint_dirs(output)[-1]
    assert newest.name == "step-00000006"
    weights = bytearray((newest / "model.safetensors").read_bytes())
    weights[len(weights) // 2] ^= 0xFF  # one flipped byte inside a tensor: it would load without complaint
    (newest / "model.safetensors").write_bytes(bytes(weights))
    capsys.readouterr()
    assert bytezoo_main([*common, "--output", str(output), "--save-every", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint step-00000006 is damaged (model.safetensors does not match its sha256" in out
    assert "resuming from step-00000004, the newest sound one, instead" in out and "resumed from step 4 of 8" in out
    assert_same_weights(tmp_path / "whole", output)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_previous_checkpoint_still_resumes(corpus, tmp_path,
                                                                                                capsys, monkeypatch):
    output = tmp_path / "run"
    command = ["pretrain", *TINY, "--data", str(corpus), "--output", str(output), "--max-steps", "6", "--save-every", "2"]
    real_save_file, saves = ckpt.save_file, []

    def disk_full_at_the_second_checkpoint(tensors, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", disk_full_at_the_second_checkpoint)
    assert bytezoo_main(command) == 2
    error = one_error(capsys, "pretrain")
    assert "no room to write checkpoint step-00000004" in error and "No space left on device" in error
    assert "step-00000002 is intact" in error and "--resume" in error
    assert [p.name for p in (output / "checkpoints").iterdir()] == ["step-00000002"]  # no half-written staging left
    monkeypatch.setattr(ckpt, "save_file", real_save_file)
    assert bytezoo_main([*command, "--resume"]) == 0
    assert "resumed from step 2 of 6" in capsys.readouterr().out


def test_packing_under_a_file_size_limit_is_one_line(corpus, tmp_path):
    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    result = subprocess.run([sys.executable, "-m", "bytezoo", "data", "pack", str(corpus), "--output",
                             str(tmp_path / "packed")], capture_output=True, text=True, preexec_fn=small_files,
                            timeout=120)
    errors = [line.split("bytezoo data pack: ", 1)[-1] for line in result.stderr.splitlines() if ": error: " in line]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith("error: no room to write the packed corpus")
    assert "file-size limit" in errors[0] or "File too large" in errors[0]
    assert not (tmp_path / "packed" / "index.json").exists()  # no index: no corpus


@pytest.mark.slow
def test_the_fault_campaign_runs_and_counts_nothing_outside_bitwise_and_refused(tmp_path):
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_faults.py"
    result = subprocess.run([sys.executable, str(bench), "--kills", "1", "--finetune-kills", "0", "--no-extras",
                             "--steps", "10", "--only", "checkpoint:2:before_mark", "--work", str(tmp_path / "work"),
                             "--output", str(tmp_path / "faults.json")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "faults.json").read_text())
    assert results["table"] == {"pretrain: kill": {"bitwise": 1, "refused cleanly": 0, "other": 0}}
    assert results["trials"][0]["reached"]  # the kill landed inside the checkpoint write
    assert all(row["other"] == 0 for row in results["table"].values())
    assert "| **all** |" in (tmp_path / "faults.md").read_text()


def test_signal_exit_codes():
    from bytezoo.training.stop import exit_code, how_it_ended

    assert exit_code("interrupt") == 128 + signal.SIGINT == 130 and exit_code("sigterm") == 143
    assert exit_code("max_time") == exit_code("max_steps") == exit_code("early_stopping") == 0
    assert how_it_ended("sigterm", 5, 9) == "stopped by SIGTERM at step 5 of 9, exit code 143; --resume continues it"
