"""The pretraining loop end to end on tiny models: export, resume after SIGKILL, crash mid-save, skipped fp16 steps,
non-finite loss, bad input."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import bytezoo
from bytezoo.cli import main as bytezoo_main
from bytezoo.training import checkpoint as ckpt
from bytezoo.pretrain import pretrain, trainer

TINY = ["--model", "mlstm-256", "--model-config", "hidden_size=16", "--model-config", "embedding_size=8",
        "--batch-size", "4", "--seq-len", "8", "--no-progress", "--log-every", "1"]
TINY_OPTIONS = dict(model="mlstm-256", model_config={"hidden_size": 16, "embedding_size": 8}, batch_size=4, seq_len=8,
                    progress=False, log_every=1)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Random reviews as JSON lines: ~20 KB, fresh every run."""
    rng = np.random.default_rng()
    words = ["good", "bad", "plot", "acting", "the", "a", "film", "é", "boring", "great"]
    lines = [json.dumps({"text": " ".join(rng.choice(words, rng.integers(3, 30)))}) for _ in range(300)]
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "held-out.jsonl").write_text("\n".join(lines[:20]) + "\n")
    return path


def exported(output: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output / "model" / "model.safetensors"))


def test_run_exports_a_loadable_model_with_logs_and_summary(corpus, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = tmp_path / "run"
    code = bytezoo_main(["pretrain", *TINY, "--data", str(corpus), "--val-data", str(corpus.with_name("held-out.jsonl")),
                         "--output", str(output),
                         "--max-steps", "12", "--lr", "1e-2", "--schedule", "cosine", "--warmup", "2", "--eval-every", "6"])
    assert code == 0
    model = AutoModelForCausalLM.from_pretrained(output / "model")
    tokenizer = AutoTokenizer.from_pretrained(output / "model")
    assert model.config.hidden_size == 16 and tokenizer("ab")["input_ids"][-2:] == [97, 98]
    summary = json.loads((output / "model" / "training_summary.json").read_text())
    assert summary["steps"] == 12 and summary["characters_seen"] == 12 * 4 * 8
    assert summary["chars_per_second"] > 0 and 0 < summary["val_bpc"] < 8
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "bpc" in r]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert train[0]["lr"] == pytest.approx(0.5e-2) and train[1]["lr"] == pytest.approx(1e-2)  # warmup, then cosine
    assert train[-1]["lr"] < train[2]["lr"]
    assert [r["step"] for r in records if "val_bpc" in r] == [6, 12]
    assert (output / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert any((output / "tensorboard").iterdir())
    with torch.no_grad():  # the exported weights are the trained ones, loaded in full
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


def test_compressors_are_measured_on_exactly_the_validation_bytes(corpus, tmp_path, capsys):
    import bz2
    import gzip
    import lzma

    import zstandard

    rng = np.random.default_rng(1)
    held_out = " ".join(rng.choice(["good", "bad", "film", "plot", "acting"], 300)).encode()[:1000]
    (tmp_path / "held-out.txt").write_bytes(held_out)
    output = tmp_path / "run"
    assert bytezoo_main(["pretrain", *TINY, "--data", str(corpus), "--val-data", str(tmp_path / "held-out.txt"),
                         "--output", str(output), "--max-steps", "2"]) == 0
    summary = json.loads((output / "model" / "training_summary.json").read_text())
    assert json.loads((output / "summary.json").read_text())["val_compression"] == summary["val_compression"]
    # What validation reads, worked out by hand: 1000 bytes, T=8 -> 4 streams (trainer.VAL_WINDOWS_PER_STREAM = 8
    # windows each at least), one round of 250-byte chunks, 31 windows of 9 bytes: each stream's first 31*8+1 bytes.
    expected = b"".join(held_out[j * 250 : j * 250 + 249] for j in range(4))
    compression = summary["val_compression"]
    assert compression["raw_bytes"] == len(expected) == 996
    assert compression["predicted_bytes"] == 4 * 248  # the first byte of each stream (chunk) has no target
    direct = {"gzip": gzip.compress(expected, 9, mtime=0), "bz2": bz2.compress(expected, 9),
              "xz": lzma.compress(expected, preset=9), "zstd": zstandard.ZstdCompressor(level=19).compress(expected)}
    for name, data in direct.items():
        entry = compression["compressors"][name]
        assert entry["compressed_bytes"] == len(data)
        assert entry["bits_per_byte"] == pytest.approx(8 * len(data) / len(expected), rel=1e-12)
    assert [compression["compressors"][name]["setting"] for name in direct] == ["-9", "-9", "-9", "-19"]
    assert "handicapped" in compression["note"]
    printed = capsys.readouterr().out
    assert "gzip -9" in printed and "zstd -19" in printed and "996 held-out bytes" in printed
    card = model_card(output / "model")  # what `bytezoo hub push` writes for the exported model: the same figures
    assert "Bits per byte on the same 996 held-out bytes" in card
    assert f"| this model (validation BPC) | {summary['val_bpc']:.4f} |  |" in card
    for name, entry in compression["compressors"].items():
        assert f"| {name} {entry['setting']} | {entry['bits_per_byte']:.4f} | {entry['compressed_bytes']:,} |" in card

    # Without validation data: no figures, and the run says so.
    assert bytezoo_main(["pretrain", *TINY, "--data", str(corpus), "--output", str(tmp_path / "no-val"), "--max-steps", "1"]) == 0
    summary = json.loads((tmp_path / "no-val" / "summary.json").read_text())
    assert summary["val_bpc"] is None and summary["val_compression"] is None
    assert "standard compressors" not in model_card(tmp_path / "no-val" / "model")


def model_card(folder: Path) -> str:
    from bytezoo.hub.card import make_model_card, read_json_documents

    names = {path.name: path.stat().st_size for path in folder.iterdir() if path.is_file()}
    return make_model_card(folder.name, names, read_json_documents(folder, names), {})


def test_bf16_and_gradient_accumulation_train(corpus, tmp_path):
    summary = pretrain(data=[str(corpus)], output=str(tmp_path / "bf16"), max_steps=3, mixed_precision="bf16",
                       grad_accum_steps=2, **TINY_OPTIONS)
    assert summary["steps"] == 3 and summary["characters_seen"] == 3 * 2 * 4 * 8
    assert np.isfinite(summary["train_bpc"])


def test_accelerates_accumulation_variable_cannot_disagree_with_grad_accum(corpus, tmp_path, monkeypatch):
    plain = pretrain(data=[str(corpus)], output=str(tmp_path / "plain"), max_steps=3, grad_accum_steps=2, **TINY_OPTIONS)
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "3")  # would skip optimizer steps if Accelerate read it
    with_variable = pretrain(data=[str(corpus)], output=str(tmp_path / "env"), max_steps=3, grad_accum_steps=2, **TINY_OPTIONS)
    assert plain["steps"] == with_variable["steps"] == 3
    ours, theirs = (load_file(tmp_path / name / "model" / "model.safetensors") for name in ("plain", "env"))
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)


