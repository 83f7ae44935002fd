"""One transfer experiment, end to end: what ``bytezoo transfer`` runs, in four steps that read top to bottom.

:func:`run_transfer` takes a :class:`~bytezoo.transfer.config.TransferConfig` and runs

1. :func:`extract`: read the datasets and extract every split's features with a :class:`Featurizer`;
2. :func:`fit`: sweep an L1 logistic regression's C on the dev set;
3. :func:`analyse`: fit classifiers on the top 1 and top k units, measure the TF-IDF baseline (unless
   ``baseline="none"``), and compare the probe, TF-IDF and the majority class at the same numbers of labels, each
   fitted on the same rows (the data-efficiency curve, :mod:`bytezoo.transfer.comparison`);
4. :func:`write_outputs`: draw the plots, save the classifier (safetensors + JSON) and write ``report.json``, last.

An output folder holds one run, by the policy every command shares (:mod:`bytezoo.training.run_folder`): a folder
holding an earlier run's output is refused before any work, unless ``overwrite``, which removes that run's files
(:data:`OUTPUT_FILES` and what its report lists) before writing.

``report.json`` (schema_version 2; fields are only ever added, never renamed or removed within a version; 2 added
``comparison`` and ``baselines.tfidf.C_chosen_on``, and without a dev set TF-IDF's C is now chosen on a held-out 20%
of train, as the probe's, instead of on train itself)::

    {
      "schema_version": 2,
      "bytezoo_version": "0.1.0",
      "created": "2026-11-23T20:30:00+00:00",
      "task": "binary" | "multiclass" | "multilabel",
      "metric": "accuracy" | "jaccard",       # jaccard: mean per-text Jaccard of label sets (multi-label "accuracy")
      "model": {"reference": str | null, "model_type": str, "hidden_size": int, "num_layers": int, "parameters": int},
      "featurizer": {"pooling", "preprocess", "batch_size", "chunk_size", "dtype", "device"},  # pooling: as resolved
      "data": {
        "text_col": str, "label_cols": [str], "classes": [str] | null (multi-label: null),
        "train": {"source": str, "rows": int, "label_counts": {label: count}},
        "dev": {...} | null, "test": {...} | null,
        "warnings": [str]                     # empty texts, classes with < 2 training rows, labels unseen in training
      },
      "classifier": {"C": float, "Cs": [float], "dev_scores": {"0.25": float, ...},
                     "C_chosen_on": "dev" | "train split", "n_features": int, "n_nonzero": int},
      "accuracy": {"train": float, "dev": float | null, "test": float | null},   # in the task's metric, 0..1
      "top_units": [{"unit": int, "importance": float, "weights": [float, ...],  # weights: one per output column
                     "toward": {class: 1 | -1 | 0},          # do higher values of the unit raise the class's score?
                     "range": {class: [p5, p95]},            # the unit's 5th-95th percentile per class, train split
                     "steer": {class: float}}],              # a value to hold it at to steer toward the class
      "steering": {"unit": int, "state": "cell" | "hidden" | null, "pooling": str, "class": str, "value": float,
                   "values": {class: float}, "toward": {...}, "split": "train"},  # `generate --pipeline DIR` holds it;
                                                              # state null: the family has no per-unit state to hold
      "top_unit_classifier": {"units": [int], "C": float, "n_nonzero": int, "dev_accuracy": float | null,
                              "test_accuracy": float | null},
      "top_k_classifier":    {... same, k units ...},
      "baselines": {"tfidf": {"C": float, "C_chosen_on": "dev" | "train split", "dev_accuracy": float,
                              "test_accuracy": float | null, "seconds": float}},  # {} with --baseline none
      "data_efficiency": [{"n_train": int, "C": float, "dev_accuracy": float,  # the probe
                           "test_accuracy": float | null}],
      "comparison": {                          # every method at the same label counts, on the same rows
        "split": "test" | null, "metric": str, "n_eval": int | null,  # null, and no methods, without a test split
        "n_train": [int],                      # the data-efficiency sizes (just all of train with curve_points 0)
        "draws": {"seed": int, "stratified": true, "repeats": 1}, "note": str,
        "methods": [{"name": "majority" | "tfidf" | "probe" | ..., "label": str, "constant": bool (majority only),
                     "points": [{"n_train": int, "accuracy": float | null, "stderr": float | null, ...}]}]
      },                                       # tfidf points add C, dev_accuracy; probe points C, dev_accuracy;
                                               # majority: class
      "featurization": {"texts": int, "characters": int, "bytes": int, "seconds": float,
                        "characters_per_second": float, "bytes_per_second": float},
      "timings": {"read_data_s", "load_model_s", "features_s": {"train", "dev", "test"}, "classifier_s",
                  "unit_classifiers_s", "baseline_s", "data_efficiency_s" (every method's curve), "plots_s", "total_s"},
      "files": {"report": "report.json", "classifier": ["classifier.safetensors", "classifier.json"],
                "model": "." | null, "plots": {"unit_histogram": "unit_histogram.png",
                "data_efficiency": "data_efficiency.png" (the comparison), "unit_heatmap": "unit_heatmap.png",
                "unit_heatmap_html": "unit_heatmap.html"},
                "written": [str]}                      # every file this run wrote into the folder (what --overwrite
                                                       # removes)
    }

Accuracies are evaluated on the split named (``dev``/``test``); ``null`` where that split was not given. Without a
dev set, C is chosen on a held-out 20% of the training set and refitted on all of it (``"C_chosen_on": "train split"``).
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from bytezoo import __version__
from bytezoo.data.errors import DatasetError
from bytezoo.data.labelled import LabeledTexts, read_dataset
from bytezoo.errors import ByteZooError, InvalidArgumentError
from bytezoo.training import run_folder
from bytezoo.training.run_folder import OutputFolderError  # noqa: F401  (raised here: part of this module's API)
from bytezoo.untrusted import jsonio

from . import comparison as compare
from .classifier import CLASSIFIER_METADATA, CLASSIFIER_WEIGHTS, SparseLogisticClassifier, fit_on_units
from .config import TransferConfig
from .featurizer import Featurizer, recurrent_body
from .metrics import SingleClassError, task_of
from .neuron import describe_units, format_units
from .pipeline import pipeline_metadata

REPORT_SCHEMA_VERSION = 2  # 2: "comparison" added; baselines.tfidf without a dev set chooses C on a train split
PLOT_FILES = {
    "unit_histogram": "unit_histogram.png",
    "data_efficiency": "data_efficiency.png",
    "unit_heatmap": "unit_heatmap.png",
    "unit_heatmap_html": "unit_heatmap.html",
}
REPORT_FILE = "report.json"
# What every run may write into its folder (besides the model, with include_model: its files are listed in the
# report's files.written): all that --overwrite removes when the earlier report cannot say more.
OUTPUT_FILES = (REPORT_FILE, CLASSIFIER_WEIGHTS, CLASSIFIER_METADATA, *PLOT_FILES.values())
TRANSFER_RUN = run_folder.FolderUse("bytezoo transfer", OUTPUT_FILES)
SPLITS = ("train", "dev", "test")

Log = Callable[[str], Any]


def _label_counts(data: LabeledTexts) -> dict:
    if data.multilabel:
        return {name: int(count) for name, count in zip(data.label_cols, data.labels.sum(axis=0))}
    return {str(label): count
            for label, count in sorted(Counter(data.labels.tolist()).items(), key=lambda item: str(item[0]))}


def _split_info(data: LabeledTexts | None) -> dict | None:
    if data is None:
        return None
    return {"source": data.source, "rows": len(data), "label_counts": _label_counts(data)}


def _model_reference(model: Any) -> str | None:
    if isinstance(model, (str, os.PathLike)):
        text = str(model)
        return text if "://" in text or "::" in text else os.path.abspath(text)
    return None


# --- the steps' results -----------------------------------------------------------------------------------------------
@dataclass
class Extraction:
    """What :func:`extract` hands on: the splits as read (``None`` where not given), the task, the fitted featurizer,
    and the features (n_texts, H) and labels of every split given."""

    data: dict[str, LabeledTexts | None]
    task: str
    featurizer: Featurizer
    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    totals: Counter  # texts, characters, bytes, seconds over all splits
    warnings: list[str] = dataclasses.field(default_factory=list)  # about the data: logged, and kept in the report

    @property
    def metric(self) -> str:
        return "jaccard" if self.task == "multilabel" else "accuracy"

    @property
    def train(self) -> LabeledTexts:
        return self.data["train"]

    def score(self, model, split: str, columns=None) -> float | None:
        """``model``'s score (the task's metric) on ``split``, ``None`` if that split was not given."""
        if split not in self.features:
            return None
        X = self.features[split] if columns is None else self.features[split][:, columns]
        return model.score(X, self.labels[split])


@dataclass
class Fit:
    """What :func:`fit` hands on: the classifier on all units, and its score on each split."""

    classifier: SparseLogisticClassifier
    accuracy: dict[str, float | None]


@dataclass
class Analysis:
    """What :func:`analyse` hands on: the top-unit classifiers, the baselines and the data-efficiency curve."""

    unit_classifiers: dict[str, dict]
    baselines: dict[str, dict]
    curve: list[dict]
    comparison: dict  # every method at the same label counts (see bytezoo.transfer.comparison)
    units: list[dict]  # the top units: weights, sign, range per class, steering values (neuron.describe_units)
    steering: dict  # what `bytezoo generate --pipeline` holds: the top unit, its state, a value per class


# --- the experiment --------------------------------------------------------------------------------------------------
def run_transfer(config: TransferConfig | None = None, *, log: Log = print, **options) -> dict:
    """Run the experiment ``config`` describes and write everything into ``config.output`` (a local path or fsspec
    URL); returns the report. Keyword ``options`` are :class:`TransferConfig` fields, given instead of ``config`` or
    overriding its values: ``run_transfer(model="m", train="t.csv", output="out")``."""
    started = time.perf_counter()
    config = (TransferConfig(**options) if config is None else dataclasses.replace(config, **options)).validated()
    if _model_reference(config.model) is None:
        config.include_model = True  # a model object has no other way into the saved pipeline
    check_output_folder(config.output, overwrite=config.overwrite, include_model=config.include_model)
    timings: dict[str, Any] = {}
    extraction = extract(config, timings, log)
    fitted = fit(config, extraction, timings, log)
    analysis = analyse(config, extraction, fitted, timings, log)
    return write_outputs(config, extraction, fitted, analysis, timings, started, log)


def extract(config: TransferConfig, timings: dict, log: Log = print) -> Extraction:
    """Load the model, read the splits (the train set decides the text and label columns of the others) and extract
    their features. Both inputs are checked before the first line of progress: a bad model or file fails at once."""
    tick = time.perf_counter()
    featurizer = Featurizer(
        config.model, pooling=config.pooling, preprocess=config.preprocess, batch_size=config.batch_size,
        chunk_size=config.chunk_size, device=config.device, dtype=config.dtype, cache_dir=config.cache_dir,
        progress=config.progress,
    ).fit()
    timings["load_model_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    train = read_dataset(config.train, config.text_col, config.label_cols, fmt=config.format)
    data: dict[str, LabeledTexts | None] = {"train": train}
    for name in ("dev", "test"):
        path = getattr(config, name)
        data[name] = read_dataset(path, train.text_col, train.label_cols, fmt=config.format) if path else None
    timings["read_data_s"] = time.perf_counter() - tick
    try:
        task = task_of(train.labels)
    except SingleClassError:
        raise DatasetError(
            f"{train.source}, column {train.label_cols[0]!r}: every training row has the label {train.labels[0]!r}; "
            "a classifier needs at least two classes"
        ) from None
    log(f"{task} task: {len(train)} train / {len(data['dev'] or [])} dev / {len(data['test'] or [])} test texts; "
        + (f"labels {', '.join(train.label_cols)}" if task == "multilabel"
           else f"classes {', '.join(str(c) for c in sorted(set(train.labels.tolist()), key=str))}"))
    warnings = data_warnings(data, task)
    for warning in warnings:
        log(f"warning: {warning}")

    features, labels, seconds, totals = {}, {}, {}, Counter()
    for name, split in data.items():
        if split is None:
            continue
        features[name] = featurizer.transform(split.texts)
        labels[name] = split.labels
        stats = featurizer.extraction_stats_
        seconds[name] = stats["seconds"]
        totals.update({key: stats[key] for key in ("texts", "characters", "bytes", "seconds")})
        log(f"features {name}: {stats['texts']} texts, "
            f"{stats['characters'] / max(stats['seconds'], 1e-9):,.0f} characters/s")
    timings["features_s"] = seconds
    return Extraction(data=data, task=task, featurizer=featurizer, features=features, labels=labels, totals=totals,
                      warnings=warnings)


def data_warnings(data: dict[str, LabeledTexts | None], task: str) -> list[str]:
    """What about the data may surprise: empty texts, classes with fewer than 2 training rows (hardly learnable, and
    no stratified split can hold them on both sides), and dev/test labels never seen in training (never predicted)."""
    warnings = []
    for name, split in data.items():
        if split is None:
            continue
        empty = [row for row, text in zip(split.rows, split.texts) if not text.strip()]
        if empty:
            warnings.append(f"{split.source}: {len(empty)} empty text(s) (first at row {empty[0]}); each gets the "
                            "features of an empty text")
    train = data["train"]
    if task == "multilabel":
        rare = {name: int(count) for name, count in zip(train.label_cols, train.labels.sum(axis=0)) if count < 2}
    else:
        rare = {str(label): count for label, count in Counter(train.labels.tolist()).items() if count < 2}
    if rare:
        shown = ", ".join(f"{label!r} ({count})" for label, count in sorted(rare.items()))
        warnings.append(f"{train.source}: fewer than 2 training rows for {shown}: the classifier can hardly learn "
                        f"{'them' if len(rare) > 1 else 'it'}")
    if task != "multilabel":
        seen = set(train.labels.tolist())
        for name in ("dev", "test"):
            split = data[name]
            unseen = Counter(label for label in split.labels.tolist() if label not in seen) if split is not None else {}
            if unseen:
                shown = ", ".join(f"{label!r} ({count} rows)" for label, count in sorted(unseen.items(), key=str))
                warnings.append(f"{split.source}: labels never seen in training: {shown}; the classifier never "
                                "predicts them, so every such row counts as an error")
    return warnings


def fit(config: TransferConfig, extraction: Extraction, timings: dict, log: Log = print) -> Fit:
    """The L1 logistic regression on every unit, C swept on dev (without dev: on a 20% split of train)."""
    tick = time.perf_counter()
    classifier = SparseLogisticClassifier(Cs=config.Cs, top_k=config.top_k, random_state=config.seed)
    classifier.fit(extraction.features["train"], extraction.labels["train"], extraction.features.get("dev"),
                   extraction.labels.get("dev"))
    timings["classifier_s"] = time.perf_counter() - tick
    accuracy = {split: extraction.score(classifier, split) for split in SPLITS}
    log(f"L1 logistic regression: C={classifier.C_:g}, {classifier.n_nonzero_} non-zero weights, "
        f"{extraction.metric} dev {_fmt(accuracy['dev'])} test {_fmt(accuracy['test'])}")
    if classifier.n_nonzero_ == 0:
        predicts = ("each label's majority value" if extraction.task == "multilabel"
                    else f"the majority class {str(classifier.predict(extraction.features['train'][:1])[0])!r}")
        log(f"warning: the classifier kept 0 non-zero weights (C={classifier.C_:g}): it ignores the features and "
            f"predicts {predicts} for every text; try larger C values (--C) or more training rows")
    return Fit(classifier=classifier, accuracy=accuracy)


def analyse(config: TransferConfig, extraction: Extraction, fitted: Fit, timings: dict, log: Log = print) -> Analysis:
    """Classifiers on the top unit and on the top k units, the TF-IDF baseline, and the data-efficiency curve."""
    classifier, features, labels = fitted.classifier, extraction.features, extraction.labels
    metric = extraction.metric

    tick = time.perf_counter()
    unit_classifiers = {}
    for key, units in (("top_unit_classifier", classifier.top_units_[:1]), ("top_k_classifier", classifier.top_units_)):
        restricted = fit_on_units(features["train"], labels["train"], features.get("dev"), labels.get("dev"), units,
                                  Cs=config.Cs, top_k=len(units), random_state=config.seed)
        unit_classifiers[key] = {
            "units": [int(u) for u in units], "C": restricted.C_, "n_nonzero": restricted.n_nonzero_,
            "dev_accuracy": extraction.score(restricted, "dev", units),
            "test_accuracy": extraction.score(restricted, "test", units),
        }
    timings["unit_classifiers_s"] = time.perf_counter() - tick
    log(f"top unit {int(classifier.top_units_[0])}: {metric} test "
        f"{_fmt(unit_classifiers['top_unit_classifier']['test_accuracy'])}")

    baselines = {}
    tick = time.perf_counter()
    train, dev, test = extraction.train, extraction.data["dev"], extraction.data["test"]
    if config.baseline == "tfidf":
        baselines["tfidf"] = _tfidf(config, train, dev, test, np.arange(len(train)))
        log(f"TF-IDF baseline: {metric} test {_fmt(baselines['tfidf'].get('test_accuracy'))}")
    timings["baseline_s"] = time.perf_counter() - tick

    # Every method at the same numbers of labels, fitted on the same rows: the probe (L1 LR on the frozen features),
    # TF-IDF and the majority class. The last size is the whole training set: the classifiers fitted above.
    tick = time.perf_counter()
    n_train = len(train)
    n_classes = 2 if extraction.task == "multilabel" else len(classifier.classes_)
    sizes = compare.curve_sizes(n_train, n_classes, config.curve_points) if config.curve_points > 0 else [n_train]
    probe, tfidf, majority = [], [], []
    for size in sizes:
        rows = compare.training_subset(labels["train"], size, config.seed)
        if size >= n_train:
            fitted_on_part = classifier
        else:
            try:
                fitted_on_part = SparseLogisticClassifier(Cs=config.Cs, random_state=config.seed).fit(
                    features["train"][rows], labels["train"][rows], features.get("dev"), labels.get("dev"))
            except SingleClassError:
                continue  # too few rows to hold two classes: no method is measured at this size
        probe.append({"n_train": int(size), "C": fitted_on_part.C_,
                      "dev_accuracy": extraction.score(fitted_on_part, "dev"),
                      "test_accuracy": extraction.score(fitted_on_part, "test")})
        if test is not None:
            majority.append({"n_train": int(size),
                             **compare.majority_point(extraction.task, labels["train"][rows], labels["test"])})
        if config.baseline == "tfidf":
            part = baselines["tfidf"] if size >= n_train else _tfidf(config, train, dev, test, rows)
            tfidf.append({"n_train": int(size), "accuracy": part.get("test_accuracy"), "C": part.get("C"),
                          "dev_accuracy": part.get("dev_accuracy"),
                          **({"error": part["error"]} if "error" in part else {})})
    curve = probe if config.curve_points > 0 else []
    timings["data_efficiency_s"] = time.perf_counter() - tick

    comparison = compare.new_comparison("test" if test is not None else None, metric,
                                        len(test) if test is not None else None,
                                        [point["n_train"] for point in probe] if test is not None else [], config.seed)
    if test is not None:
        compare.add_method(comparison, compare.MAJORITY, "majority class", majority, constant=True)
        if tfidf:
            compare.add_method(comparison, compare.TFIDF, "TF-IDF word 1-2grams + L2 LR", tfidf)
        model_type = recurrent_body(extraction.featurizer.language_model_).config.model_type
        compare.add_method(comparison, compare.PROBE, f"frozen {model_type} features + L1 LR",
                           [{"n_train": p["n_train"], "accuracy": p["test_accuracy"], "C": p["C"],
                             "dev_accuracy": p["dev_accuracy"]} for p in probe])
    units = describe_units(classifier, features["train"], labels["train"], class_names=extraction.train.label_cols)
    log(format_units(units, "train"))
    steering = steering_of(units[0], extraction.featurizer)
    if steering["state"] is None:
        log(f"steering: {type(recurrent_body(extraction.featurizer.language_model_)).__name__} has no per-unit state "
            "to hold a unit in")
    elif steering["class"] is not None:
        others = ", ".join(f"--toward {name} for {value:.3g}" for name, value in steering["values"].items()
                           if name != steering["class"])
        log(f"steering: `bytezoo generate --pipeline {config.output}` holds unit {steering['unit']} of the "
            f"{steering['state']} state at {steering['value']:.3g}, toward {steering['class']!r}"
            + (f" ({others})" if others else ""))
    return Analysis(unit_classifiers=unit_classifiers, baselines=baselines, curve=curve, comparison=comparison,
                    units=units, steering=steering)


def steering_of(unit: dict, featurizer: Featurizer) -> dict:
    """What steered generation holds for a transfer run: ``unit`` (one of :func:`describe_units`' entries; the top
    one) in the state part its feature is read from (``None`` where the family has none), by default at the value
    toward the class that the unit's high values favour most (the 95th percentile of that class)."""
    favoured = max(unit["toward"], key=lambda name: (unit["toward"][name], unit["steer"][name]), default=None)
    return {"unit": unit["unit"], "state": featurizer.text_pooling_.unit_state, "pooling": featurizer.pooling_,
            "class": favoured, "value": unit["steer"].get(favoured), "values": dict(unit["steer"]),
            "toward": dict(unit["toward"]), "split": "train"}


