"""The README's Python blocks run as written.

Each ```python block of README.md runs in a fresh interpreter, in a folder where a tiny stand-in of the main job's
output (``outputs/demo/...``: a 16-unit mLSTM, its hub copy, a transfer run) has been made, so the tour takes seconds,
not the main job's minutes. The only edit to a block: the example bucket ``s3://team-models`` becomes a local
``file://`` folder (no S3 here).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """``outputs/demo`` as ``python3 run.py`` leaves it, at a tiny size."""
    import torch

    import bytezoo
    from bytezoo.cli import main
    from bytezoo.data import prepare_embedded_default

    root = tmp_path_factory.mktemp("readme")
    cache = root / "cache"
    patch = pytest.MonkeyPatch()  # the per-test cache fixture does not cover a module fixture
    patch.setenv("BYTEZOO_CACHE", str(cache))
    demo = root / "outputs" / "demo"
    torch.manual_seed(0)
    model = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8)
    model.save_pretrained(demo / "pretrain" / "model")
    bytezoo.ByteTokenizer().save_pretrained(demo / "pretrain" / "model")
    bytezoo.hub.push(demo / "pretrain" / "model", str(demo / "hub" / "mlstm-256"), tag="demo")
    splits = prepare_embedded_default()
    assert main(["transfer", "--model", str(demo / "pretrain" / "model"), "--train", str(splits.train), "--dev",
                 str(splits.dev), "--test", str(splits.test), "--output", str(demo / "transfer"), "--curve-points", "0",
                 "--heatmap-texts", "0", "--no-progress"]) == 0
    yield root, cache
    patch.undo()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i + 1}")
def test_readme_block_runs(index, demo_folder):
    root, cache = demo_folder
    code = BLOCKS[index].replace("s3://team-models", (root / "team-models").as_uri())
    # One thread: the suite runs one worker per core, and two threads per worker on a busy core are 10x slower here.
    env = {**os.environ, "BYTEZOO_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"README block {index + 1} failed:\n{code}\n{result.stderr[-3000:]}"
