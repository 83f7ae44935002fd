"""bytezoo.transfer.metrics: the task of a set of labels and its scores, written once for ``bytezoo transfer`` (the
probe, the TF-IDF baseline, the majority class) and ``bytezoo finetune`` (statistics summed over batches and
processes). Checked against scikit-learn's definitions on fresh random labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, mean_absolute_error, mean_squared_error

from bytezoo.finetune.data import Task
from bytezoo.transfer import metrics
from bytezoo.transfer.metrics import SingleClassError, task_of, task_score


def test_the_task_follows_the_labels():
    assert task_of(np.array(["pos", "neg", "pos"], dtype=object)) == "binary"
    assert task_of(np.array(["1", "2", "3"], dtype=object)) == "multiclass"
    assert task_of(np.zeros((3, 2), dtype=np.int64)) == "multilabel"
    with pytest.raises(SingleClassError, match=r"a single class \(\['pos'\]\)"):
        task_of(np.array(["pos", "pos"], dtype=object))
    assert set(metrics.TASKS) == {"binary", "multiclass", "multilabel"}


@pytest.mark.parametrize("seed", range(3))
def test_task_score_is_accuracy_and_samples_jaccard(seed):
    rng = np.random.default_rng(seed)
    classes = np.array(["negative", "neutral", "positive"], dtype=object)
    truth, predicted = classes[rng.integers(0, 3, 50)], classes[rng.integers(0, 3, 50)]
    assert task_score("multiclass", truth, predicted) == pytest.approx(accuracy_score(truth, predicted), abs=1e-15)
    truth, predicted = rng.integers(0, 2, (50, 4)), rng.integers(0, 2, (50, 4))
    truth[:3] = predicted[:3] = 0  # texts with no label, predicted as none: a perfect match
    expected = jaccard_score(truth, predicted, average="samples", zero_division=1.0)
    assert task_score("multilabel", truth, predicted) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="50 true labels but 49 predictions"):
        task_score("multiclass", truth[:, 0], predicted[:-1, 0])


def summed(task: Task, batches) -> dict:
    """The figures of ``batches`` of (logits, labels), summed batch by batch as evaluation sums them."""
    stats = torch.zeros(metrics.statistics_size(task), dtype=torch.float64)
    for logits, labels in batches:
        stats += metrics.batch_statistics(task, logits, labels, loss_sum=0.5 * len(labels))
    return metrics.metrics(task, stats.numpy())


@pytest.mark.parametrize("k", [2, 4])
def test_single_label_figures_add_up_across_batches(k):
    generator = torch.Generator().manual_seed(k)
    logits, labels = torch.randn(60, k, generator=generator), torch.randint(0, k, (60,), generator=generator)
    task = Task("single_label_classification", [str(i) for i in range(k)], ["label"])
    figures = summed(task, [(logits[:25], labels[:25]), (logits[25:], labels[25:])])
    predicted = logits.argmax(-1).numpy()
    assert figures["examples"] == 60 and figures["loss"] == pytest.approx(0.5)
    assert figures["accuracy"] == pytest.approx(accuracy_score(labels.numpy(), predicted), abs=1e-12)
    assert figures["macro_f1"] == pytest.approx(f1_score(labels.numpy(), predicted, average="macro",
                                                         labels=list(range(k)), zero_division=0.0), abs=1e-12)
    if k == 2:
        assert figures["f1"] == pytest.approx(f1_score(labels.numpy(), predicted), abs=1e-12)
    assert metrics.primary_metric(task) == ("accuracy", True)


def test_multi_label_figures_are_transfers_jaccard_and_f1():
    generator = torch.Generator().manual_seed(7)
    logits, labels = torch.randn(40, 3, generator=generator), torch.randint(0, 2, (40, 3), generator=generator)
    task = Task("multi_label_classification", ["a", "b", "c"], ["a", "b", "c"])
    figures = summed(task, [(logits[:16], labels[:16].float()), (logits[16:], labels[16:].float())])
    truth, predicted = labels.numpy(), (logits > 0).long().numpy()
    assert figures["jaccard"] == pytest.approx(task_score("multilabel", truth, predicted), abs=1e-12)
    assert figures["exact_match"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-12)  # subset accuracy
    assert figures["micro_f1"] == pytest.approx(f1_score(truth, predicted, average="micro"), abs=1e-12)
    assert figures["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0.0),
                                                abs=1e-12)
    assert metrics.primary_metric(task) == ("jaccard", True)


def test_regression_figures():
    generator = torch.Generator().manual_seed(3)
    predicted, values = torch.randn(30, 1, generator=generator), torch.randn(30, generator=generator)
    task = Task("regression", ["score"], ["score"])
    figures = summed(task, [(predicted[:10], values[:10]), (predicted[10:], values[10:])])
    assert figures["rmse"] == pytest.approx(mean_squared_error(values, predicted[:, 0]) ** 0.5, rel=1e-5)
    assert figures["mae"] == pytest.approx(mean_absolute_error(values, predicted[:, 0]), rel=1e-5)
    assert metrics.primary_metric(task) == ("rmse", False)
