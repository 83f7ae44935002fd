"""Learning-rate schedules: the rate at an optimizer update is ``peak * multiplier(update)``, a warmup ramp followed
by a decay. Both objectives use them (pretraining with one peak, fine-tuning with a head and a body peak); a new shape
is added here, to :data:`SCHEDULES` and :meth:`Schedule.multiplier`, and both commands offer it.

The schedule is a pure function of the number of *applied* updates, so an fp16 step skipped for overflow does not
advance it, and resuming needs nothing but that count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "cosine", "exponential")
EXPONENTIAL_FINAL_RATIO = 0.01  # "exponential" decays to 1% of the peak at the last update


def warmup_steps(warmup: float, total_steps: int) -> int:
    """``warmup`` is a number of updates (>= 1) or a fraction of the run (< 1)."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


@dataclass(frozen=True)
class Schedule:
    """``lr(update)`` for updates ``0 .. total_steps - 1``: linear warmup to ``peak_lr``, then ``shape`` decay."""

    peak_lr: float
    total_steps: int
    shape: str = "linear"
    warmup_steps: int = 0

    def __post_init__(self):
        if self.shape not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.shape!r}; choose from {SCHEDULES}")
        if self.total_steps < 1:
            raise ValueError(f"a schedule needs at least one step, got total_steps={self.total_steps}")

    def __call__(self, update: int) -> float:
        return self.peak_lr * self.multiplier(update)

    def multiplier(self, update: int) -> float:
        if update < self.warmup_steps:  # ramp from peak / warmup up to the peak
            return (update + 1) / self.warmup_steps
        if self.shape == "constant":
            return 1.0
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (update - self.warmup_steps) / decay_steps)  # 0 at the peak, -> 1 at the end
        if self.shape == "linear":
            return 1.0 - progress
        if self.shape == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return EXPONENTIAL_FINAL_RATIO ** progress


__all__ = ["EXPONENTIAL_FINAL_RATIO", "SCHEDULES", "Schedule", "warmup_steps"]
