"""Data parallel on CPU over gloo: 2 processes x batch B/2 end where 1 process x batch B ends, and an uneven end of
data (a corpus that does not divide into the streams) neither hangs a process nor desynchronises the two."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bytezoo.pretrain import pretrain

TORCHRUN = Path(sys.executable).with_name("torchrun")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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

    reference = pretrain(data=[str(corpus)], val_data=[str(held_out)], output=str(tmp_path / "one"), model="mlstm-256",
                         model_config={"hidden_size": 16, "embedding_size": 8}, batch_size=6, seq_len=8, epochs=1,
                         lr=1e-2, shard_bytes=150, progress=False, seed=7)

    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    # ~1 start in 11 aborts in gloo's set-up on this machine, and rarely (under a parallel test run) one hangs there:
    # retry once on a fresh port. A real deadlock in the loop would hang both attempts.
    for attempt in range(2):
        command = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                   "-m", "bytezoo.cli", "pretrain", *model_args, *common, "--batch-size", "3", "--output", str(tmp_path / "two")]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env)
        except subprocess.TimeoutExpired as timeout:
            result = subprocess.CompletedProcess(command, -1, timeout.stdout or "", f"timed out: {timeout.stderr or ''}")
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
