"""benchmarks/gpu_check.py, the GPU check prepared for a lent GPU, runs its whole plan here with --smoke: Triton's CPU
interpreter, tiny shapes, fp16 autocast with torch.amp.GradScaler("cpu"), so the script is tested before a GPU sees it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_smoke_runs_every_stage_and_passes(tmp_path):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPT.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)], capture_output=True,
                            text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check-smoke.json").read_text())
    assert report["smoke"] and report["passed"] and "Triton interpreter" in report["device"]
    assert list(report["stages"]) == ["kernel", "throughput", "fp16", "ddp"]
    kernel = report["stages"]["kernel"]["dtypes"]
    assert sorted(kernel) == ["bfloat16", "float16", "float32"]
    assert all(set(rows) >= {"hs", "c_T", "d_w_h", "d_gates_x"} for rows in kernel.values())  # outputs and gradients
    throughput = report["stages"]["throughput"]["dtypes"]["fp32"]
    assert set(throughput["contenders"]) == {"triton", "lstm"} and "train_vs_lstm_flop_normalised" in throughput["ratios"]
    loop = report["stages"]["fp16"]["scaler_loop"]
    assert loop["skipped_steps"] == [2, 3] and loop["updates"] == loop["steps"] - 2  # the planted overflows, skipped
    assert loop["lr_stood_still_on_skipped_steps"] and loop["lr_is_schedule_of_updates"]
    pretrain = report["stages"]["fp16"]["pretrain"]
    assert pretrain["exit_code"] == 0 and pretrain["lr_is_schedule_of_updates"]
    assert "needs 2" in report["stages"]["ddp"]["skipped"]
    assert result.stdout.strip().splitlines()[-1].startswith("PASSED")
