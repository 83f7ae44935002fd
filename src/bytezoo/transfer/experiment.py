"""One transfer experiment, end to end: what ``bytezoo transfer`` runs.

Reads the datasets, extracts features with a :class:`Featurizer`, sweeps an L1 logistic regression's C on the dev
set, finds the top units, fits classifiers on the top 1 and top k units, optionally measures the TF-IDF baseline,
draws the plots, saves the classifier (safetensors + JSON) and writes ``report.json``.

``report.json`` (schema_version 1; fields are only ever added, never renamed or removed within a version)::

    {
      "schema_version": 1,
      "bytezoo_version": "0.1.0",
      "created": "2026-11-23T20:30:00+00:00",
      "task": "binary" | "multiclass" | "multilabel",
      "metric": "accuracy" | "jaccard",       # jaccard: mean per-text Jaccard of label sets (multi-label "accuracy")
      "model": {"reference": str | null, "model_type": str, "hidden_size": int, "num_layers": int, "parameters": int},
      "featurizer": {"pooling", "preprocess", "batch_size", "chunk_size", "dtype", "device"},
      "data": {
        "text_col": str, "label_cols": [str], "classes": [str] | null (multi-label: null),
        "train": {"source": str, "rows": int, "label_counts": {label: count}},
        "dev": {...} | null, "test": {...} | null
      },
      "classifier": {"C": float, "Cs": [float], "dev_scores": {"0.25": float, ...}, "C_chosen_on": "dev" | "train split",
                     "n_features": int, "n_nonzero": int},
      "accuracy": {"train": float, "dev": float | null, "test": float | null},   # in the task's metric, 0..1
      "top_units": [{"unit": int, "importance": float, "weights": [float, ...]}],  # weights: one per output column
      "top_unit_classifier": {"units": [int], "C": float, "n_nonzero": int, "dev_accuracy": float | null, "test_accuracy": float | null},
      "top_k_classifier":    {... same, k units ...},
      "baselines": {"tfidf": {"C": float, "dev_accuracy": float, "test_accuracy": float | null, "seconds": float}},  # {} without --baseline
      "data_efficiency": [{"n_train": int, "C": float, "dev_accuracy": float, "test_accuracy": float | null}],
      "featurization": {"texts": int, "characters": int, "bytes": int, "seconds": float,
                        "characters_per_second": float, "bytes_per_second": float},
      "timings": {"read_data_s", "load_model_s", "features_s": {"train", "dev", "test"}, "classifier_s",
                  "unit_classifiers_s", "baseline_s", "data_efficiency_s", "plots_s", "total_s"},
      "files": {"report": "report.json", "classifier": ["classifier.safetensors", "classifier.json"],
                "model": "." | null, "plots": {"unit_histogram": "unit_histogram.png",
                "data_efficiency": "data_efficiency.png", "unit_heatmap": "unit_heatmap.png",
                "unit_heatmap_html": "unit_heatmap.html"}}
    }

Accuracies are evaluated on the split named (``dev``/``test``); ``null`` where that split was not given. Without a
dev set, C is chosen on a held-out 20% of the training set and refitted on all of it (``"C_chosen_on": "train split"``).
"""
from __future__ import annotations

import datetime
import json
import os
import time
from collections import Counter
from typing import Any, Sequence

import numpy as np

from .classifier import CLASSIFIER_METADATA, CLASSIFIER_WEIGHTS, SingleClassError, SparseLogisticClassifier, fit_on_units, task_of
from .data import DatasetError, LabeledTexts, read_dataset
from .featurizer import Featurizer, recurrent_body
from .pipeline import pipeline_metadata

REPORT_SCHEMA_VERSION = 1
PLOT_FILES = {
    "unit_histogram": "unit_histogram.png",
    "data_efficiency": "data_efficiency.png",
    "unit_heatmap": "unit_heatmap.png",
    "unit_heatmap_html": "unit_heatmap.html",
}


