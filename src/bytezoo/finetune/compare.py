"""Fine-tuning beside the baselines, at the same numbers of labels on the same rows: what ``bytezoo finetune`` reports.

:func:`run_comparison` runs one fine-tuning per label count, each from the same starting model (``config.model``) on
the rows :func:`bytezoo.transfer.comparison.training_subset` draws for that count (the draws ``bytezoo transfer``'s
comparison uses: same function, same seed, same labels as read by :func:`bytezoo.data.labelled.read_dataset`), and
measures on the same rows the majority class, the TF-IDF baseline (:func:`bytezoo.transfer.baseline.tfidf_baseline`)
and, with ``compare_probe``, the frozen L1 probe (:class:`~bytezoo.transfer.Featurizer` +
:class:`~bytezoo.transfer.classifier.SparseLogisticClassifier`). The methods join one comparison with
:func:`~bytezoo.transfer.comparison.add_method`; it is printed with :func:`~bytezoo.transfer.comparison.format_table`,
drawn with :func:`~bytezoo.transfer.plots.plot_comparison` and saved in ``OUTPUT/report.json``.

Folders: the largest count is fine-tuned in ``OUTPUT`` itself (``OUTPUT/model`` is the model trained on the most
labels; with the default, one count = all labels, the folder is exactly a plain ``bytezoo finetune`` run's), every
smaller count in ``OUTPUT/label-counts/n-COUNT/`` (a complete run folder of its own, model included).

``OUTPUT/report.json`` (schema_version 1)::

    {"schema_version": 1, "bytezoo_version": str, "created": str, "model": str, "task": "binary" | "multiclass" |
     "multilabel", "metric": "accuracy" | "jaccard", "label_counts": [int],
     "runs": [{"n_train": int, "output": str (relative to OUTPUT), "steps": int, "epochs": float,
               "best_step": int | null, "stopped_by": str, "ended": str, "exit_code": int,
               "not_bit_reproducible_because": str | null,
               "train_seconds": float, "seconds_per_epoch": float, "dev": float | null, "test": float | null}],
     "comparison": {... bytezoo.transfer.comparison's format: majority, tfidf, [probe,] finetune ...},
     "timings": {"finetune_s", "baselines_s", "probe_s", "total_s"},
     "files": {"report": "report.json", "plot": "comparison.png" | null}}

The fine-tuning points carry ``dev_accuracy`` (the best dev evaluation, which chose the exported weights), ``steps``,
``epochs`` and ``train_seconds``. A regression task, or no ``--test``, has no comparison (its ``note`` says so).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bytezoo import __version__
from bytezoo.transfer import comparison as compare
from bytezoo.untrusted import jsonio

from .data import FinetuneError
from .outputs import PLOT_FILE, REPORT_FILE, SUBRUNS

FINETUNE = "finetune"
ALL = "all"

Log = Callable[[str], Any]


def parse_label_count(text: str) -> int | str:
    """``--label-counts`` values: a positive integer, or ``all``."""
    if str(text).lower() == ALL:
        return ALL
    try:
        value = int(text)
    except ValueError:
        raise FinetuneError(f"--label-counts: {text!r} is neither a number of labels nor 'all'") from None
    if value < 1:
        raise FinetuneError(f"--label-counts: {value} labels; each count must be >= 1")
    return value


def resolve_counts(counts: Sequence[int | str] | None, n_train: int) -> list[int]:
    """The label counts to measure, ascending and distinct; ``all`` (and any count beyond the training set) is every
    training row. ``None`` or empty: all labels only."""
    resolved = sorted({n_train if count == ALL else min(int(count), n_train) for count in (counts or [ALL])})
    return resolved


def run_comparison(config, label_counts: Sequence[int | str] | None = None, *, baseline: str = "tfidf",
                   compare_probe: bool = False, log: Log = print) -> dict:
    """Fine-tune ``config`` (a :class:`~bytezoo.finetune.FinetuneConfig`) at each of ``label_counts`` and compare it
    with the majority class, TF-IDF (unless ``baseline="none"``) and, with ``compare_probe``, the frozen L1 probe, at
    the same counts on the same rows. Writes ``OUTPUT/report.json`` (and ``comparison.png``) on the main process;
    returns the report."""
    from bytezoo.transfer.metrics import task_of

    from .data import _read  # read_dataset, its errors as the trainer words them (--train FILE: ...)

    started = time.perf_counter()
    if baseline not in ("tfidf", "none"):
        raise FinetuneError(f"--baseline must be tfidf or none (got {baseline!r})")
    output = Path(config.output)
    counts_given = label_counts is not None and len(label_counts) > 0
    if config.resume and counts_given and len(set(label_counts)) > 1:
        raise FinetuneError("--resume continues one run; with several --label-counts resume each run folder on its own")
    if config.train_rows is not None:
        raise FinetuneError("train_rows is chosen by the comparison (training_subset); leave it unset")
    if compare_probe:
        from bytezoo.zoo import is_model

        if is_model(config.model):
            raise FinetuneError(f"--compare-probe featurizes --model's checkpoint, and {config.model!r} is a preset "
                                "(random weights, nothing saved): give a pretrained checkpoint, or drop "
                                "--compare-probe")
    # The labels as bytezoo transfer reads them (read_dataset): the draws depend on them, so both commands draw the
    # same rows. dev and test are read after the runs, which check every split first and name what is wrong.
    train = _read(config.train, "train", config.text_col, config.label_cols)
    counts = resolve_counts(label_counts, len(train))
    main = int(os.environ.get("RANK", "0") or 0) == 0

    # Fine-tuning: the largest count in OUTPUT first. A folder holding another run, or an earlier comparison, is
    # refused before any other work, and --overwrite replaces both (bytezoo.finetune.outputs).
    tick = time.perf_counter()
    runs = fine_tune_each_count(config, train.labels, counts, log)
    timings = {"finetune_s": time.perf_counter() - tick}
    stopped = max(summary.get("exit_code", 0) for _, _, summary in runs)  # 130 / 143: a signal stopped the last run
    if not main or stopped:  # a run stopped by a signal: no comparison, the command ends with its code
        return {"metric": runs[0][2]["metric"], "runs": run_entries(runs, output, runs[0][2]["metric"]),
                "exit_code": stopped} if main else {"exit_code": stopped}
    dev = _read(config.dev, "dev", train.text_col, train.label_cols) if config.dev else None
    test = _read(config.test, "test", train.text_col, train.label_cols) if config.test else None

    problem = runs[0][2]["problem_type"]
    metric = runs[0][2]["metric"]
    comparable = test is not None and problem != "regression"
    task = task_of(train.labels) if problem != "regression" else "regression"
    comparison = compare.new_comparison("test" if comparable else None, metric,
                                        len(test) if comparable else None, counts if comparable else [], config.seed)
    if not comparable:
        comparison["note"] = ("no test split: nothing to compare on" if test is None
                              else "regression: the baselines are classifiers, nothing to compare")
    tick = time.perf_counter()
    if comparable:
        add_baselines(comparison, task, train, dev, test, counts, baseline, config.seed)
    timings["baselines_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    if comparable and compare_probe:
        probe = probe_points(config, train, dev, test, counts, log, pooling=runs[0][2]["classifier_pooling"])
        model_type = _model_type(output / "model")
        compare.add_method(comparison, compare.PROBE, f"frozen {model_type} features + L1 LR", probe)
    timings["probe_s"] = time.perf_counter() - tick

    if comparable:
        add_fine_tuning(comparison, runs, metric, config)

    plot = None
    if comparable and comparison["methods"]:
        from bytezoo.transfer.plots import plot_comparison

        output.mkdir(parents=True, exist_ok=True)
        plot_comparison(comparison, str(output / PLOT_FILE))
        plot = PLOT_FILE
    timings["total_s"] = time.perf_counter() - started
    report = {
        "schema_version": 1,
        "bytezoo_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": config.model,
        "task": task,
        "metric": metric,
        "label_counts": counts,
        "runs": run_entries(runs, output, metric),
        "comparison": comparison,
        "timings": timings,
        "files": {"report": REPORT_FILE, "plot": plot},
    }
    text = jsonio.dumps(report, indent=2, default=compare.report_json_default)
    temporary = output / f".{REPORT_FILE}.tmp"
    temporary.write_text(text + "\n")
    temporary.replace(output / REPORT_FILE)
    log(compare.format_table(comparison))
    log(f"wrote {output / REPORT_FILE}" + (f" and {output / plot}" if plot else ""))
    return {**report, "exit_code": 0}


def run_entries(runs: list[tuple], output: Path, metric: str) -> list[dict]:
    """The report's line per fine-tuning run, ascending counts."""
    return [{"n_train": n, "output": os.path.relpath(folder, output), "steps": s["steps"], "epochs": s["epochs"],
             "best_step": s["best_step"], "stopped_by": s["stopped_by"], "ended": s.get("ended"),
             "exit_code": s.get("exit_code", 0), "not_bit_reproducible_because": s.get("not_bit_reproducible_because"),
             "train_seconds": s["train_seconds"], "seconds_per_epoch": s["seconds_per_epoch"],
             "dev": (s.get("best_dev") or {}).get(metric), "test": (s.get("test_metrics") or {}).get(metric)}
            for n, folder, s in sorted(runs, key=lambda run_: run_[0])]