def _tfidf(config: TransferConfig, train: LabeledTexts, dev: LabeledTexts | None, test: LabeledTexts | None,
           rows) -> dict:
    """The TF-IDF baseline fitted on training ``rows``, C chosen on dev (without dev: on a 20% split of those rows,
    as the probe does); a subset it cannot be fitted on (one class left to fit) reports the error instead."""
    from .baseline import tfidf_baseline

    try:
        return tfidf_baseline(
            [train.texts[i] for i in rows], train.labels[rows], dev.texts if dev else None, dev.labels if dev else None,
            test.texts if test else None, test.labels if test else None, random_state=config.seed,
        )
    except ValueError as error:
        if len(rows) == len(train):
            raise
        return {"test_accuracy": None, "error": str(error)}


def write_outputs(config: TransferConfig, extraction: Extraction, fitted: Fit, analysis: Analysis, timings: dict,
                  started: float, log: Log = print) -> dict:
    """Plots, the classifier (and the model, with include_model), then ``report.json``, last; returns the report."""
    import fsspec

    output = str(config.output).rstrip("/")
    fs, root = fsspec.core.url_to_fs(output)
    if config.overwrite:
        clear_output_folder(output)
    fs.makedirs(root, exist_ok=True)
    before = set(fs.ls(root, detail=False))
    try:
        return _write_outputs(config, extraction, fitted, analysis, timings, started, log, output, fs, root)
    except BaseException:  # no partial output: what this run wrote so far goes (what was there before stays)
        for path in set(fs.ls(root, detail=False, refresh=True)) - before:
            fs.rm(path, recursive=True)
        raise


