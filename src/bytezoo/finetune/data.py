"""The labelled data of a fine-tuning run: reading and checking the splits, encoding labels, the batches of an epoch,
and the evaluation metrics.

Texts are read with :func:`bytezoo.transfer.data.read_dataset` (CSV, TSV, JSON lines, any fsspec URL) and given to the
model as their UTF-8 bytes, exactly as the byte tokenizer encodes them, so a fine-tuned model served through
``transformers.pipeline`` reads what it was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bytezoo.errors import ByteZooError

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
GROUP_BATCHES = 50  # batches per length-sorted group: little padding, while the order stays random between groups


class FinetuneError(ByteZooError, ValueError):
    """A fine-tuning run that cannot start as asked (data, labels, model, options): the message names what is wrong."""


@dataclass
class Split:
    """One split as the model reads it: ``encoded`` UTF-8 bytes per text, ``labels`` class indices (n,) int64,
    0/1 rows (n, k) float32, or values (n,) float32."""

    name: str
    source: str
    encoded: list[bytes]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.encoded)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(item) for item in self.encoded), dtype=np.int64, count=len(self.encoded))


@dataclass
class Task:
    """What the head predicts: ``problem_type`` (transformers' names), ``label_names`` (classes in index order;
    multi-label: the label columns; regression: the column)."""

    problem_type: str
    label_names: list[str]
    label_cols: list[str]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _class_order(names) -> list[str]:
    """Classes in a stable order: numerically when every name is a number ("2" before "10"), else alphabetically."""
    names = sorted(set(names))
    try:
        return sorted(names, key=float)
    except ValueError:
        return names


def _read(path: str, split: str, text_col: str | None, label_cols: list[str] | None):
    from bytezoo.transfer.data import read_dataset

    try:
        return read_dataset(path, text_col, label_cols)
    except ValueError as error:  # DatasetError: names the file, row and column
        raise FinetuneError(f"--{split} {error}") from None


def _encode(texts: list[str], max_bytes: int | None) -> list[bytes]:
    encoded = [text.encode("utf-8", errors="surrogateescape") for text in texts]  # what ByteTokenizer reads
    return [item[:max_bytes] for item in encoded] if max_bytes else encoded


def load_task(train: str, dev: str | None = None, test: str | None = None, *, text_col: str | None = None,
              label_cols: list[str] | None = None, problem_type: str | None = None, num_labels: int | None = None,
              label_names: list[str] | None = None, max_bytes: int | None = None) -> tuple[Task, dict[str, Split]]:
    """Reads and checks the splits, before any model exists.

    Args:
        problem_type: ``None`` = single-label with one label column, multi-label with several; ``"regression"`` reads
            numbers.
        num_labels: when given, must agree with the data (the classes of a single label column, the label columns).
        label_names: the classes of a classifier being fine-tuned further: the data's classes must be among them, and
            keep their indices.

    Raises:
        FinetuneError: a file or column that cannot be read, a label column with one class (or a multi-label column
            that never varies), ``num_labels`` or ``label_names`` that disagree with the data, a dev or test label
            that training never sees; each in one line naming the file, column and values.
    """
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise FinetuneError(f"--problem-type {problem_type!r}; choose one of {', '.join(PROBLEM_TYPES)}")
    data = {"train": _read(train, "train", text_col, label_cols)}  # the task is read from the training split
    first = data["train"]
    columns = list(first.label_cols)
    if problem_type is None:
        problem_type = "multi_label_classification" if len(columns) > 1 else "single_label_classification"
    if problem_type != "multi_label_classification" and len(columns) > 1:
        raise FinetuneError(f"--problem-type {problem_type} takes one label column; got {columns} (several columns "
                            "are a multi-label task)")

    if problem_type == "single_label_classification":
        classes = _class_order(first.labels.tolist())
        if len(classes) < 2:
            raise FinetuneError(f"--train {first.source}: the label column {columns[0]!r} holds one class "
                                f"({classes[0]!r}) in all {len(first)} rows; a classifier needs at least two")
        if label_names is not None:
            unknown = [name for name in classes if name not in label_names]
            if unknown:
                raise FinetuneError(f"--train {first.source}: labels {unknown} are not classes of the model being "
                                    f"fine-tuned further ({label_names})")
            classes = list(label_names)
        task = Task(problem_type, classes, columns)
    elif problem_type == "multi_label_classification":
        if not first.multilabel:
            raise FinetuneError("--problem-type multi_label_classification needs several 0/1 label columns; "
                                f"got {columns}")
        constant = [(name, int(first.labels[0, index])) for index, name in enumerate(columns)
                    if (first.labels[:, index] == first.labels[0, index]).all()]
        if constant:
            name, value = constant[0]
            raise FinetuneError(f"--train {first.source}: the label column {name!r} holds one class ({value}) in all "
                                f"{len(first)} rows; drop it or add examples of both")
        task = Task(problem_type, columns, columns)
    else:
        task = Task(problem_type, columns, columns)
    if num_labels is not None and num_labels != task.num_labels:
        what = {"single_label_classification": f"{len(task.label_names)} classes {task.label_names}",
                "multi_label_classification": f"{len(columns)} label columns {columns}",
                "regression": "one value per text"}[problem_type]
        raise FinetuneError(f"--num-labels {num_labels} disagrees with --train {first.source}, whose "
                            f"{'labels hold' if problem_type != 'regression' else 'task has'} {what}")

    for split, path in (("dev", dev), ("test", test)):
        if path is not None:
            data[split] = _read(path, split, first.text_col, first.label_cols)
    splits = {}
    for split, labelled in data.items():
        splits[split] = Split(split, labelled.source, _encode(labelled.texts, max_bytes),
                              _encode_labels(task, labelled, split))
    return task, splits


def _encode_labels(task: Task, labelled, split: str) -> np.ndarray:
    if task.problem_type == "multi_label_classification":
        if labelled.labels.shape[1] != len(task.label_names):
            raise FinetuneError(f"--{split} {labelled.source}: {labelled.labels.shape[1]} label columns, train has "
                                f"{len(task.label_names)}")
        return labelled.labels.astype(np.float32)
    if task.problem_type == "regression":
        values = []
        for row, value in zip(labelled.rows, labelled.labels.tolist()):
            try:
                values.append(float(value))
            except ValueError:
                raise FinetuneError(f"--{split} {labelled.source}, row {row}, column {task.label_cols[0]!r}: "
                                    f"regression needs a number; got {value!r}") from None
        return np.asarray(values, dtype=np.float32)
    index = {name: i for i, name in enumerate(task.label_names)}
    encoded = np.empty(len(labelled), dtype=np.int64)
    for position, (row, value) in enumerate(zip(labelled.rows, labelled.labels.tolist())):
        if value not in index:
            raise FinetuneError(f"--{split} {labelled.source}, row {row}, column {task.label_cols[0]!r}: "
                                f"label {value!r} never occurs in --train (classes {task.label_names})")
        encoded[position] = index[value]
    return encoded


def epoch_batches(lengths: np.ndarray, global_batch: int, seed: int, epoch: int) -> np.ndarray:
    """The rows of every global batch of ``epoch``: (steps, global_batch) indices, a pure function of its arguments
    (so a resumed run, and every process, computes the same ones).

    The rows are shuffled; groups of :data:`GROUP_BATCHES` batches are then sorted by length (longest first) so that a
    batch holds texts of similar length and little padding is read, and the batches are shuffled again. The last batch
    is filled with rows from the start of the epoch's order, so every batch is full and every process gets ``B`` rows.
    """
    count = len(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(count)
    steps = -(-count // global_batch)
    order = np.resize(order, steps * global_batch)  # wraps around: the last batch is completed from the start
    group = GROUP_BATCHES * global_batch
    for start in range(0, len(order), group):
        segment = order[start : start + group]
        order[start : start + group] = segment[np.argsort(-lengths[segment], kind="stable")]
    batches = order.reshape(steps, global_batch)
    return batches[rng.permutation(steps)]


def collate(split: Split, rows: np.ndarray, pad_id: int = 256):
    """``(input_ids, attention_mask, labels)`` tensors of ``rows``, right-padded with ``pad_id`` (never looked up:
    the mask holds the state there). An empty text reads one padding byte."""
    import torch

    width = max(1, max(len(split.encoded[row]) for row in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for position, row in enumerate(rows):
        item = split.encoded[row]
        if item:
            ids[position, : len(item)] = torch.frombuffer(bytearray(item), dtype=torch.uint8)
            mask[position, : len(item)] = 1
    labels = torch.from_numpy(split.labels[rows])
    return ids, mask, labels


# --- metrics: sufficient statistics that add up across processes, then the figures ---------------------------------
def statistics_size(task: Task) -> int:
    k = task.num_labels
    if task.problem_type == "single_label_classification":
        return 2 + k * k  # loss sum, count, confusion matrix
    if task.problem_type == "multi_label_classification":
        return 4 + 3 * k  # loss sum, count, exact matches, jaccard sum, per column tp fp fn
    return 4  # loss sum, count, squared error sum, absolute error sum


def batch_statistics(task: Task, logits, labels, loss_sum):
    """A float64 vector of :func:`statistics_size` sums for one batch (add them up, then :func:`metrics`)."""
    import torch

    stats = torch.zeros(statistics_size(task), dtype=torch.float64)
    stats[0], stats[1] = float(loss_sum), float(len(labels))
    logits = logits.float().cpu()
    if task.problem_type == "single_label_classification":
        k = task.num_labels
        predicted = logits.argmax(-1)
        stats[2:] += torch.bincount(labels.long() * k + predicted, minlength=k * k).double()
    elif task.problem_type == "multi_label_classification":
        predicted = logits > 0
        truth = labels.bool()
        stats[2] = float((predicted == truth).all(-1).sum())
        union = (predicted | truth).sum(-1)
        stats[3] = float(torch.where(union > 0, (predicted & truth).sum(-1) / union.clamp(min=1),
                                     torch.ones(len(labels))).sum())
        k = task.num_labels
        stats[4 : 4 + k] = (predicted & truth).sum(0).double()
        stats[4 + k : 4 + 2 * k] = (predicted & ~truth).sum(0).double()
        stats[4 + 2 * k :] = (~predicted & truth).sum(0).double()
    else:
        error = logits.view(-1) - labels.float().view(-1)
        stats[2], stats[3] = float((error**2).sum()), float(error.abs().sum())
    return stats


def _f1(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def metrics(task: Task, stats) -> dict[str, float]:
    """The figures of summed statistics: loss and accuracy and macro-F1 (single label; binary also F1 of the second
    class), Jaccard (per text, as SemEval's "accuracy" and ``bytezoo transfer``), micro- and macro-F1 and exact
    match (multi-label), RMSE and MAE (regression)."""
    stats = np.asarray(stats, dtype=np.float64)
    count = max(stats[1], 1.0)
    result = {"loss": stats[0] / count, "examples": int(stats[1])}
    k = task.num_labels
    if task.problem_type == "single_label_classification":
        confusion = stats[2:].reshape(k, k)  # rows: truth, columns: prediction
        tp = np.diag(confusion)
        f1 = _f1(tp, confusion.sum(0) - tp, confusion.sum(1) - tp)
        result.update(accuracy=float(tp.sum() / count), macro_f1=float(f1.mean()))
        if k == 2:
            result["f1"] = float(f1[1])
    elif task.problem_type == "multi_label_classification":
        tp, fp, fn = stats[4 : 4 + k], stats[4 + k : 4 + 2 * k], stats[4 + 2 * k :]
        result.update(jaccard=float(stats[3] / count), exact_match=float(stats[2] / count),
                      micro_f1=float(_f1(tp.sum(), fp.sum(), fn.sum())), macro_f1=float(_f1(tp, fp, fn).mean()))
    else:
        result.update(rmse=float(np.sqrt(stats[2] / count)), mae=float(stats[3] / count))
    return result


def primary_metric(task: Task) -> tuple[str, bool]:
    """The metric early stopping and the best checkpoint follow, and whether higher is better."""
    return {"single_label_classification": ("accuracy", True), "multi_label_classification": ("jaccard", True),
            "regression": ("rmse", False)}[task.problem_type]


__all__ = ["FinetuneError", "Split", "Task", "load_task", "epoch_batches", "collate", "batch_statistics", "metrics",
           "primary_metric", "statistics_size"]