def fine_tune_each_count(config, labels: np.ndarray, counts: list[int], log: Log) -> list[tuple]:
    """One fine-tuning per label count on :func:`~bytezoo.transfer.comparison.training_subset`'s rows, the largest
    in ``config.output`` first, the others in ``OUTPUT/label-counts/n-COUNT``: ``[(count, folder, summary)]``."""
    from .trainer import run

    output, runs = Path(config.output), []
    for n in sorted(counts, reverse=True):
        rows = compare.training_subset(labels, n, config.seed)
        folder = output if n == counts[-1] else output / SUBRUNS / f"n-{n}"
        if len(counts) > 1:
            log(f"--- fine-tuning on {n:,} of {len(labels):,} labels ({folder}) ---")
        subset = None if n >= len(labels) else [int(i) for i in rows]
        summary = run(dataclasses.replace(config, output=str(folder), train_rows=subset))
        runs.append((n, folder, summary))
        if summary.get("exit_code"):  # Ctrl-C or SIGTERM: no further run
            break
    return runs


def add_baselines(comparison: dict, task: str, train, dev, test, counts: list[int], baseline: str, seed: int) -> None:
    """The majority class and (``baseline="tfidf"``) TF-IDF at each count, fitted on the same rows."""
    majority, tfidf = [], []
    for n in counts:
        rows = compare.training_subset(train.labels, n, seed)
        majority.append({"n_train": n, **compare.majority_point(task, train.labels[rows], test.labels)})
        if baseline == "tfidf":
            tfidf.append({"n_train": n, **tfidf_point(train, dev, test, rows, seed)})
    compare.add_method(comparison, compare.MAJORITY, "majority class", majority, constant=True)
    if tfidf:
        compare.add_method(comparison, compare.TFIDF, "TF-IDF word 1-2grams + L2 LR", tfidf)