def test_the_lstm_baseline_trains_too(corpus, tmp_path):
    options = {**TINY_OPTIONS, "model": "lstm-256"}
    summary = pretrain(data=[str(corpus)], output=str(tmp_path / "lstm"), max_steps=2, save_every=1, **options)
    assert summary["steps"] == 2 and np.isfinite(summary["train_bpc"])
    resumed = pretrain(data=[str(corpus)], output=str(tmp_path / "lstm"), max_steps=3, save_every=1, resume="latest", **options)
    assert resumed["resumed_from"].endswith("step-00000002") and resumed["steps"] == 3


def test_resume_after_sigkill_ends_bitwise_equal_to_an_uninterrupted_run(corpus, tmp_path):
    steps = 60
    reference = tmp_path / "reference"
    pretrain(data=[str(corpus)], output=str(reference), max_steps=steps, lr=3e-3, **TINY_OPTIONS)

    output = tmp_path / "killed"
    command = [sys.executable, "-m", "bytezoo.cli", "pretrain", *TINY, "--data", str(corpus), "--output", str(output),
               "--max-steps", str(steps), "--lr", "3e-3", "--save-every", "4"]
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ckpt.checkpoint_dirs(output) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    saved = ckpt.checkpoint_dirs(output)
    assert saved, victim.stderr.read().decode()[-2000:]
    assert not (output / "model").exists(), "the run finished before it could be killed: raise `steps`"
    killed_at = json.loads((saved[-1] / ckpt.TRAIN_STATE).read_text())["step"]
    assert 0 < killed_at < steps

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((output / "model" / "training_summary.json").read_text())
    assert summary["steps"] == steps and summary["resumed_from"].endswith(saved[-1].name)
    expected, got = exported(reference), exported(output)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    steps_logged = [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(1, steps + 1))  # the lines logged after the checkpoint were dropped, then redone


