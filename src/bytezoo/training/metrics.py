"""The metrics log of a run: ``OUTPUT/metrics.jsonl`` (one JSON object per record) plus TensorBoard scalars, written
by the main process only. A resumed run first drops what was logged after its checkpoint, so the log reads as the
uninterrupted run's."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from bytezoo.untrusted import jsonio

from .checkpoint import write_text_atomic


class MetricsLog:
    """``metrics.jsonl`` plus TensorBoard scalars, written by the main process only."""

    def __init__(self, output: Path, enabled: bool, resume_step: int | None):
        self.enabled, self.path = enabled, output / "metrics.jsonl"
        self.tensorboard = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():  # forget what was logged after the checkpoint
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
            write_text_atomic(self.path, "".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("tensorboard is not installed: metrics go to metrics.jsonl only", stacklevel=2)
        else:
            self.tensorboard = SummaryWriter(str(output / "tensorboard"), purge_step=resume_step)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(jsonio.dumps(record) + "\n")  # redacted, never NaN
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tensorboard is not None:
                self.tensorboard.close()


def _step_of(line: str) -> float:
    """A record's step; a line a crash cut short counts as after any checkpoint (it is dropped on resume)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


__all__ = ["MetricsLog"]
