"""`bytezoo finetune`'s comparison: fine-tuning beside the majority class, TF-IDF and the frozen probe at the same
label counts, on the rows `bytezoo transfer`'s comparison draws (training_subset), in report.json, a table and a plot."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bytezoo.cli import main as bytezoo_main
from bytezoo.finetune import compare as finetune_compare
from bytezoo.finetune import trainer
from bytezoo.transfer import comparison as compare
from bytezoo.transfer.baseline import tfidf_baseline
from bytezoo.data.labelled import read_dataset

from finetune_task import common
from hub_cards import assert_card_shows_the_comparison


def test_label_counts_fine_tune_once_per_count_on_transfers_draws(finetune_task, tmp_path, capsys):
    output = tmp_path / "cmp"
    code = bytezoo_main(common(finetune_task, output, "--test", str(finetune_task["test"]), "--epochs", "2", "--label-counts", "20",
                               "48", "all", "--compare-probe"))
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads((output / "report.json").read_text())
    comparison = report["comparison"]
    assert report["label_counts"] == comparison["n_train"] == [20, 48, 96]
    assert [m["name"] for m in comparison["methods"]] == ["majority", "tfidf", "probe", "finetune"]
    assert comparison["split"] == "test" and comparison["n_eval"] == 40
    assert (output / "comparison.png").stat().st_size > 0
    # one separate run per count: the largest in OUTPUT, the others in label-counts/n-N, each with its own model
    assert [r["output"] for r in report["runs"]] == ["label-counts/n-20", "label-counts/n-48", "."]
    for n, folder in ((20, output / "label-counts" / "n-20"), (48, output / "label-counts" / "n-48"), (96, output)):
        summary = json.loads((folder / "model" / "training_summary.json").read_text())
        assert summary["train_texts"] == n and summary["model"] == str(finetune_task["lm"])
    tuned = next(m for m in comparison["methods"] if m["name"] == "finetune")
    assert [p["accuracy"] for p in tuned["points"]] == [r["test"] for r in report["runs"]]
    assert all(p["stderr"] is not None for p in tuned["points"])
    # TF-IDF and the majority class are fitted on exactly the rows training_subset draws for each count
    train, dev, test = (read_dataset(str(finetune_task[name]), "sentence", ["label"]) for name in ("train", "dev", "test"))
    for n, point in zip([20, 48, 96], comparison["methods"][1]["points"]):
        rows = compare.training_subset(train.labels, n, 0)
        expected = tfidf_baseline([train.texts[i] for i in rows], train.labels[rows], dev.texts, dev.labels,
                                  test.texts, test.labels, random_state=0)
        assert point["accuracy"] == expected["test_accuracy"]
    assert compare.format_table(comparison) in out
    assert_card_shows_the_comparison(output, report)  # the fine-tuned row too, in the hub's model card
    assert "20 labels: " in out and "96 labels: " in out


def test_each_count_fine_tunes_the_training_subset_rows(finetune_task, tmp_path, monkeypatch):
    seen = []

    def fake_run(config):
        seen.append(config)
        n = len(config.train_rows) if config.train_rows is not None else 96
        (tmp_path / "out").mkdir(exist_ok=True)
        return {"problem_type": "single_label_classification", "metric": "accuracy", "model_loaded": "x: loaded",
                "test_metrics": {"accuracy": n / 100}, "best_dev": {"accuracy": 0.5}, "steps": 1, "epochs": 1.0,
                "train_seconds": 1.0, "best_step": 1, "stopped_by": "max_steps", "seconds_per_epoch": 1.0}

    monkeypatch.setattr(trainer, "run", fake_run)
    config = trainer.FinetuneConfig(train=str(finetune_task["train"]), dev=str(finetune_task["dev"]), test=str(finetune_task["test"]),
                                    output=str(tmp_path / "out"), model=str(finetune_task["lm"]), seed=3)
    report = finetune_compare.run_comparison(config, [10, 200, 30], baseline="none", log=lambda _: None)
    labels = read_dataset(str(finetune_task["train"]), None, None).labels
    assert [len(c.train_rows or range(96)) for c in seen] == [96, 30, 10]  # the largest (all rows) first, in OUTPUT
    assert seen[0].train_rows is None and seen[0].output == str(tmp_path / "out")
    for config_seen in seen[1:]:
        n = len(config_seen.train_rows)
        assert config_seen.train_rows == compare.training_subset(labels, n, 3).tolist()
        assert config_seen.output == str(tmp_path / "out" / "label-counts" / f"n-{n}")
    assert [m["name"] for m in report["comparison"]["methods"]] == ["majority", "finetune"]
    assert [p["accuracy"] for p in report["comparison"]["methods"][1]["points"]] == [0.1, 0.3, 0.96]


def test_the_default_is_one_run_on_all_labels_with_its_report(finetune_task, tmp_path, capsys):
    output = tmp_path / "one"
    assert bytezoo_main(common(finetune_task, output, "--test", str(finetune_task["test"]), "--max-steps", "2")) == 0
    out = capsys.readouterr().out
    report = json.loads((output / "report.json").read_text())
    assert report["comparison"]["n_train"] == [96] and not (output / "label-counts").exists()
    assert [m["name"] for m in report["comparison"]["methods"]] == ["majority", "tfidf", "finetune"]
    assert out.count("2 steps (") == 1 and "model in " in out
    # a second run into the folder is refused; --overwrite replaces the run and its comparison
    capsys.readouterr()
    assert bytezoo_main(common(finetune_task, output, "--test", str(finetune_task["test"]), "--max-steps", "2")) == 2
    assert bytezoo_main(common(finetune_task, output, "--test", str(finetune_task["test"]), "--max-steps", "2", "--label-counts", "30",
                               "all", "--baseline", "none", "--overwrite")) == 0
    assert (output / "label-counts" / "n-30" / "model").is_dir()
    assert bytezoo_main(common(finetune_task, output, "--test", str(finetune_task["test"]), "--max-steps", "2", "--overwrite")) == 0
    assert not (output / "label-counts").exists()


def test_without_a_test_split_there_is_nothing_to_compare(finetune_task, tmp_path):
    output = tmp_path / "notest"
    assert bytezoo_main(common(finetune_task, output, "--max-steps", "1")) == 0
    report = json.loads((output / "report.json").read_text())
    assert report["comparison"]["methods"] == [] and "no test split" in report["comparison"]["note"]
    assert report["files"]["plot"] is None


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_label_count_is_refused_in_one_line(finetune_task, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as stopped:
        bytezoo_main(common(finetune_task, tmp_path / "bad", "--label-counts", value))
    assert stopped.value.code == 2
    assert "--label-counts" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert finetune_compare.resolve_counts(["all", 5, 500], 96) == [5, 96]
    assert np.all(np.diff(finetune_compare.resolve_counts([50, 10], 96)) > 0)