def _write_outputs(config, extraction, fitted, analysis, timings, started, log, output, fs, root) -> dict:
    import fsspec

    join = lambda name: f"{output}/{name}"  # noqa: E731
    classifier, featurizer = fitted.classifier, extraction.featurizer
    reference = _model_reference(config.model)
    label_cols = extraction.train.label_cols

    tick = time.perf_counter()
    plot_files = {}
    if config.plots:
        plot_files = _draw_plots(join, featurizer, classifier, extraction.data, extraction.features, extraction.labels,
                                 analysis.curve, analysis.comparison, config.heatmap_texts)
    timings["plots_s"] = time.perf_counter() - tick

    written = [*plot_files.values(), CLASSIFIER_WEIGHTS, CLASSIFIER_METADATA]
    model_file = None
    if config.include_model:
        from .pipeline import SentimentPipeline

        before = set(os.listdir(root))
        SentimentPipeline(featurizer, classifier, label_names=label_cols).save_pretrained(output, include_model=True)
        written += sorted(set(os.listdir(root)) - before - set(written))
        model_file = "."
    else:
        classifier.save(output, metadata=pipeline_metadata(featurizer, reference, label_cols))
    written.append(REPORT_FILE)

    timings["total_s"] = time.perf_counter() - started
    body = recurrent_body(featurizer.language_model_)
    totals = extraction.totals
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "bytezoo_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "task": extraction.task,
        "metric": extraction.metric,
        "model": {
            "reference": reference,
            "model_type": body.config.model_type,
            "hidden_size": int(body.config.hidden_size),
            "num_layers": int(body.config.num_layers),
            "parameters": int(sum(p.numel() for p in featurizer.language_model_.parameters())),
        },
        "featurizer": {"pooling": featurizer.pooling_,
                       **{key: getattr(config, key)
                          for key in ("preprocess", "batch_size", "chunk_size", "dtype", "device")}},
        "data": {
            "text_col": extraction.train.text_col,
            "label_cols": list(label_cols),
            "classes": None if extraction.task == "multilabel" else [str(c) for c in classifier.classes_],
            **{name: _split_info(split) for name, split in extraction.data.items()},
            "warnings": extraction.warnings,
        },
        "classifier": {
            "C": classifier.C_,
            "Cs": list(classifier.dev_scores_),
            "dev_scores": {repr(c): s for c, s in classifier.dev_scores_.items()},
            "C_chosen_on": "dev" if "dev" in extraction.features else "train split",
            "n_features": int(classifier.n_features_in_),
            "n_nonzero": classifier.n_nonzero_,
        },
        "accuracy": fitted.accuracy,
        "top_units": analysis.units,
        "steering": analysis.steering,
        **analysis.unit_classifiers,
        "baselines": analysis.baselines,
        "data_efficiency": analysis.curve,
        "comparison": analysis.comparison,
        "featurization": {
            **{key: int(totals[key]) for key in ("texts", "characters", "bytes")},
            "seconds": totals["seconds"],
            "characters_per_second": totals["characters"] / totals["seconds"] if totals["seconds"] else None,
            "bytes_per_second": totals["bytes"] / totals["seconds"] if totals["seconds"] else None,
        },
        "timings": timings,
        "files": {"report": REPORT_FILE, "classifier": [CLASSIFIER_WEIGHTS, CLASSIFIER_METADATA], "model": model_file,
                  "plots": plot_files, "written": written},
    }
    with fsspec.open(join(REPORT_FILE), "w") as handle:  # redacted (no credential of a data URL), never NaN
        handle.write(jsonio.dumps(report, indent=2, default=compare.report_json_default))
    log(compare.format_table(analysis.comparison))
    log(f"wrote {join(REPORT_FILE)}")
    return report


