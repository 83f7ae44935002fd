"""``bytezoo evaluate``: bits per byte without training, the same figure pretraining reports as validation BPC."""
from __future__ import annotations

import json
import random

import pytest

import bytezoo
from bytezoo.cli import main
from zoo_presets import one_preset_per_family

WORDS = ["good", "bad", "film", "the", "plot", "great", "acting", "boring", "é", "wonderful"]


def write_text(path, words: int, seed: int) -> None:
    rng = random.Random(seed)
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(words)))


def evaluate_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["evaluate", *map(str, args), "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", one_preset_per_family())
def test_evaluate_equals_pretrainings_validation_bpc(name, tmp_path, capsys):
    for file, words, seed in (("train.txt", 900, 1), ("a.txt", 500, 2), ("b.jsonl", 0, 3)):
        if file.endswith(".txt"):
            write_text(tmp_path / file, words, seed)
    rng = random.Random(4)
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(40))}) + "\n"
                                              for _ in range(12)))
    overrides = [arg for key, value in {**bytezoo.get_model_info(name).test_overrides, "num_layers": 2}.items()
                 for arg in ("--model-config", f"{key}={json.dumps(value)}")]
    run = tmp_path / "run"
    assert main(["pretrain", "--model", name, *overrides, "--data", str(tmp_path / "train.txt"), "--val-data",
                 str(tmp_path / "a.txt"), "--val-data", str(tmp_path / "b.jsonl"), "--output", str(run),
                 "--batch-size", "3", "--seq-len", "12", "--shard-bytes", "4096", "--max-steps", "6", "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())

    result = evaluate_json(capsys, run / "model", tmp_path / "a.txt", tmp_path / "b.jsonl", "--batch-size", "3",
                           "--seq-len", "12", "--shard-bytes", "4096")
    assert result["bits_per_byte"] == pytest.approx(summary["val_bpc"], rel=1e-6)
    assert result["predicted_bytes"] == summary["val_compression"]["predicted_bytes"]
    for compressor, entry in summary["val_compression"]["compressors"].items():  # the same bytes compressed
        assert result["compression"]["compressors"][compressor]["compressed_bytes"] == entry["compressed_bytes"]
    # the sources split the total: every counted byte belongs to exactly one of them
    assert [entry["source"].rsplit("/", 1)[-1] for entry in result["per_source"]] == ["a.txt", "b.jsonl"]
    assert sum(entry["predicted_bytes"] for entry in result["per_source"]) == result["predicted_bytes"]
    assert sum(entry["nll_nats"] for entry in result["per_source"]) == pytest.approx(result["nll_nats"], rel=1e-6)


def test_per_source_figures_are_each_sources_own(tmp_path, capsys, tiny_model):
    """One stream reads the sources in order, the state reset at each: the first source's figure is that of
    evaluating it alone (its length is a whole number of windows plus one, so both read all of it)."""
    model = tiny_model("mlstm-256", num_layers=1)
    model.save_pretrained(tmp_path / "model")
    seq_len = 10
    (tmp_path / "a.txt").write_text(("the plot was good, the acting great. " * 20)[: 20 * seq_len + 1])
    write_text(tmp_path / "b.txt", 150, 5)
    options = ["--batch-size", "1", "--seq-len", str(seq_len), "--no-compressors"]
    both = evaluate_json(capsys, tmp_path / "model", tmp_path / "a.txt", tmp_path / "b.txt", *options)
    alone = evaluate_json(capsys, tmp_path / "model", tmp_path / "a.txt", *options)
    assert both["per_source"][0]["predicted_bytes"] == alone["predicted_bytes"] == 20 * seq_len
    assert both["per_source"][0]["nll_nats"] == pytest.approx(alone["nll_nats"], rel=1e-5)
    assert both["per_source"][1]["bits_per_byte"] != pytest.approx(both["per_source"][0]["bits_per_byte"], rel=1e-3)


def test_max_bytes_and_the_printed_table(tmp_path, capsys, tiny_model):
    tiny_model("gru-1024").save_pretrained(tmp_path / "model")
    write_text(tmp_path / "a.txt", 2000, 6)
    limited = evaluate_json(capsys, tmp_path / "model", tmp_path / "a.txt", "--max-bytes", "3000", "--seq-len", "16")
    assert limited["corpus_bytes"] == 3000 and limited["predicted_bytes"] <= 3000
    assert limited["compression"]["raw_bytes"] <= 3000
    assert main(["evaluate", str(tmp_path / "model"), str(tmp_path / "a.txt"), "--no-progress", "--seq-len", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["source", "bytes", "bits/byte"] and lines[-2].startswith("total")
    assert lines[-1].startswith("beside it: gzip -9")


def test_evaluate_refuses_what_it_cannot_read_in_one_line(tmp_path, capsys):
    write_text(tmp_path / "a.txt", 50, 7)
    assert main(["evaluate", str(tmp_path / "no-model"), str(tmp_path / "a.txt")]) == 2
    error = capsys.readouterr().err.strip()
    assert "no such checkpoint folder" in error and len(error.splitlines()) == 1
    assert main(["evaluate", str(tmp_path), str(tmp_path / "missing.txt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
