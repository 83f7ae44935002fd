"""Learning-rate schedules and the batch-size scaling rule.

The rate at an optimizer update is ``peak * shape(update)``, where ``peak`` is the base rate scaled to the global batch
and capped (:func:`scaled_lr`) and ``shape`` is a warmup ramp followed by a decay (:func:`lr_multiplier`). The schedule
is a pure function of the number of *applied* updates, so an fp16 step skipped for overflow does not advance it, and
resuming needs nothing but that count.

Puri et al. 2018 (NVIDIA) found that scaling Adam's rate linearly with the batch fails beyond a global batch of about
2048: they used 5e-4 per 128 sequences, scaled linearly, capped at 3e-3, with linear decay to zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "cosine", "exponential")
SCALING_RULES = ("none", "linear", "sqrt")
EXPONENTIAL_FINAL_RATIO = 0.01  # "exponential" decays to 1% of the peak at the last update

# Named presets: options they set unless given explicitly on the command line.
RECIPES: dict[str, dict] = {
    # Puri et al. 2018: Adam 5e-4 per batch of 128, scaled linearly with the batch, capped at 3e-3, decayed linearly to
    # zero. The short warmup is ours: at a capped rate it keeps the first large-batch updates from overshooting.
    "puri2018": {"lr": 5e-4, "lr_scaling": "linear", "base_batch_size": 128, "lr_cap": 3e-3,
                 "schedule": "linear", "warmup": 0.02},
}


def scaled_lr(lr: float, global_batch_size: int, rule: str = "none", base_batch_size: int = 128,
              cap: float | None = None) -> float:
    """``lr`` (the rate for ``base_batch_size``) scaled to ``global_batch_size`` by ``rule``, then capped at ``cap``."""
    if rule not in SCALING_RULES:
        raise ValueError(f"unknown lr scaling rule {rule!r}; choose from {SCALING_RULES}")
    ratio = global_batch_size / base_batch_size
    scaled = lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]
    return scaled if cap is None else min(scaled, cap)


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
