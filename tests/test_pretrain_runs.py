"""Runs that cannot corrupt each other: a run's identity in its output folder, --overwrite and --resume checks,
checkpoint rotation that only touches its own run, Ctrl-C as a clean stop, config typos refused by name, and the
precision that actually ran in the summary."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bytezoo.cli import main as bytezoo_main
from bytezoo.training import checkpoint as ckpt
from bytezoo.pretrain import pretrain, trainer

TINY = ["--model", "mlstm-256", "--model-config", "hidden_size=16", "--model-config", "embedding_size=8",
        "--batch-size", "4", "--seq-len", "8", "--no-progress", "--log-every", "1"]


@pytest.fixture
def corpus(tmp_path) -> Path:
    rng = np.random.default_rng()
    words = ["good", "bad", "plot", "acting", "the", "a", "film", "é", "boring", "great"]
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(" ".join(rng.choice(words, rng.integers(3, 30))) for _ in range(300)) + "\n")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what "nothing was deleted or mixed" compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def pretrain_cli(*arguments: str) -> int:
    return bytezoo_main(["pretrain", *TINY, *arguments])


def test_a_second_run_in_a_used_folder_is_refused_naming_the_differences(corpus, tmp_path, capsys):
    output = tmp_path / "run"
    assert pretrain_cli("--data", str(corpus), "--output", str(output), "--max-steps", "4", "--save-every", "2") == 0
    before = snapshot(output)
    capsys.readouterr()
    code = pretrain_cli("--data", str(corpus), "--output", str(output), "--max-steps", "4", "--save-every", "2",
                        "--model-config", "hidden_size=32", "--seed", "3")
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("bytezoo pretrain: error:")
    assert "holds another run" in error and "--overwrite" in error and "--resume" in error
    assert "seed: 0 then, 3 now" in error and "'hidden_size': 32" in error
    assert snapshot(output) == before  # nothing deleted, nothing appended

    # the very same command again is refused too: it would replace the run's checkpoints and metrics
    assert pretrain_cli("--data", str(corpus), "--output", str(output), "--max-steps", "4", "--save-every", "2") == 2
    assert "with the same settings" in capsys.readouterr().err
    assert snapshot(output) == before


def test_overwrite_replaces_only_what_bytezoo_wrote(corpus, tmp_path):
    output = tmp_path / "run"
    pretrain(data=[str(corpus)], output=str(output), max_steps=4, save_every=2, model_config={"hidden_size": 16},
             batch_size=4, seq_len=8, progress=False)
    (output / "notes.md").write_text("my notes")  # the user's own file
    first_id = json.loads((output / "run.json").read_text())["run_id"]
    summary = pretrain(data=[str(corpus)], output=str(output), max_steps=2, save_every=1, keep_checkpoints=5,
                       model_config={"hidden_size": 8}, batch_size=4, seq_len=8, progress=False, overwrite=True)
    assert (output / "notes.md").read_text() == "my notes"
    assert summary["run_id"] != first_id
    assert [p.name for p in ckpt.checkpoint_dirs(output)] == ["step-00000001", "step-00000002"]  # none of the old run's
    steps = [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and max(steps) == 2  # the old run's lines are gone, not interleaved


def test_resume_names_every_setting_that_changed_and_allows_the_safe_ones(corpus, tmp_path, capsys):
    output = tmp_path / "run"
    common = ["--data", str(corpus), "--output", str(output), "--save-every", "2"]
    assert pretrain_cli(*common, "--max-steps", "4") == 0
    before = snapshot(output)
    capsys.readouterr()
    assert pretrain_cli(*common, "--max-steps", "6", "--resume", "--lr", "0.01", "--batch-size", "2") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "cannot resume the run in" in error
    assert "batch_size: 4 then, 2 now" in error and "lr: 0.0005 then, 0.01 now" in error
    assert snapshot(output) == before
    # longer, with other intervals: allowed
    assert pretrain_cli(*common, "--max-steps", "6", "--resume", "--log-every", "3", "--eval-every", "5") == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["resumed_from"].endswith("step-00000004")


def test_resume_and_overwrite_together_are_refused(corpus, tmp_path, capsys):
    assert pretrain_cli("--data", str(corpus), "--output", str(tmp_path / "x"), "--max-steps", "1", "--resume",
                        "--overwrite") == 2
    assert "choose one" in capsys.readouterr().err


def test_a_folder_from_before_run_identities_is_refused_unless_resumed_or_overwritten(corpus, tmp_path, capsys):
    output = tmp_path / "run"
    assert pretrain_cli("--data", str(corpus), "--output", str(output), "--max-steps", "2", "--save-every", "1") == 0
    (output / "run.json").unlink()  # as an older bytezoo left it
    before = snapshot(output)
    assert pretrain_cli("--data", str(corpus), "--output", str(output), "--max-steps", "2") == 2
    assert "output of an earlier bytezoo run (checkpoints, model, metrics.jsonl" in capsys.readouterr().err
    assert snapshot(output) == before
    assert pretrain_cli("--data", str(corpus), "--output", str(output), "--max-steps", "3", "--save-every", "1",
                        "--resume") == 0
    assert json.loads((output / "summary.json").read_text())["resumed_from"].endswith("step-00000002")


def test_checkpoint_rotation_never_removes_another_runs_checkpoint(corpus, tmp_path):
    output = tmp_path / "run"
    options = dict(data=[str(corpus)], output=str(output), model_config={"hidden_size": 16}, batch_size=4, seq_len=8,
                   progress=False, save_every=1, keep_checkpoints=1)
    pretrain(max_steps=2, **options)
    foreign = output / "checkpoints" / "step-00000001"  # a checkpoint of another run, copied in by hand
    shutil.copytree(output / "checkpoints" / "step-00000002", foreign)
    state = json.loads((foreign / ckpt.TRAIN_STATE).read_text())
    (foreign / ckpt.TRAIN_STATE).write_text(json.dumps({**state, "run_id": "another-run", "step": 1}))
    pretrain(max_steps=4, resume="latest", **options)
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step-00000001", "step-00000004"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("hidden_sise=64", "unknown key 'hidden_sise' for MLSTMConfig; did you mean 'hidden_size'? valid keys: vocab_size"),
        ("hidden_size=abc", "'hidden_size' of MLSTMConfig expects int; got 'abc' (str)"),
        ("weight_norm=1", "'weight_norm' of MLSTMConfig expects bool; got 1 (int)"),
    ],
)
def test_model_config_typos_and_types_are_refused_by_name(corpus, tmp_path, capsys, override, message):
    code = bytezoo_main(["pretrain", "--model", "mlstm-256", "--model-config", override, "--data", str(corpus),
                         "--output", str(tmp_path / "out"), "--max-steps", "2", "--no-progress"])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error and "--model-config of mlstm-256" in error
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_the_summary_records_the_precision_that_ran(corpus, tmp_path):
    with pytest.warns(UserWarning, match="fp16 on CPU"):
        summary = pretrain(data=[str(corpus)], output=str(tmp_path / "run"), max_steps=1, mixed_precision="fp16",
                           model_config={"hidden_size": 8}, batch_size=2, seq_len=8, progress=False)
    assert summary["mixed_precision"] == "no" and summary["mixed_precision_requested"] == "fp16"


def test_the_first_ctrl_c_asks_for_a_stop_and_the_second_aborts():
    # A shell starts background jobs with SIGINT ignored, and StopRequest rightly leaves that alone: give this test
    # process the foreground default it would have at a terminal (restored afterwards).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _first_ctrl_c_stops_and_second_aborts()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_sigint_ignored_at_start_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with trainer.StopRequest(None) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert not stop.interrupted and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def _first_ctrl_c_stops_and_second_aborts():
    with trainer.StopRequest(None) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5.0
        # Python runs the handler in the main thread at its next check for pending calls (a call or a loop jump): if
        # the kernel delivered the signal to another thread (torch's, OpenMP's), that is not during the sleep, so poll.
        while not stop.interrupted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.interrupted and not stop.signalled
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(500):  # raised at the first check for pending calls in this loop
                time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


@pytest.mark.slow
def test_ctrl_c_stops_at_the_next_step_with_a_checkpoint_and_an_export(corpus, tmp_path):
    output = tmp_path / "interrupted"
    command = [sys.executable, "-m", "bytezoo", "pretrain", *TINY, "--data", str(corpus), "--output", str(output),
               "--max-steps", "100000", "--lr", "3e-3"]
    # A shell's background job starts with SIGINT ignored; a terminal's Ctrl-C reaches a foreground process, whose
    # SIGINT has its default handler: give the child that.
    victim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = output / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while victim.poll() is None and time.monotonic() < deadline and not (metrics.exists() and metrics.stat().st_size):
        time.sleep(0.01)
    victim.send_signal(signal.SIGINT)
    out, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, err[-2000:]  # as a shell reports a command Ctrl-C stopped: `&&` goes no further
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    summary = json.loads((output / "model" / "training_summary.json").read_text())
    assert summary["stopped_by"] == "interrupt" and 0 < summary["steps"] < 100000 and summary["exit_code"] == 130
    assert "Ctrl-C" in out and "--resume" in out
    assert out.strip().splitlines()[-1] == (f"stopped by Ctrl-C at step {summary['steps']} of 100000, exit code 130; "
                                            f"--resume continues it")
    assert ckpt.checkpoint_dirs(output)[-1].name == f"step-{summary['steps']:08d}"
