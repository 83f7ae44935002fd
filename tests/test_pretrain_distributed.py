"""Data parallel on CPU over gloo: 2 processes x batch B/2 end where 1 process x batch B ends, and an uneven end of
data (a corpus that does not divide into the streams) neither hangs a process nor desynchronises the two."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bytezoo.cli import main as bytezoo_main

from launchers import ACCELERATE, TORCHRUN, free_port, run_process_group


@pytest.mark.slow
def test_two_processes_with_half_the_batch_match_one_process_and_finish_an_uneven_epoch(tmp_path):
    rng = np.random.default_rng()
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(rng.integers(97, 123, 4_001, dtype=np.uint8).tobytes())  # 4001 bytes: a ragged tail
    held_out = tmp_path / "held-out.txt"
    held_out.write_bytes(rng.integers(97, 123, 601, dtype=np.uint8).tobytes())
    model_args = ["--model", "mlstm-256", "--model-config", "hidden_size=16", "--model-config", "embedding_size=8"]
    common = ["--data", str(corpus), "--val-data", str(held_out), "--seq-len", "8", "--epochs", "1", "--lr", "1e-2",
              "--shard-bytes", "150", "--no-progress", "--seed", "7"]

    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    # The reference runs in a process of its own too, under the same settings: in this (test) process, earlier tests
    # may have changed the thread count or the kernel engine, whose different rounding Adam amplifies past tolerance.
    single = run_process_group([sys.executable, "-m", "bytezoo.cli", "pretrain", *model_args, *common, "--batch-size", "6",
                                "--output", str(tmp_path / "one")], env, timeout=150)
    assert single.returncode == 0, single.stderr[-3000:]
    reference = json.loads((tmp_path / "one" / "summary.json").read_text())
    # ~1 start in 11 aborts in gloo's set-up on this machine, and rarely (under a parallel test run) one hangs there:
    # retry once on a fresh port. A real deadlock in the loop would hang both attempts.
    for attempt in range(2):
        command = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                   "-m", "bytezoo.cli", "pretrain", *model_args, *common, "--batch-size", "3", "--output", str(tmp_path / "two"),
                   *(["--overwrite"] if attempt else [])]  # a retry replaces what the failed start wrote
        result = run_process_group(command, env, timeout=90)
        if result.returncode == 0:
            break
    assert result.returncode == 0, str(result.stderr)[-3000:]

    summary = json.loads((tmp_path / "two" / "model" / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_batch_size"] == 6
    assert summary["steps"] == reference["steps"] > 0 and summary["characters_seen"] == reference["characters_seen"]
    one, two = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("one", "two"))
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    assert summary["val_bpc"] == pytest.approx(reference["val_bpc"], rel=1e-4)
    # The compressors read the same held-out bytes (6 validation streams either way), counted once, by the main process.
    sizes = lambda run: {name: entry["compressed_bytes"] for name, entry in run["val_compression"]["compressors"].items()}  # noqa: E731
    assert sizes(summary) == sizes(reference) and len(sizes(summary)) == 4
    for key in ("raw_bytes", "predicted_bytes"):
        assert summary["val_compression"][key] == reference["val_compression"][key] > 0




def launch_two(launcher: str, arguments: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs ``bytezoo pretrain ARGUMENTS`` as 2 CPU processes through ``launcher``, retrying a start that aborts or
    hangs in gloo's set-up once (seen about 1 start in 11 here)."""
    inherited = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}  # each test says what it sets
    env = {**inherited, "OMP_NUM_THREADS": "1", **(env or {})}
    for attempt in range(2):
        port = str(free_port())
        if launcher == "torchrun":
            prefix = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port]
        else:
            prefix = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", port]
        # A retry starts the run again: it replaces what the failed start wrote (a resume just resumes again).
        retry = ["--overwrite"] if attempt and "--resume" not in arguments else []
        command = [*prefix, "-m", "bytezoo.cli", "pretrain", *arguments, *retry]
        result = run_process_group(command, env, timeout=90)
        if result.returncode == 0 or "bytezoo pretrain: error" in result.stderr:
            return result
    return result


TINY_TWO = ["--model", "mlstm-256", "--model-config", "hidden_size=16", "--model-config", "embedding_size=8",
            "--seq-len", "8", "--batch-size", "3", "--lr", "1e-2", "--no-progress", "--seed", "7", "--shard-bytes", "150"]


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(np.random.default_rng().integers(97, 123, 3_000, dtype=np.uint8).tobytes())
    return corpus


