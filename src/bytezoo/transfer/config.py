"""The options of one transfer experiment, with their defaults and allowed values in one place: ``bytezoo transfer``
builds its options from them, :func:`~bytezoo.transfer.experiment.run_transfer` reads them, and the featurizer checks
its own against the same tuples. The pooling modes live with the models (:data:`bytezoo.zoo.recurrent_lm.POOLINGS`:
which a model offers, and its default, depend on its family); ``pooling=None`` is the model's own.

>>> from bytezoo.transfer import TransferConfig, run_transfer
>>> report = run_transfer(TransferConfig(model="runs/a/model", train="train.csv", test="test.csv",
...                                      output="out/sst", pooling="mean"))  # doctest: +SKIP

This module imports nothing heavy: ``bytezoo transfer --help`` reads it. The record formats of the labelled files are
:data:`bytezoo.data.formats.RECORD_FORMATS`.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Sequence

from bytezoo.data.formats import RECORD_FORMATS
from bytezoo.errors import InvalidArgumentError

PREPROCESSORS = ("openai", "none")  # openai: the original encoder's preprocessing
DTYPES = ("float32", "bfloat16")  # bfloat16: autocast, the state carried in fp32
BASELINES = ("tfidf", "none")  # measured in the same run, on the same splits


@dataclass
class TransferConfig:
    """Options of ``bytezoo transfer`` (see ``bytezoo transfer --help`` for each).

    Data: ``model`` (a checkpoint directory, hub URL or model object), ``train`` and optional ``dev`` (chooses C;
    without it C is chosen on a 20% split of train) and ``test`` (reported), each a CSV, TSV or JSON-lines path or
    fsspec URL in ``format`` (``None``: from the extension); ``text_col`` and ``label_cols`` (``None``: guessed; several
    label columns make a multi-label task).

    Features: ``pooling`` (``None``: the model's own; checked against the model before any feature is extracted),
    ``preprocess``, ``batch_size``, ``chunk_size``, ``device``, ``dtype``, ``cache_dir`` (an optional feature cache)
    and ``progress`` (``None``: a bar only on a terminal), as :class:`Featurizer` takes them.

    Classifier and analysis: ``Cs`` (``None``: 2^-8 … 2^0), ``top_k`` units reported and fitted on, ``baseline``
    (``"tfidf"`` or ``"none"``), ``plots``, ``curve_points`` (training-set sizes on the data-efficiency curve, where
    every method is fitted on the same rows; 0: all of train only), ``heatmap_texts``, ``seed``.

    Output: ``output`` (a folder or fsspec URL), ``include_model`` (copy the model beside the classifier) and
    ``overwrite``: a folder holding an earlier ``bytezoo transfer`` run's output is refused unless ``overwrite``,
    which first removes what that run wrote there (and nothing else).
    """

    model: Any
    train: str
    output: str
    dev: str | None = None
    test: str | None = None
    format: str | None = None
    text_col: str | None = None
    label_cols: Sequence[str] | None = None
    pooling: str | None = None  # the model's own (final_cell where the family has a cell: the papers' feature)
    preprocess: str = "openai"
    batch_size: int = 512  # rows read in parallel; see DEFAULT_BATCH_SIZE in featurizer.py for the measurements
    chunk_size: int = 32  # 32 reads SST twice as fast as 256 at H=1024 (benchmarks/results/transfer-throughput.json)
    device: str = "cpu"
    dtype: str = "float32"
    cache_dir: str | None = None
    progress: bool | None = None
    Cs: Sequence[float] | None = None
    top_k: int = 10
    baseline: str = "tfidf"  # the yardstick the mLSTM features must beat: on by default, "none" to skip
    plots: bool = True
    curve_points: int = 6
    heatmap_texts: int = 4
    include_model: bool = False
    overwrite: bool = False
    seed: int = 0

    def validated(self) -> TransferConfig:
        """A copy with ``label_cols``/``Cs`` as lists and ``baseline=None`` read as ``"none"``; every option checked,
        so that a bad value fails before any model is loaded, naming the option (:class:`InvalidArgumentError`)."""
        config = dataclasses.replace(self)
        if config.baseline is None:
            config.baseline = "none"
        if isinstance(config.label_cols, str):
            config.label_cols = [config.label_cols]
        elif config.label_cols is not None:
            config.label_cols = list(config.label_cols)
        problems = []
        if config.pooling is not None:
            from bytezoo.zoo.recurrent_lm import POOLINGS  # the models' modes; which of them a model has: at load

            if config.pooling not in POOLINGS:
                problems.append(f"pooling {config.pooling!r} is not one of {', '.join(POOLINGS)}")
        for name, allowed in (("preprocess", PREPROCESSORS), ("dtype", DTYPES), ("baseline", BASELINES)):
            if getattr(config, name) not in allowed:
                problems.append(f"{name} {getattr(config, name)!r} is not one of {', '.join(allowed)}")
        if config.format is not None and config.format not in RECORD_FORMATS:  # None: from each file's extension
            problems.append(f"format {config.format!r} is not one of {', '.join(RECORD_FORMATS)}")
        for name in ("batch_size", "chunk_size", "top_k"):
            value = getattr(config, name)
            if not _is_int(value) or value < 1:
                problems.append(f"{name} must be a positive integer (got {value!r})")
        for name in ("curve_points", "heatmap_texts"):
            value = getattr(config, name)
            if not _is_int(value) or value < 0:
                problems.append(f"{name} must be an integer >= 0 (got {value!r})")
        if config.Cs is not None:
            config.Cs = list(config.Cs)
            if not config.Cs or not all(_is_number(c) and math.isfinite(c) and c > 0 for c in config.Cs):
                problems.append(f"C values must be positive finite numbers (got {config.Cs})")
        for name in ("train", "output"):
            if not isinstance(getattr(config, name), (str, os.PathLike)) or not str(getattr(config, name)):
                problems.append(f"{name} must be a path or URL (got {getattr(config, name)!r})")
        if problems:
            raise InvalidArgumentError("transfer options: " + "; ".join(problems))
        return config


def option_default(name: str):
    """The default of a :class:`TransferConfig` field (what the command line shows and uses)."""
    return TransferConfig.__dataclass_fields__[name].default


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


__all__ = ["BASELINES", "DTYPES", "PREPROCESSORS", "TransferConfig", "option_default"]