# --- one run per output folder ---------------------------------------------------------------------------------------
def listed_in_report(output: str) -> tuple[str, ...]:
    """The files an earlier run's report lists as written, beyond :data:`OUTPUT_FILES` (the model's, with
    include_model): plain file names only, so a report cannot point outside the folder."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(output).rstrip("/"))
    try:
        with fs.open(f"{root}/{REPORT_FILE}", "rb") as handle:
            listed = jsonio.loads(handle.read()).get("files", {}).get("written", [])
        return tuple(name for name in listed if isinstance(name, str) and _is_plain_name(name))
    except (FileNotFoundError, ValueError, AttributeError, UnicodeDecodeError):
        return ()  # no report, or not one of ours: the fixed names still count


def check_output_folder(output: str, *, overwrite: bool, include_model: bool = False) -> None:
    """Refuses, before any work, a folder holding an earlier run's output (unless ``overwrite``), and a model copy
    (``include_model``) into a folder that is not local."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    if include_model and not isinstance(fsspec.core.url_to_fs(str(output))[0], LocalFileSystem):
        raise InvalidArgumentError(f"--include-model copies the model into a local folder, and {output} is not "
                                   "one: write locally and push the folder with `bytezoo hub push`, or leave the "
                                   "model where it is")
    run_folder.check_output_folder(output, TRANSFER_RUN, overwrite=overwrite, listed=listed_in_report(output))