@pytest.mark.slow
def test_a_two_process_run_stopped_and_resumed_ends_bitwise_equal_to_an_uninterrupted_one(small_corpus, tmp_path):
    common = [*TINY_TWO, "--data", str(small_corpus), "--max-steps", "8", "--log-every", "2"]
    cpu = {"ACCELERATE_USE_CPU": "1"}
    whole = launch_two("torchrun", [*common, "--output", str(tmp_path / "whole")], cpu)
    assert whole.returncode == 0, whole.stderr[-3000:]
    # a budget spent at once: both processes agree to stop at the first pooled check (step 2)
    stopped = launch_two("torchrun", [*common, "--output", str(tmp_path / "resumed"), "--max-time", "0.001"], cpu)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["stopped_by"] == "max_time" and summary["steps"] == 2 and summary["num_processes"] == 2
    resumed = launch_two("torchrun", [*common, "--output", str(tmp_path / "resumed"), "--resume"], cpu)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["resumed_from"].endswith("step-00000002")
    one, two = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("whole", "resumed"))
    for name in one:
        assert torch.equal(one[name], two[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("launcher, env", [("torchrun", {}), ("accelerate", {}), ("accelerate", {"ACCELERATE_USE_CPU": "1"})],
                         ids=["torchrun", "accelerate-launch", "accelerate-launch-use-cpu"])
def test_every_launcher_runs_one_two_process_run(small_corpus, tmp_path, launcher, env):
    """Without ACCELERATE_USE_CPU on a machine without GPUs, the processes still form one group (over gloo)
    instead of training alone into one folder; one summary line is printed, by the main process."""
    result = launch_two(launcher, [*TINY_TWO, "--data", str(small_corpus), "--max-steps", "3",
                                   "--output", str(tmp_path / "run")], env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_batch_size"] == 6
    assert result.stdout.count("3 steps,") == 1
    assert len(list((tmp_path / "run" / "tensorboard").iterdir())) == 1  # one writer, not one per process
    assert [p.name for p in (tmp_path / "run" / "model").glob("*.safetensors")] == ["model.safetensors"]


def test_a_process_that_would_train_alone_under_a_launcher_stops_with_one_line(tmp_path, capsys, monkeypatch):
    """WORLD_SIZE says 2, but Accelerate was told not to use the CPU group: stop before training, saying what to set."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text " * 200)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "0")
    code = bytezoo_main(["pretrain", *TINY_TWO, "--data", str(corpus), "--max-steps", "1", "--output", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "started 2 processes (WORLD_SIZE=2) but this one would train alone" in error and "ACCELERATE_USE_CPU=1" in error
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_processes_train_the_same_from_a_packed_corpus_as_from_the_raw_files(tmp_path):
    rng = np.random.default_rng()
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(rng.integers(97, 123, 1_700, dtype=np.uint8).tobytes())
    packed = tmp_path / "packed"
    assert bytezoo_main(["data", "pack", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--output", str(packed),
                         "--no-progress"]) == 0
    common = [*TINY_TWO, "--max-steps", "6", "--log-every", "2"]
    cpu = {"ACCELERATE_USE_CPU": "1"}
    raw = launch_two("torchrun", [*common, "--data", str(tmp_path / "a.txt"), "--data", str(tmp_path / "b.txt"),
                                  "--output", str(tmp_path / "from-raw")], cpu)
    assert raw.returncode == 0, raw.stderr[-3000:]
    from_packed = launch_two("torchrun", [*common, "--data", str(packed), "--output", str(tmp_path / "from-packed")], cpu)
    assert from_packed.returncode == 0, from_packed.stderr[-3000:]
    assert not (tmp_path / "from-packed" / "corpus").exists()  # a packed corpus is read where it is
    one, two = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("from-raw", "from-packed"))
    for name in one:
        assert torch.equal(one[name], two[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_a_run_resumes_on_another_number_of_processes_at_the_same_global_batch(small_corpus, tmp_path, before, after):
    """Streams are global: 2 processes x 3 streams stopped and resumed as 1 x 6 (and the reverse) end where an
    uninterrupted run ends, within fp32 reduction-order tolerance (the gradient is summed in another order)."""
    model = [arg for arg in TINY_TWO if arg not in ("--batch-size", "3")]
    common = [*model, "--data", str(small_corpus), "--max-steps", "8", "--log-every", "2", "--save-every", "4"]
    cpu = {"ACCELERATE_USE_CPU": "1"}

    def run(processes: int, *arguments: str) -> subprocess.CompletedProcess:
        batch = ["--batch-size", str(6 // processes)]
        if processes == 2:
            return launch_two("torchrun", [*common, *batch, *arguments], cpu)
        return run_process_group([sys.executable, "-m", "bytezoo", "pretrain", *common, *batch, *arguments],
                                 {**os.environ, **cpu, "OMP_NUM_THREADS": "1"}, timeout=90)

    whole = run(before, "--output", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = run(before, "--output", str(tmp_path / "moved"), "--max-time", "0.001")  # a budget spent at once
    assert first.returncode == 0, first.stderr[-3000:]
    stopped_at = json.loads((tmp_path / "moved" / "summary.json").read_text())["steps"]
    assert 0 < stopped_at < 8
    second = run(after, "--output", str(tmp_path / "moved"), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((tmp_path / "moved" / "summary.json").read_text())
    assert summary["num_processes"] == after and summary["global_batch_size"] == 6 and summary["steps"] == 8
    assert summary["resumed_from"].endswith(f"step-{stopped_at:08d}")
    one, two = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("whole", "moved"))
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