def _label_counts(data: LabeledTexts) -> dict:
    if data.multilabel:
        return {name: int(count) for name, count in zip(data.label_cols, data.labels.sum(axis=0))}
    return {str(label): count for label, count in sorted(Counter(data.labels.tolist()).items(), key=lambda item: str(item[0]))}


def _split_info(data: LabeledTexts | None) -> dict | None:
    if data is None:
        return None
    return {"source": data.source, "rows": len(data), "label_counts": _label_counts(data)}


def _model_reference(model: Any) -> str | None:
    if isinstance(model, (str, os.PathLike)):
        text = str(model)
        return text if "://" in text or "::" in text else os.path.abspath(text)
    return None


def _curve_sizes(n_train: int, n_classes: int, points: int) -> list[int]:
    smallest = min(n_train, max(10, 2 * n_classes))
    if points <= 1 or smallest >= n_train:
        return [n_train]
    return sorted({int(round(size)) for size in np.geomspace(smallest, n_train, points)})


def _subsample(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of ``size`` training rows, stratified where every class can be represented."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    if size >= len(y):
        return indices
    stratify = None
    if y.ndim == 1:
        classes, counts = np.unique(y, return_counts=True)
        if size >= len(classes) and counts.min() >= 2:
            stratify = y
    chosen, _ = train_test_split(indices, train_size=size, random_state=seed, stratify=stratify)
    return np.sort(chosen)


def run_transfer(
    model: Any,
    train: str,
    dev: str | None = None,
    test: str | None = None,
    *,
    output: str,
    text_col: str | None = None,
    label_cols: Sequence[str] | None = None,
    pooling: str = "final_cell",
    preprocess: str = "openai",
    batch_size: int = 128,
    chunk_size: int = 32,
    device: str = "cpu",
    dtype: str = "float32",
    cache_dir: str | None = None,
    Cs: Sequence[float] | None = None,
    top_k: int = 10,
    baseline: str | None = None,
    plots: bool = True,
    curve_points: int = 6,
    heatmap_texts: int = 4,
    include_model: bool = False,
    seed: int = 0,
    progress: bool | None = None,
    log=print,
) -> dict:
    """Run the experiment and write everything into ``output`` (local path or fsspec URL); returns the report."""
    import fsspec

    started = time.perf_counter()
    timings: dict[str, Any] = {}
    reference = _model_reference(model)
    if reference is None:
        include_model = True  # a model object has no other way into the saved pipeline
    if baseline not in (None, "none", "tfidf"):
        raise ValueError(f"unknown baseline {baseline!r}; choose 'tfidf' or none")

    tick = time.perf_counter()
    splits: dict[str, LabeledTexts | None] = {"train": read_dataset(train, text_col, label_cols)}
    text_col = splits["train"].text_col
    label_cols = splits["train"].label_cols
    for name, path in (("dev", dev), ("test", test)):
        splits[name] = read_dataset(path, text_col, label_cols) if path else None
    timings["read_data_s"] = time.perf_counter() - tick
    train_data = splits["train"]
    try:
        task = task_of(train_data.labels)
    except SingleClassError:
        raise DatasetError(
            f"{train_data.source}, column {label_cols[0]!r}: every training row has the label {train_data.labels[0]!r}; a classifier needs at least two classes"
        ) from None
    metric = "jaccard" if task == "multilabel" else "accuracy"
    log(f"{task} task: {len(train_data)} train / {len(splits['dev'] or [])} dev / {len(splits['test'] or [])} test texts")

    tick = time.perf_counter()
    featurizer = Featurizer(
        model, pooling=pooling, preprocess=preprocess, batch_size=batch_size, chunk_size=chunk_size, device=device, dtype=dtype, cache_dir=cache_dir, progress=progress
    ).fit()
    timings["load_model_s"] = time.perf_counter() - tick
    body = recurrent_body(featurizer.language_model_)

    features, labels, feature_seconds = {}, {}, {}
    totals = Counter()
    for name, data in splits.items():
        if data is None:
            continue
        features[name] = featurizer.transform(data.texts)
        labels[name] = data.labels
        stats = featurizer.extraction_stats_
        feature_seconds[name] = stats["seconds"]
        totals.update({"texts": stats["texts"], "characters": stats["characters"], "bytes": stats["bytes"]})
        totals["seconds"] += stats["seconds"]
        log(f"features {name}: {stats['texts']} texts, {stats['characters'] / max(stats['seconds'], 1e-9):,.0f} characters/s")
    timings["features_s"] = feature_seconds

    tick = time.perf_counter()
    classifier = SparseLogisticClassifier(Cs=Cs, top_k=top_k, random_state=seed)
    classifier.fit(features["train"], labels["train"], features.get("dev"), labels.get("dev"))
    timings["classifier_s"] = time.perf_counter() - tick

    def evaluate(model_, columns=None) -> dict:
        def score(split):
            if split not in features:
                return None
            X = features[split] if columns is None else features[split][:, columns]
            return model_.score(X, labels[split])

        return {"dev": score("dev"), "test": score("test")}

    full = evaluate(classifier)
    accuracy = {"train": classifier.score(features["train"], labels["train"]), **full}
    log(f"L1 logistic regression: C={classifier.C_:g}, {classifier.n_nonzero_} non-zero weights, {metric} dev {_fmt(accuracy['dev'])} test {_fmt(accuracy['test'])}")

    tick = time.perf_counter()
    dev_features = features.get("dev")
    unit_classifiers = {}
    for key, units in (("top_unit_classifier", classifier.top_units_[:1]), ("top_k_classifier", classifier.top_units_)):
        restricted = fit_on_units(features["train"], labels["train"], dev_features, labels.get("dev"), units, Cs=Cs, top_k=len(units), random_state=seed)
        scores = evaluate(restricted, units)
        unit_classifiers[key] = {"units": [int(u) for u in units], "C": restricted.C_, "n_nonzero": restricted.n_nonzero_, "dev_accuracy": scores["dev"], "test_accuracy": scores["test"]}
    timings["unit_classifiers_s"] = time.perf_counter() - tick
    log(f"top unit {int(classifier.top_units_[0])}: {metric} test {_fmt(unit_classifiers['top_unit_classifier']['test_accuracy'])}")

    baselines = {}
    tick = time.perf_counter()
    if baseline == "tfidf":
        from .baseline import tfidf_baseline

        test_data = splits["test"]
        dev_data = splits["dev"] or splits["train"]  # without a dev set the baseline's C is chosen on train (optimistic)
        baselines["tfidf"] = tfidf_baseline(
            train_data.texts, train_data.labels, dev_data.texts, dev_data.labels,
            test_data.texts if test_data else None, test_data.labels if test_data else None,
        )
        log(f"TF-IDF baseline: {metric} test {_fmt(baselines['tfidf'].get('test_accuracy'))}")
    timings["baseline_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    curve = []
    n_classes = 2 if task == "multilabel" else len(classifier.classes_)
    for size in _curve_sizes(len(train_data), n_classes, curve_points) if curve_points > 0 else []:
        rows = _subsample(labels["train"], size, seed)
        if size >= len(train_data):
            fitted = classifier
        else:
            try:
                fitted = SparseLogisticClassifier(Cs=Cs, random_state=seed).fit(features["train"][rows], labels["train"][rows], dev_features, labels.get("dev"))
            except SingleClassError:
                continue  # too few rows to hold two classes
        scores = evaluate(fitted)
        curve.append({"n_train": int(size), "C": fitted.C_, "dev_accuracy": scores["dev"], "test_accuracy": scores["test"]})
    timings["data_efficiency_s"] = time.perf_counter() - tick

    fs, root = fsspec.core.url_to_fs(str(output))
    fs.makedirs(root, exist_ok=True)
    join = lambda name: f"{str(output).rstrip('/')}/{name}"  # noqa: E731

    tick = time.perf_counter()
    plot_files = {}
    if plots:
        plot_files = _draw_plots(join, featurizer, classifier, splits, features, labels, curve, baselines, metric, heatmap_texts)
    timings["plots_s"] = time.perf_counter() - tick

    model_file = None
    if include_model:
        from .pipeline import SentimentPipeline

        SentimentPipeline(featurizer, classifier, label_names=label_cols).save_pretrained(str(output), include_model=True)
        model_file = "."
    else:
        classifier.save(str(output), metadata=pipeline_metadata(featurizer, reference, label_cols))

    timings["total_s"] = time.perf_counter() - started
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "bytezoo_version": _version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "task": task,
        "metric": metric,
        "model": {
            "reference": reference,
            "model_type": body.config.model_type,
            "hidden_size": int(body.config.hidden_size),
            "num_layers": int(body.config.num_layers),
            "parameters": int(sum(p.numel() for p in featurizer.language_model_.parameters())),
        },
        "featurizer": {"pooling": pooling, "preprocess": preprocess, "batch_size": batch_size, "chunk_size": chunk_size, "dtype": dtype, "device": device},
        "data": {
            "text_col": text_col,
            "label_cols": list(label_cols),
            "classes": None if task == "multilabel" else [str(c) for c in classifier.classes_],
            **{name: _split_info(data) for name, data in splits.items()},
        },
        "classifier": {
            "C": classifier.C_,
            "Cs": list(classifier.dev_scores_),
            "dev_scores": {repr(c): s for c, s in classifier.dev_scores_.items()},
            "C_chosen_on": "dev" if "dev" in features else "train split",
            "n_features": int(classifier.n_features_in_),
            "n_nonzero": classifier.n_nonzero_,
        },
        "accuracy": accuracy,
        "top_units": [
            {"unit": int(unit), "importance": float(np.linalg.norm(classifier.coef_[:, unit])), "weights": [float(w) for w in classifier.coef_[:, unit]]}
            for unit in classifier.top_units_
        ],
        **unit_classifiers,
        "baselines": baselines,
        "data_efficiency": curve,
        "featurization": {
            **{key: int(totals[key]) for key in ("texts", "characters", "bytes")},
            "seconds": totals["seconds"],
            "characters_per_second": totals["characters"] / totals["seconds"] if totals["seconds"] else None,
            "bytes_per_second": totals["bytes"] / totals["seconds"] if totals["seconds"] else None,
        },
        "timings": timings,
        "files": {"report": "report.json", "classifier": [CLASSIFIER_WEIGHTS, CLASSIFIER_METADATA], "model": model_file, "plots": plot_files},
    }
    with fsspec.open(join("report.json"), "w") as handle:
        json.dump(report, handle, indent=2, default=_jsonable)
    log(f"wrote {join('report.json')}")
    return report


def _draw_plots(join, featurizer, classifier, splits, features, labels, curve, baselines, metric, heatmap_texts) -> dict:
    import fsspec

    from .neuron import unit_trace
    from .plots import plot_data_efficiency, plot_unit_heatmap, plot_unit_histogram, unit_heatmap_html

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
    plot_unit_histogram(values, groups, unit, join(PLOT_FILES["unit_histogram"]), title=f"Unit {unit} on the {split} set")
    files["unit_histogram"] = PLOT_FILES["unit_histogram"]
    if curve:
        references = {f"TF-IDF baseline (all {len(splits['train'])})": baselines["tfidf"]["test_accuracy"]} if baselines.get("tfidf", {}).get("test_accuracy") is not None else {}
        if any(point["test_accuracy"] is not None for point in curve):
            plot_data_efficiency([p for p in curve if p["test_accuracy"] is not None], join(PLOT_FILES["data_efficiency"]), references, metric)
            files["data_efficiency"] = PLOT_FILES["data_efficiency"]
    if heatmap_texts > 0:
        texts = _sample_texts(splits[split].texts, groups, heatmap_texts)
        traces = [unit_trace(featurizer.language_model_, text, unit, preprocess=featurizer.preprocess, max_bytes=400) for text in texts]
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


def _version() -> str:
    import bytezoo

    return bytezoo.__version__


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


__all__ = ["run_transfer", "REPORT_SCHEMA_VERSION"]