def clear_output_folder(output: str) -> list[str]:
    """``overwrite``: removes what an earlier run wrote into ``output`` (see :func:`check_output_folder`), nothing
    else."""
    return run_folder.clear_output_folder(output, TRANSFER_RUN, listed=listed_in_report(output))


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not name.startswith(".") and "/" not in name and "\\" not in name


def _draw_plots(join, featurizer, classifier, splits, features, labels, curve, comparison, heatmap_texts) -> dict:
    import fsspec

    from .neuron import unit_trace
    from .plots import plot_comparison, plot_unit_heatmap, plot_unit_histogram, unit_heatmap_html

    split = "test" if "test" in features else "dev" if "dev" in features else "train"
    unit = int(classifier.top_units_[0])
    values = features[split][:, unit]
    if classifier.task_ == "multilabel":
        column = int(np.argmax(np.abs(classifier.coef_[:, unit])))
        name = splits["train"].label_cols[column]
        groups = np.where(labels[split][:, column] == 1, f"{name}", f"not {name}")
    else:
        groups = labels[split]
    files = {}
    plot_unit_histogram(values, groups, unit, join(PLOT_FILES["unit_histogram"]),
                        title=f"Unit {unit} on the {split} set")
    files["unit_histogram"] = PLOT_FILES["unit_histogram"]
    if curve and comparison["methods"]:  # every method against the number of labels, on the test set
        plot_comparison(comparison, join(PLOT_FILES["data_efficiency"]))
        files["data_efficiency"] = PLOT_FILES["data_efficiency"]
    if heatmap_texts > 0:
        texts = _sample_texts(splits[split].texts, groups, heatmap_texts)
        traces = [unit_trace(featurizer.language_model_, text, unit, pooling=featurizer.pooling_,
                             preprocess=featurizer.preprocess, max_bytes=400) for text in texts]
        plot_unit_heatmap(traces, join(PLOT_FILES["unit_heatmap"]))
        with fsspec.open(join(PLOT_FILES["unit_heatmap_html"]), "w", encoding="utf-8") as handle:
            handle.write(unit_heatmap_html(traces))
        files["unit_heatmap"] = PLOT_FILES["unit_heatmap"]
        files["unit_heatmap_html"] = PLOT_FILES["unit_heatmap_html"]
    return files


def _sample_texts(texts: Sequence[str], groups: np.ndarray, count: int) -> list[str]:
    """Up to ``count`` texts taking turns between groups (classes), shortest-ish first for readable plots."""
    by_group: dict[str, list[str]] = {}
    for text, group in zip(texts, groups):
        by_group.setdefault(str(group), []).append(text)
    for members in by_group.values():
        members.sort(key=lambda text: abs(len(text) - 120))  # sentences of about two lines read best
    chosen = []
    while len(chosen) < count and any(by_group.values()):
        for members in by_group.values():
            if members and len(chosen) < count:
                chosen.append(members.pop(0))
    return chosen


def _fmt(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


__all__ = ["run_transfer", "REPORT_SCHEMA_VERSION"]
