"""Honest comparisons: every method's test score at the same numbers of training labels, on the same draws.

A transfer report's ``comparison`` holds one list of label counts and, for each method, a point at each of them::

    {"split": "test", "metric": "accuracy", "n_eval": 378, "n_train": [10, 19, 37, 73, 142, 480],
     "draws": {"seed": 0, "stratified": true, "repeats": 1}, "note": "...",
     "methods": [{"name": "majority", "label": "majority class", "constant": true,
                  "points": [{"n_train": 10, "accuracy": 0.653, "stderr": null, "class": "positive"}, ...]},
                 {"name": "tfidf", "label": "TF-IDF word 1-2grams + L2 LR", "points": [{..., "C": 4.0}, ...]},
                 {"name": "probe", "label": "frozen mlstm features + L1 LR", "points": [...]}]}

The ``n_train`` rows of each point are the same rows for every method: :func:`training_subset` draws them (stratified
where every class can be represented, seeded). A later method, fine-tuning say, draws its subsets with the same
function and seed and joins with :func:`add_method`; :func:`format_table` and
:func:`~bytezoo.transfer.plots.plot_comparison` then show it beside the others. ``accuracy`` is the task's metric
(Jaccard for multi-label tasks) on ``split``; ``stderr`` is the standard error of that figure from the finite test
set alone, sqrt(p (1 - p) / n_eval) (accuracy only): the draw of training rows adds more.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from bytezoo.errors import InvalidArgumentError
from bytezoo.report_tables import comparison_cells

from .metrics import task_score

MAJORITY, TFIDF, PROBE = "majority", "tfidf", "probe"


def curve_sizes(n_train: int, n_classes: int, points: int) -> list[int]:
    """``points`` training-set sizes, evenly spaced in log from ``max(10, 2 * n_classes)`` to all of them."""
    smallest = min(n_train, max(10, 2 * n_classes))
    if points <= 1 or smallest >= n_train:
        return [n_train]
    return sorted({int(round(size)) for size in np.geomspace(smallest, n_train, points)})


def training_subset(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` training rows, stratified where every class can be represented; all rows when
    ``size`` reaches the training set. The same ``(y, size, seed)`` gives the same rows to every method."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
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


def held_out_rows(y: np.ndarray, task: str, dev_fraction: float, seed) -> tuple[np.ndarray, np.ndarray]:
    """``(fit rows, dev rows)``: the ``dev_fraction`` of the training rows that chooses C when no dev set is given,
    stratified where every class can be on both sides (as scikit-learn sizes the split). The probe
    (:class:`~bytezoo.transfer.classifier.SparseLogisticClassifier`) and the TF-IDF baseline hold out the same rows
    for the same ``seed``."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    stratify = None
    if task != "multilabel":
        counts = np.unique(y, return_counts=True)[1]
        n_dev = int(np.ceil(dev_fraction * len(y)))
        if counts.min() >= 2 and min(n_dev, len(y) - n_dev) >= len(counts):
            stratify = y
    return train_test_split(np.arange(len(y)), test_size=dev_fraction, random_state=seed, stratify=stratify)


def majority_point(task: str, y_train: np.ndarray, y_eval: np.ndarray) -> dict:
    """The score of always predicting the training labels' most frequent class (multi-label: each label's most
    frequent value), with the class it predicts."""
    y_train, y_eval = np.asarray(y_train), np.asarray(y_eval)
    if task == "multilabel":
        constant = (2 * y_train.sum(axis=0) > len(y_train)).astype(y_eval.dtype)
        predicted, shown = np.tile(constant, (len(y_eval), 1)), constant.tolist()
    else:
        classes, counts = np.unique(y_train, return_counts=True)
        shown = classes[int(np.argmax(counts))]  # ties: the first class in sorted order
        predicted = np.full(len(y_eval), shown, dtype=y_eval.dtype)
        shown = shown.item() if isinstance(shown, np.generic) else shown
    return {"accuracy": task_score(task, y_eval, predicted), "class": shown}


def standard_error(score: float | None, n_eval: int | None, metric: str) -> float | None:
    """sqrt(p (1 - p) / n) for an accuracy on ``n_eval`` texts; ``None`` for other metrics."""
    if score is None or not n_eval or metric != "accuracy":
        return None
    return math.sqrt(score * (1.0 - score) / n_eval)


def new_comparison(split: str | None, metric: str, n_eval: int | None, n_train: Sequence[int], seed: int) -> dict:
    """An empty comparison over ``n_train`` label counts, its accuracies measured on ``split``."""
    note = ("every method is fitted on the same rows at each label count (the last: all training labels); "
            "stderr is the test set's sampling error only") if split else "no test split: nothing to compare on"
    return {"split": split, "metric": metric, "n_eval": n_eval, "n_train": [int(n) for n in n_train],
            "draws": {"seed": int(seed), "stratified": True, "repeats": 1}, "note": note, "methods": []}


def add_method(comparison: dict, name: str, label: str, points: Iterable[dict], **fields) -> dict:
    """Add a method (its ``points``: ``{"n_train", "accuracy", ...}`` dicts) to ``comparison``; its label counts must
    be the comparison's, so that every curve is read at the same numbers of labels. ``stderr`` is filled in where
    missing. Returns the method."""
    points = sorted((dict(point) for point in points), key=lambda point: point["n_train"])
    if [point["n_train"] for point in points] != comparison["n_train"]:
        raise InvalidArgumentError(f"method {name!r} has points at {[p['n_train'] for p in points]} labels; the "
                                   f"comparison's methods are measured at {comparison['n_train']}")
    if any(method["name"] == name for method in comparison["methods"]):
        raise InvalidArgumentError(f"the comparison already has a method named {name!r}")
    for point in points:
        point.setdefault("stderr", standard_error(point.get("accuracy"), comparison["n_eval"], comparison["metric"]))
    method = {"name": name, "label": label, **fields, "points": points}
    comparison["methods"].append(method)
    return method


def format_table(comparison: dict) -> str:
    """The comparison as a text table: one row per method, one column per label count (scores in %)."""
    cells = comparison_cells(comparison)
    if cells is None:
        return f"comparison: {(comparison or {}).get('note', 'none')}"
    width = max(len(label) for label, _ in cells["rows"])
    widths = [max(6, len(f"{n:,}")) for n in cells["columns"]]
    lines = [cells["caption"],
             f"  {'labels':<{width}}  " + "  ".join(f"{n:>{w},}" for n, w in zip(cells["columns"], widths))]
    lines += [f"  {label:<{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, widths))
              for label, values in cells["rows"]]
    if cells["footnote"]:
        lines.append(f"  {cells['footnote']}")
    return "\n".join(lines)


__all__ = ["MAJORITY", "PROBE", "TFIDF", "add_method", "report_json_default", "curve_sizes", "format_table",
           "held_out_rows", "majority_point", "new_comparison", "standard_error", "training_subset"]


def report_json_default(value):
    """``json.dump``'s ``default`` for reports: numpy scalars and arrays as numbers and lists, anything else as text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)