def test_a_spent_time_budget_stops_cleanly_and_resume_ends_bitwise_equal(corpus, tmp_path, monkeypatch):
    steps = 12
    reference = pretrain(data=[str(corpus)], output=str(tmp_path / "reference"), max_steps=steps, lr=3e-3, **TINY_OPTIONS)
    assert reference["stopped_by"] == "max_steps"

    calls = []

    def fake_clock():  # the deadline is set at call 1; the budget is spent from the fifth step's check (call 6) on
        calls.append(1)
        return 1000.0 + (100.0 if len(calls) > 5 else 0.0)

    output = tmp_path / "budget"
    monkeypatch.setattr(trainer.StopRequest, "clock", staticmethod(fake_clock))
    stopped = pretrain(data=[str(corpus)], output=str(output), max_steps=steps, max_time=50.0, lr=3e-3, **TINY_OPTIONS)
    monkeypatch.undo()
    assert stopped["stopped_by"] == "max_time" and stopped["steps"] == 5
    saved = ckpt.checkpoint_dirs(output)  # a stopped run leaves a checkpoint (no --save-every needed) and a model
    assert [p.name for p in saved] == [f"step-{stopped['steps']:08d}"]
    assert json.loads((output / "model" / "training_summary.json").read_text())["stopped_by"] == "max_time"
    assert bytezoo.from_pretrained(output / "model").config.hidden_size == 16

    finished = pretrain(data=[str(corpus)], output=str(output), max_steps=steps, lr=3e-3, resume="latest", **TINY_OPTIONS)
    assert finished["steps"] == steps and finished["stopped_by"] == "max_steps"
    expected, got = exported(tmp_path / "reference"), exported(output)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


@pytest.mark.slow
def test_sigterm_stops_at_the_next_step_with_a_checkpoint_and_an_export(corpus, tmp_path):
    output = tmp_path / "preempted"
    command = [sys.executable, "-m", "bytezoo.cli", "pretrain", *TINY, "--data", str(corpus), "--output", str(output),
               "--max-steps", "100000", "--lr", "3e-3"]
    victim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = output / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while victim.poll() is None and time.monotonic() < deadline and not (metrics.exists() and metrics.stat().st_size):
        time.sleep(0.01)
    victim.send_signal(signal.SIGTERM)
    out, err = victim.communicate(timeout=120)
    assert victim.returncode == 143, err[-2000:]  # 128 + SIGTERM, after the clean checkpoint and export
    summary = json.loads((output / "model" / "training_summary.json").read_text())
    assert summary["stopped_by"] == "sigterm" and 0 < summary["steps"] < 100000 and summary["exit_code"] == 143
    assert "stopped at step" in out and "--resume" in out
    assert out.strip().splitlines()[-1] == (f"stopped by SIGTERM at step {summary['steps']} of 100000, exit code 143; "
                                            f"--resume continues it")
    assert ckpt.checkpoint_dirs(output)[-1].name == f"step-{summary['steps']:08d}"


def test_a_crash_mid_save_leaves_the_previous_checkpoint_to_resume_from(corpus, tmp_path, monkeypatch):
    options = dict(data=[str(corpus)], output=str(tmp_path / "run"), max_steps=6, save_every=2, lr=3e-3, **TINY_OPTIONS)
    real_save_file, calls = ckpt.save_file, []

    def crash_on_second_save(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"half a file")
            raise OSError("disk full (simulated)")
        return real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", crash_on_second_save)
    with pytest.raises(OSError, match="simulated"):
        pretrain(**options)
    monkeypatch.setattr(ckpt, "save_file", real_save_file)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "run")] == ["step-00000002"]

    summary = pretrain(**options, resume="latest")  # the staging directory of the failed save is ignored
    assert summary["resumed_from"].endswith("step-00000002") and summary["steps"] == 6
    reference = pretrain(**{**options, "output": str(tmp_path / "reference"), "save_every": 0})
    assert reference["steps"] == 6
    expected, got = exported(tmp_path / "reference"), exported(tmp_path / "run")
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_a_skipped_fp16_step_does_not_advance_the_schedule(corpus, tmp_path, monkeypatch):
    from accelerate import Accelerator

    checks = []

    def skipped(self):  # the second optimizer step "overflows"
        checks.append(None)
        return len(checks) == 2

    monkeypatch.setattr(Accelerator, "optimizer_step_was_skipped", property(skipped))
    summary = pretrain(data=[str(corpus)], output=str(tmp_path / "run"), max_steps=5, lr=1.0, schedule="linear",
                       **TINY_OPTIONS)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([1.0, 0.8, 0.8, 0.6, 0.4])  # steps 2 and 3 both use update 1's rate
    assert summary["updates"] == 4 and summary["steps"] == 5