def add_fine_tuning(comparison: dict, runs: list[tuple], metric: str, config) -> None:
    """The fine-tuned models' test scores, one point per count."""
    points = []
    for n, _, summary in sorted(runs, key=lambda run_: run_[0]):
        test_figures, best = summary.get("test_metrics") or {}, summary.get("best_dev") or {}
        points.append({"n_train": n, "accuracy": test_figures.get(metric), "dev_accuracy": best.get(metric),
                       "steps": summary["steps"], "epochs": summary["epochs"],
                       "train_seconds": summary["train_seconds"]})
    loaded = runs[0][2]["model_loaded"]
    start = ("random init" if "random weights" in loaded else "from a classifier" if "a classifier" in loaded
             else "from the pretrained LM")
    compare.add_method(comparison, FINETUNE, f"fine-tuned ({start}, {_describe_length(config)})", points)


def _describe_length(config) -> str:
    if config.max_steps:
        return f"≤{config.max_steps} steps"
    epochs = config.epochs or 3.0
    return f"≤{epochs:g} epochs" + (", early stopping" if config.dev and config.patience else "")


def tfidf_point(train, dev, test, rows: np.ndarray, seed: int) -> dict:
    """TF-IDF fitted on ``rows``, as ``bytezoo transfer``'s comparison fits it (C chosen on dev)."""
    from bytezoo.transfer.baseline import tfidf_baseline

    try:
        fitted = tfidf_baseline([train.texts[i] for i in rows], train.labels[rows], dev.texts if dev else None,
                                dev.labels if dev else None, test.texts, test.labels, random_state=seed)
    except ValueError as error:  # one class among the rows
        return {"accuracy": None, "error": str(error)}
    return {"accuracy": fitted["test_accuracy"], "C": fitted["C"], "dev_accuracy": fitted["dev_accuracy"]}


def probe_points(config, train, dev, test, counts: list[int], log: Log, pooling: str | None = None) -> list[dict]:
    """The frozen L1 probe at each count: the starting model's features in ``pooling`` (the fine-tuned head's: the
    same feature on both sides of the comparison; ``None``: the model's own) and an L1 logistic regression, C swept on
    dev, fitted on each count's rows."""
    from bytezoo.transfer.classifier import SparseLogisticClassifier
    from bytezoo.transfer.metrics import SingleClassError
    from bytezoo.transfer.featurizer import Featurizer

    featurizer = Featurizer(config.model, pooling=pooling, progress=config.progress).fit()
    pooling = featurizer.pooling_
    features, texts = {}, 0
    for name, split in (("train", train), ("dev", dev), ("test", test)):
        if split is not None:
            features[name] = featurizer.transform(split.texts)
            texts += len(split)
    log(f"probe: {texts:,} texts featurized ({pooling})")
    points = []
    for n in counts:
        rows = compare.training_subset(train.labels, n, config.seed)
        try:
            probe = SparseLogisticClassifier(random_state=config.seed).fit(
                features["train"][rows], train.labels[rows], features.get("dev"), dev.labels if dev else None)
        except SingleClassError as error:  # one class among the rows: no probe at this count
            points.append({"n_train": n, "accuracy": None, "error": str(error)})
            continue
        points.append({"n_train": n, "accuracy": probe.score(features["test"], test.labels), "C": probe.C_,
                       "dev_accuracy": probe.score(features["dev"], dev.labels) if dev else None,
                       "n_nonzero": probe.n_nonzero_})
    return points


def _model_type(model_dir: Path) -> str:
    try:
        return json.loads((model_dir / "config.json").read_text())["model_type"]
    except (OSError, ValueError, KeyError):
        return "LM"


__all__ = ["ALL", "FINETUNE", "PLOT_FILE", "REPORT_FILE", "parse_label_count", "probe_points", "resolve_counts",
           "run_comparison", "tfidf_point"]
