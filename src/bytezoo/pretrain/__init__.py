"""Pretraining: byte streams from any fsspec URL, truncated backprop with persistent state, Accelerate, export.

>>> from bytezoo.pretrain import pretrain
>>> summary = pretrain(data=["reviews.csv"], output="runs/small", model="mlstm-256", max_steps=300)  # doctest: +SKIP
>>> summary["val_bpc"]  # doctest: +SKIP

The exported model is ``OUTPUT/model/`` (``AutoModelForCausalLM.from_pretrained`` after ``import bytezoo``).
"""
from .data import ByteStreams, DataError, StreamLayout, expand_sources
from .schedules import RECIPES, Schedule, scaled_lr
from .trainer import NonFiniteLossError, PretrainConfig, run


def pretrain(**options) -> dict:
    """Run :func:`run` with :class:`PretrainConfig` ``(**options)``; return the summary dict."""
    return run(PretrainConfig(**options))


__all__ = ["ByteStreams", "DataError", "NonFiniteLossError", "PretrainConfig", "RECIPES", "Schedule", "StreamLayout",
           "expand_sources", "pretrain", "run", "scaled_lr"]
