"""Every model family works end to end through the contract alone: pretrain (with a resume, so its named state parts
are saved and dealt again), transfer on its features, and a round trip through the hub. One preset per family."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import bytezoo
from bytezoo.cli import main
from zoo_presets import one_preset_per_family


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng()
    words = ["good", "bad", "plot", "acting", "the", "a", "film", "é", "boring", "great"]
    path = tmp_path_factory.mktemp("corpus") / "reviews.jsonl"
    path.write_text("\n".join(json.dumps({"text": " ".join(rng.choice(words, rng.integers(3, 20)))}) for _ in range(200)) + "\n")
    return path


def write_split(path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["text\tlabel"] + [
        " ".join(rng.choice(["good", "great", "fun"] if row % 2 else ["bad", "dull", "poor"]) for _ in range(3)) + f"\t{row % 2}"
        for row in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", one_preset_per_family())
def test_a_family_pretrains_resumes_transfers_and_shares(name, corpus, tmp_path, capsys):
    overrides = [arg for key, value in bytezoo.get_model_info(name).test_overrides.items()
                 for arg in ("--model-config", f"{key}={json.dumps(value)}")]
    run = ["pretrain", "--model", name, *overrides, "--model-config", "num_layers=2", "--data", str(corpus),
           "--output", str(tmp_path / "run"), "--batch-size", "4", "--seq-len", "8", "--save-every", "2", "--no-progress"]
    assert main([*run, "--max-steps", "2"]) == 0
    assert main([*run, "--max-steps", "3", "--resume", "latest"]) == 0  # the saved state parts are read back by name
    summary = json.loads((tmp_path / "run" / "model" / "training_summary.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from"].endswith("step-00000002")
    model_dir = tmp_path / "run" / "model"

    for split, rows, seed in (("train", 16, 1), ("test", 8, 2)):
        write_split(tmp_path / f"{split}.tsv", rows, seed)
    assert main(["transfer", "--model", str(model_dir), "--train", str(tmp_path / "train.tsv"), "--test",
                 str(tmp_path / "test.tsv"), "--output", str(tmp_path / "transfer"), "--pooling", "final_hidden",
                 "--curve-points", "0", "--heatmap-texts", "0", "--no-progress"]) == 0
    report = json.loads((tmp_path / "transfer" / "report.json").read_text())
    assert report["model"]["model_type"] == bytezoo.from_pretrained(model_dir).config.model_type
    assert 0.0 <= report["accuracy"]["test"] <= 1.0

    url = f"file://{tmp_path / 'hub'}/{name}"
    bytezoo.hub.push(model_dir, url, tag="v1")
    ids = torch.randint(0, 256, (2, 11))
    with torch.no_grad():
        expected = bytezoo.from_pretrained(model_dir)(ids).logits
        pulled = bytezoo.from_pretrained(url + "@v1")(ids).logits
    torch.testing.assert_close(pulled, expected, atol=0, rtol=0)