def test_a_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(corpus, tmp_path, monkeypatch, capsys):
    real_loss, calls = trainer.token_loss, []

    def loss_goes_nan_at_step_5(logits, targets):
        calls.append(None)
        nll, count = real_loss(logits, targets)
        return (nll * float("nan") if len(calls) == 5 else nll), count

    monkeypatch.setattr(trainer, "token_loss", loss_goes_nan_at_step_5)
    output = tmp_path / "run"
    code = bytezoo_main(["pretrain", *TINY, "--data", str(corpus), "--output", str(output), "--max-steps", "8",
                         "--save-every", "2"])
    assert code == 2
    message = capsys.readouterr().err
    assert "loss is nan at step 5" in message and "step-00000004" in message
    assert message.strip().splitlines()[-1].startswith("bytezoo pretrain: error: the loss is nan")
    assert [p.name for p in ckpt.checkpoint_dirs(output)] == ["step-00000002", "step-00000004"]
    monkeypatch.setattr(trainer, "token_loss", real_loss)
    summary = pretrain(data=[str(corpus)], output=str(output), max_steps=8, save_every=2, resume="latest", **TINY_OPTIONS)
    assert summary["resumed_from"].endswith("step-00000004") and np.isfinite(summary["train_bpc"])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--data", "{empty}"], "corpus is empty"),
        (["--data", "{corpus}", "--text-field", "review"], "has no field 'review'"),
        (["--data", "{missing}"], "no data at"),
        (["--data", "http://127.0.0.1:9/nothing.txt"], "cannot read|no data at"),
        (["--data", "{corpus}", "--batch-size", "4096"], "too small for 4096 streams"),
        (["--data", "{corpus}", "--val-data", "{empty}"], "corpus is empty: .*empty.txt hold"),
        (["--data", "{corpus}", "--val-data", "{tiny}"], "holds no 9-byte window"),
        (["--data", "{corpus}", "--model", "no-such-model"], "neither a zoo preset"),
        (["--data", "{corpus}", "--lr", "-1"], "lr must be > 0"),
    ],
)
def test_bad_input_fails_before_training_with_a_clear_error(corpus, tmp_path, capsys, arguments, message):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "tiny.txt").write_bytes(b"four")
    paths = {"corpus": corpus, "empty": tmp_path / "empty.txt", "missing": tmp_path / "missing.txt",
             "tiny": tmp_path / "tiny.txt"}
    arguments = [a.format(**paths) for a in arguments]
    options = TINY[:]
    if "--batch-size" in arguments:
        options[options.index("--batch-size") : options.index("--batch-size") + 2] = []
    code = bytezoo_main(["pretrain", *options, *arguments, "--output", str(tmp_path / "out"), "--max-steps", "2"])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("bytezoo pretrain: error:") and len(error.splitlines()) == 1, error
    assert re.search(message, error), error
    assert not (tmp_path / "out" / "model").exists()


@pytest.mark.parametrize("text, seconds", [("3600", 3600.0), ("90s", 90.0), ("45m", 2700.0), ("4h", 14400.0), ("1.5d", 129600.0)])
def test_max_time_durations(text, seconds):
    from bytezoo.pretrain.cli import _duration

    assert _duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "-5m", "soon", "4x", ""])
def test_bad_max_time_is_refused_by_name(text, capsys):
    with pytest.raises(SystemExit) as exited:
        bytezoo_main(["pretrain", *TINY, "--data", "x.txt", "--output", "out", "--max-time", text])
    error = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "--max-time" in error and len(error.splitlines()) == 1
    with pytest.raises(ValueError, match="max_time must be > 0 seconds"):
        trainer.PretrainConfig(data=["x.txt"], output="out", max_time=0).resolved()


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        bytezoo_main(["pretrain", "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--data", "--val-data", "--output", "--batch-size", "--seq-len", "--max-steps", "--epochs",
                   "--lr", "--schedule", "--warmup", "--mixed-precision", "--save-every", "--eval-every", "--resume",
                   "--seed", "--text-field", "--recipe", "--lr-cap", "torchrun", "model/"):
        assert option in text, option
    assert bytezoo.__version__
