"""Pretraining's learning rate: the batch-size scaling rule and the named recipes. The schedule's shapes (warmup,
decay) are the runtime's, shared with fine-tuning (:mod:`bytezoo.training.schedules`).

Puri et al. 2018 (NVIDIA) found that scaling Adam's rate linearly with the batch fails beyond a global batch of about
2048: they used 5e-4 per 128 sequences, scaled linearly, capped at 3e-3, with linear decay to zero.
"""
from __future__ import annotations

import math

from bytezoo.training.schedules import SCHEDULES, Schedule, warmup_steps

SCALING_RULES = ("none", "linear", "sqrt")

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


__all__ = ["RECIPES", "SCALING_RULES", "SCHEDULES", "Schedule", "scaled_lr", "warmup_steps"]
