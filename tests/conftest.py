"""Shared fixtures: the read-only data beside the checkout, tiny zoo models, an isolated hub cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Deterministic kernels and threads in every test and every process a test starts: the packing rule without a timing
# calibration (tests/test_kernels_calibration.py turns it on explicitly), PyTorch's default thread count instead of
# one measured from the machine's load, and no thread log line in commands' stderr.
os.environ.setdefault("BYTEZOO_KERNEL_CALIBRATION", "0")
os.environ.setdefault("BYTEZOO_NUM_THREADS", "0")
os.environ.setdefault("BYTEZOO_QUIET_THREADS", "1")

# The data folder that sits beside the checkout (../shared/data); tests that need it skip cleanly without it.
SHARED_DATA = Path(os.environ.get("BYTEZOO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_bytezoo_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own hub cache, so tests never share or pollute ~/.cache/bytezoo."""
    monkeypatch.setenv("BYTEZOO_CACHE", str(tmp_path_factory.mktemp("bytezoo-cache")))
    monkeypatch.delenv("BYTEZOO_OFFLINE", raising=False)


@pytest.fixture
def sst_dir() -> Path:
    path = SHARED_DATA / "sst"
    if not (path / "train.csv").is_file():
        pytest.skip(f"SST data not found at {path}")
    return path


@pytest.fixture
def semeval_dir() -> Path:
    path = SHARED_DATA / "semeval"
    if not (path / "train.csv").is_file():
        pytest.skip(f"SemEval data not found at {path}")
    return path


@pytest.fixture
def tiny_model():
    """Builds a preset at the tiny size its registry entry declares for tests, in eval mode."""
    import bytezoo

    def build(name: str, **overrides):
        info = bytezoo.get_model_info(name)
        return bytezoo.create_model(name, **{**info.test_overrides, **overrides}).eval()

    return build


@pytest.fixture
def finetune_task(tmp_path) -> dict:
    """A tiny mLSTM LM checkpoint and train/dev/test CSVs of word-level sentiment (tests/finetune_task.py)."""
    from finetune_task import make_task

    return make_task(tmp_path)
