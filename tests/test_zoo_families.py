"""Every model family through the whole user path, with the defaults a new user meets (one preset per family, at its
registry's test size): ``bytezoo demo --model PRESET`` (pretrain, hub push and pull, transfer with the heatmap) ->
``bytezoo finetune --compare-probe`` -> ``bytezoo classify`` (standard input) -> steered ``bytezoo generate
--pipeline`` (or its one-line refusal where the family has no per-unit state) -> batched ``generate`` from the hub
copy with both padding sides. And pretraining resumes with the family's named state parts."""
from __future__ import annotations

import io
import json
import random
import sys

import numpy as np
import pytest
import torch

import bytezoo
from bytezoo.cli import main
from bytezoo.transfer import SentimentPipeline, generate_steered
from bytezoo.zoo.recurrent_lm import TextPooling, default_pooling
from zoo_presets import assert_batched_generation_equals_one_at_a_time, one_preset_per_family


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng()
    words = ["good", "bad", "plot", "acting", "the", "a", "film", "é", "boring", "great"]
    path = tmp_path_factory.mktemp("corpus") / "reviews.jsonl"
    path.write_text("\n".join(json.dumps({"text": " ".join(rng.choice(words, rng.integers(3, 20)))}) for _ in range(200)) + "\n")
    return path


def write_split(path, rows: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    table = [(" ".join(rng.choice(["good", "great", "fun"] if row % 2 else ["bad", "dull", "poor"]) for _ in range(3)),
              ["neg", "pos"][row % 2]) for row in range(rows)]
    path.write_text("text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in table))
    return table


def tiny(name: str) -> list[str]:
    """``--model-config`` options for the preset's tiny test size, with two layers (the state's layer axis used)."""
    overrides = {**bytezoo.get_model_info(name).test_overrides, "num_layers": 2}
    return [arg for key, value in overrides.items() for arg in ("--model-config", f"{key}={json.dumps(value)}")]


@pytest.mark.parametrize("name", one_preset_per_family())
def test_a_family_pretrains_and_resumes_with_its_named_state(name, corpus, tmp_path):
    run = ["pretrain", "--model", name, *tiny(name), "--data", str(corpus), "--output", str(tmp_path / "run"),
           "--batch-size", "4", "--seq-len", "8", "--save-every", "2", "--no-progress"]
    assert main([*run, "--max-steps", "2"]) == 0
    assert main([*run, "--max-steps", "3", "--resume", "latest"]) == 0  # the saved state parts are read back by name
    summary = json.loads((tmp_path / "run" / "model" / "training_summary.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from"].endswith("step-00000002")


@pytest.mark.parametrize("name", one_preset_per_family())
def test_a_family_goes_through_the_whole_user_path_with_the_defaults(name, corpus, tmp_path, capsys, monkeypatch):
    splits = {split: tmp_path / f"{split}.tsv" for split in ("train", "dev", "test")}
    tables = {split: write_split(path, rows, seed) for (split, path), rows, seed in zip(splits.items(), (24, 8, 8), (1, 2, 3))}
    (tmp_path / "val.txt").write_text("the film was good, the plot was bad\n" * 4)

    # bytezoo demo: pretrain, push to the hub (a repository named after the preset), load back, transfer (defaults)
    demo = tmp_path / "demo"
    assert main(["demo", "--model", name, *tiny(name), "--output", str(demo), "--max-steps", "2", "--batch-size", "4",
                 "--seq-len", "8", "--lm-data", str(corpus), "--lm-val-data", str(tmp_path / "val.txt"),
                 *(arg for split, path in splits.items() for arg in (f"--{split}", str(path))),
                 "--finetune-counts", "--no-progress"]) == 0
    log = capsys.readouterr()
    summary = json.loads((demo / "summary.json").read_text())
    assert summary["hub"]["repository"].endswith(f"/hub/{name}")  # the hub repository is named after the preset
    exported = demo / "pretrain" / "model"
    model = bytezoo.from_pretrained(exported).eval()
    report = json.loads((demo / "transfer" / "report.json").read_text())
    assert report["featurizer"]["pooling"] == default_pooling(model) == summary["transfer"]["pooling"]
    assert set(report["files"]["plots"]) >= {"unit_histogram", "unit_heatmap", "unit_heatmap_html", "data_efficiency"}
    assert "<span" in (demo / "transfer" / "unit_heatmap.html").read_text()
    assert "classes neg, pos" in log.err and "top units: their weights, the classes their higher values favour" in log.err
    top = report["top_units"][0]
    assert set(top["range"]) == set(top["toward"]) == set(top["steer"]) == {"neg", "pos"}
    steering = report["steering"]
    assert steering["unit"] == top["unit"] and steering["state"] == TextPooling(model).unit_state
    assert steering["values"] == top["steer"] and steering["value"] == top["steer"][steering["class"]]

    # bytezoo finetune --compare-probe, no pooling named: the head and the probe read the model's own feature
    finetuned = tmp_path / "finetune"
    assert main(["finetune", "--model", str(exported), *(a for s, p in splits.items() for a in (f"--{s}", str(p))),
                 "--output", str(finetuned), "--compare-probe", "--max-steps", "2", "--batch-size", "8", "--no-progress"]) == 0
    compared = json.loads((finetuned / "report.json").read_text())
    assert [m["name"] for m in compared["comparison"]["methods"]] == ["majority", "tfidf", "probe", "finetune"]
    assert json.loads((finetuned / "summary.json").read_text())["classifier_pooling"] == default_pooling(model)
    assert f"({default_pooling(model)})" in capsys.readouterr().out  # the probe's line names the feature it read

    # bytezoo classify, texts on standard input (one per line): as the pipeline labels them in Python
    texts = [text for text, _ in tables["test"]]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("".join(f"{t}\n" for t in texts).encode())))
    assert main(["classify", "--pipeline", str(demo / "transfer"), "-", "--no-progress"]) == 0
    labelled = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = SentimentPipeline.from_pretrained(str(demo / "transfer"))(texts)
    assert [row["text"] for row in labelled] == texts and [row["label"] for row in labelled] == [r["label"] for r in expected]

    # bytezoo generate --pipeline: the top unit held at the report's value, in the state the feature reads
    generate = ["generate", "--pipeline", str(demo / "transfer"), "--prompt", "It", "--max-new-bytes", "6", "--temperature", "0"]
    if steering["state"] is None:  # no per-unit state: refused in one line, as --neuron is
        assert main(generate) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "has no per-unit state to hold a unit in" in error
    else:
        assert main(generate) == 0
        out = capsys.readouterr()
        held = generate_steered(model, "It", neuron=steering["unit"], value=steering["value"], hold=steering["state"],
                                max_new_bytes=6, temperature=0)
        assert out.out == held.texts[0] + "\n" and (held.held_values == np.float32(steering["value"])).all()
        assert f"holding unit {steering['unit']} of the {steering['state']} state" in out.err

    # the hub copy generates, in a batch with either padding side, what each prompt alone does
    pulled = bytezoo.from_pretrained(summary["hub"]["reference"]).eval()
    with torch.no_grad():
        assert_batched_generation_equals_one_at_a_time(pulled, [list(b"It was"), list(b"A"), list(b"The plot")])
