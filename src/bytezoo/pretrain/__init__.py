"""Pretraining: byte streams from any fsspec URL, truncated backprop with persistent state, Accelerate, export.

>>> from bytezoo.pretrain import pretrain
>>> summary = pretrain(data=["reviews.csv"], output="runs/small", model="mlstm-256", max_steps=300)  # doctest: +SKIP
>>> summary["val_bpc"]  # doctest: +SKIP

The exported model is ``OUTPUT/model/`` (``AutoModelForCausalLM.from_pretrained`` after ``import bytezoo``).
"""
import lazy_loader as _lazy

# Lazy: `bytezoo pretrain --help` must not import accelerate and torch.
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "data": ["ByteStreams", "DataError", "StreamLayout", "expand_sources"],
        "schedules": ["RECIPES", "Schedule", "scaled_lr"],
        "trainer": ["NonFiniteLossError", "PretrainConfig", "run"],
    },
)
__all__ = [*__all__, "pretrain"]


def pretrain(**options) -> dict:
    """Run :func:`run` with :class:`PretrainConfig` ``(**options)``; return the summary dict."""
    from .trainer import PretrainConfig, run

    return run(PretrainConfig(**options))
