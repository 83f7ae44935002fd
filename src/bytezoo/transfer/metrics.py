"""The figures every stage reports, written once: what task labels make, and how predictions are scored.

``bytezoo transfer`` (the probe's C sweep, the TF-IDF baseline, the majority class, the comparison) scores predicted
labels with :func:`task_score`: accuracy for binary and multi-class tasks, and for multi-label tasks the mean
per-text Jaccard similarity of predicted and true label sets (SemEval-2018 E-c's "accuracy"). ``bytezoo finetune``
sums :func:`batch_statistics` over batches and processes (sufficient statistics: they add up) and reads the figures
with :func:`metrics`: the same accuracy and Jaccard, with macro-F1, micro-F1, exact match, RMSE and MAE.

>>> task_score("binary", np.array(["pos", "neg"]), np.array(["pos", "pos"]))
0.5
>>> task_score("multilabel", np.array([[1, 0], [0, 0]]), np.array([[1, 1], [0, 0]]))  # 1/2 and an empty match: 1
0.75

Only numpy here (torch where a batch's logits are read): ``bytezoo finetune`` uses it without scikit-learn.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from bytezoo.errors import ByteZooError

TASKS = ("binary", "multiclass", "multilabel")  # as task_of names them from the labels


class SingleClassError(ByteZooError, ValueError):
    """Training labels with only one class: nothing to discriminate."""


class HeadTask(Protocol):
    """What a fine-tuned head predicts (:class:`bytezoo.finetune.data.Task`): transformers' ``problem_type``
    (``single_label_classification``, ``multi_label_classification``, ``regression``) and its number of outputs."""

    problem_type: str

    @property
    def num_labels(self) -> int: ...


# --- scores of predicted labels ---------------------------------------------------------------------------------------
def task_of(y: np.ndarray) -> str:
    """``"multilabel"`` for a 0/1 matrix (n, k), else ``"binary"`` or ``"multiclass"`` by the number of classes.

    Raises:
        SingleClassError: labels of a single class.
    """
    y = np.asarray(y)
    if y.ndim == 2:
        return "multilabel"
    classes = np.unique(y)
    if len(classes) < 2:
        raise SingleClassError(f"the training labels hold a single class ({classes.tolist()}); a classifier needs at "
                               "least two")
    return "binary" if len(classes) == 2 else "multiclass"


def jaccard_per_text(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(n,) Jaccard similarity of each text's true and predicted label sets, (n, k) 0/1 each; two empty sets: 1."""
    truth, predicted = np.asarray(truth).astype(bool), np.asarray(predicted).astype(bool)
    union = (truth | predicted).sum(-1)
    return np.where(union > 0, (truth & predicted).sum(-1) / np.maximum(union, 1), 1.0)


def task_score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy (binary, multi-class), or the mean per-text Jaccard (multi-label): the score of ``task``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if task == "multilabel":
        return float(jaccard_per_text(y_true, y_pred).mean())
    return float(np.mean(y_true == y_pred))


def f1(tp, fp, fn):
    """F1 of true positive, false positive and false negative counts (arrays: per class); 0 where all are 0."""
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


# --- sufficient statistics of a fine-tuned head, summed over batches and processes ------------------------------------
def statistics_size(task: HeadTask) -> int:
    k = task.num_labels
    if task.problem_type == "single_label_classification":
        return 2 + k * k  # loss sum, count, confusion matrix
    if task.problem_type == "multi_label_classification":
        return 4 + 3 * k  # loss sum, count, exact matches, jaccard sum, per column tp fp fn
    return 4  # loss sum, count, squared error sum, absolute error sum


def batch_statistics(task: HeadTask, logits, labels, loss_sum):
    """A float64 tensor of :func:`statistics_size` sums for one batch of ``logits`` (torch, any device) and
    ``labels`` (class indices, 0/1 rows or values; add the sums up, then :func:`metrics`)."""
    import torch

    stats = np.zeros(statistics_size(task), dtype=np.float64)
    stats[0], stats[1] = float(loss_sum), float(len(labels))
    logits = logits.detach().float().cpu()
    labels = labels.detach().cpu().numpy()
    k = task.num_labels
    if task.problem_type == "single_label_classification":
        predicted = logits.argmax(-1).numpy()
        stats[2:] += np.bincount(labels.astype(np.int64) * k + predicted, minlength=k * k)
    elif task.problem_type == "multi_label_classification":
        predicted, truth = (logits > 0).numpy(), labels.astype(bool)
        stats[2] = float((predicted == truth).all(-1).sum())
        stats[3] = float(jaccard_per_text(truth, predicted).sum())
        stats[4 : 4 + k] = (predicted & truth).sum(0)
        stats[4 + k : 4 + 2 * k] = (predicted & ~truth).sum(0)
        stats[4 + 2 * k :] = (~predicted & truth).sum(0)
    else:
        error = logits.reshape(-1).numpy().astype(np.float64) - labels.reshape(-1).astype(np.float64)
        stats[2], stats[3] = float((error**2).sum()), float(np.abs(error).sum())
    return torch.from_numpy(stats)


def metrics(task: HeadTask, stats) -> dict[str, float]:
    """The figures of summed statistics: loss and accuracy and macro-F1 (single label; binary also F1 of the second
    class), Jaccard (per text, as :func:`task_score` and ``bytezoo transfer``), micro- and macro-F1 and exact match
    (multi-label), RMSE and MAE (regression)."""
    stats = np.asarray(stats, dtype=np.float64)
    count = max(stats[1], 1.0)
    result = {"loss": stats[0] / count, "examples": int(stats[1])}
    k = task.num_labels
    if task.problem_type == "single_label_classification":
        confusion = stats[2:].reshape(k, k)  # rows: truth, columns: prediction
        tp = np.diag(confusion)
        per_class = f1(tp, confusion.sum(0) - tp, confusion.sum(1) - tp)
        result.update(accuracy=float(tp.sum() / count), macro_f1=float(per_class.mean()))
        if k == 2:
            result["f1"] = float(per_class[1])
    elif task.problem_type == "multi_label_classification":
        tp, fp, fn = stats[4 : 4 + k], stats[4 + k : 4 + 2 * k], stats[4 + 2 * k :]
        result.update(jaccard=float(stats[3] / count), exact_match=float(stats[2] / count),
                      micro_f1=float(f1(tp.sum(), fp.sum(), fn.sum())), macro_f1=float(f1(tp, fp, fn).mean()))
    else:
        result.update(rmse=float(np.sqrt(stats[2] / count)), mae=float(stats[3] / count))
    return result


def primary_metric(task: HeadTask) -> tuple[str, bool]:
    """The metric early stopping and the best checkpoint follow, and whether higher is better."""
    return {"single_label_classification": ("accuracy", True), "multi_label_classification": ("jaccard", True),
            "regression": ("rmse", False)}[task.problem_type]


__all__ = ["TASKS", "HeadTask", "SingleClassError", "batch_statistics", "f1", "jaccard_per_text", "metrics",
           "primary_metric", "statistics_size", "task_of", "task_score"]
