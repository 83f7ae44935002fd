"""Fine-tuning: a zoo model's body and a new head on its pooled state (``*ForSequenceClassification``), trained end to
end on labelled texts under Accelerate, exported for ``transformers.pipeline("text-classification")``.

>>> from bytezoo.finetune import finetune
>>> summary = finetune(model="runs/lm/model", train="train.csv", dev="dev.csv", output="runs/ft")  # doctest: +SKIP
>>> summary["best_dev"]["accuracy"]                                                                  # doctest: +SKIP

The command line: ``bytezoo finetune``; ``bytezoo classify --pipeline OUTPUT/model`` serves the result.
"""
import lazy_loader as _lazy

# Lazy: `bytezoo finetune --help` must not import accelerate and torch.
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "data": ["FinetuneError", "Task", "load_task"],
        "serving": ["SequenceClassificationPipeline"],
        "trainer": ["FinetuneConfig", "run"],
    },
)
__all__ = [*__all__, "finetune"]


def finetune(**options) -> dict:
    """Run :func:`run` with :class:`FinetuneConfig` ``(**options)``; return the summary dict."""
    from .trainer import FinetuneConfig, run

    return run(FinetuneConfig(**options))
