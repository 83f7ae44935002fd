"""Every parser answers in one line (issue 25, item 5): a ``config.json`` nested 100,000 deep, a ``classifier.json``
whose fields have the wrong types, NaN weights: one line naming the file (exit 2). A label like
``$\\undefinedcmd{x}$`` is drawn literally, labels are escaped in the model card, and a transfer that fails leaves no
partial output. JSON bytezoo writes is always valid (no ``NaN``).

On main: RecursionError, TypeError or AttributeError tracebacks; NaN weights loaded and NaN written into JSON; the
mathtext label crashed ``transfer`` after writing a plot; label names went raw into the card's Markdown.
"""
from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch

import bytezoo
import bytezoo.hub as hub
from bytezoo.cli import main as bytezoo_main
from bytezoo.zoo.modeling_utils import CheckpointError
from zoo_presets import one_preset_per_family

DEEP = '{"model_type": "mlstm", "nested": ' + "[" * 100_000 + "]" * 100_000 + "}"


def error_line(capsys) -> str:
    printed = capsys.readouterr().err.strip()
    assert "Traceback" not in printed and len(printed.splitlines()) == 1, printed[-2000:]
    return printed


@pytest.mark.parametrize("family", one_preset_per_family())
def test_a_config_nested_100000_deep_is_one_line_in_from_pretrained(tmp_path, tiny_model, family):
    tiny_model(family).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(DEEP)
    with pytest.raises(CheckpointError, match=r"config.json: not a valid JSON config \(nested too deeply"):
        bytezoo.from_pretrained(str(tmp_path / "m"))


def test_a_config_nested_100000_deep_is_one_line_in_transfer_and_the_hub(tmp_path, tiny_model, capsys):
    folder = tmp_path / "m"
    tiny_model("mlstm-256").save_pretrained(folder)
    (folder / "config.json").write_text(DEEP)
    capsys.readouterr()
    (tmp_path / "train.tsv").write_text("text\tlabel\ngood\t1\nbad\t0\n")
    assert bytezoo_main(["transfer", "--model", str(folder), "--train", str(tmp_path / "train.tsv"), "--output",
                         str(tmp_path / "out"), "--no-progress"]) == 2
    assert "config.json: not a valid JSON config (nested too deeply" in error_line(capsys)
    assert bytezoo_main(["hub", "push", str(folder), str(tmp_path / "hub" / "m")]) == 2
    assert "refusing 'config.json': not valid UTF-8 JSON (nested too deeply" in error_line(capsys)

    # a hub written by something else: the pull refuses it the same way
    from test_hostile_names import write_manifest

    write_manifest(tmp_path / "other" / "m", {"config.json": DEEP.encode()})
    assert bytezoo_main(["hub", "pull", str(tmp_path / "other" / "m")]) == 2
    assert "refusing 'config.json': not valid UTF-8 JSON (nested too deeply" in error_line(capsys)


@pytest.fixture
def saved_classifier(tmp_path):
    from bytezoo.transfer.classifier import SparseLogisticClassifier

    rng = np.random.default_rng(0)
    features, labels = rng.standard_normal((40, 8)), np.array(["neg", "pos"] * 20)
    features[labels == "pos", 3] += 3
    SparseLogisticClassifier(Cs=[1.0]).fit(features, labels).save(
        str(tmp_path / "pipeline"), metadata={"model": "../nowhere", "featurizer": {"pooling": "final_cell"},
                                              "label_names": None})
    return tmp_path / "pipeline"


@pytest.mark.parametrize("field, value, message", [
    ("classes", "neg,pos", "'classes' must be a list; got str"),
    ("featurizer", ["pooling", "mean"], "'featurizer' must be an object or null; got list"),
    ("classes", [["neg"], ["pos"]], "'classes' must list strings or numbers"),
    ("classes", ["pos", "pos"], "'classes' lists a name twice"),
    ("n_features", "8", "'n_features' must be an integer; got str"),
    ("label_names", "abc", "'label_names' must be a list or null; got str"),
    ("model", {"path": "x"}, "'model' must be a string or null; got dict"),
])
def test_a_classifier_json_of_the_wrong_types_is_one_line(saved_classifier, capsys, field, value, message):
    from bytezoo.transfer.classifier import ClassifierFormatError, SparseLogisticClassifier

    path = saved_classifier / "classifier.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    with pytest.raises(ClassifierFormatError, match=f"classifier.json: {message}"):
        SparseLogisticClassifier.load(str(saved_classifier))
    assert bytezoo_main(["classify", "--pipeline", str(saved_classifier), "some text"]) == 2
    assert message in error_line(capsys)


def test_nan_classifier_weights_are_refused(saved_classifier):
    from safetensors.numpy import load_file, save_file

    from bytezoo.transfer.classifier import ClassifierFormatError, SparseLogisticClassifier

    weights = load_file(str(saved_classifier / "classifier.safetensors"))
    weights["coef"][0, 2] = np.nan
    save_file(weights, str(saved_classifier / "classifier.safetensors"))
    with pytest.raises(ClassifierFormatError, match="weights hold NaN or infinite values"):
        SparseLogisticClassifier.load(str(saved_classifier))


@pytest.mark.parametrize("family", one_preset_per_family())
def test_nan_model_weights_are_refused_by_name(tmp_path, tiny_model, family):
    model = tiny_model(family)
    name, parameter = next(iter(model.named_parameters()))
    with torch.no_grad():
        parameter.view(-1)[0] = float("nan")
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match=f"weight '{name}' holds NaN or infinite values"):
        bytezoo.from_pretrained(str(tmp_path / "m"))


def test_json_that_bytezoo_writes_never_holds_nan():
    from bytezoo.untrusted import jsonio

    text = jsonio.dumps({"bpc": float("nan"), "rate": [1.0, float("inf")], "n": np.float32("nan")})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}")) == {
        "bpc": None, "rate": [1.0, None], "n": None}


@pytest.fixture
def transfer_files(tmp_path):
    model = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8)
    model.save_pretrained(tmp_path / "model")
    rng = random.Random(0)
    labels = ["$\\undefinedcmd{x}$", "plain"]
    lines = ["text\tlabel"] + [f"{rng.choice(['good', 'great'] if i % 2 else ['bad', 'dull'])} film\t{labels[i % 2]}"
                               for i in range(24)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.tsv").write_text("\n".join(lines[:11]) + "\n")
    return tmp_path


def transfer_argv(folder) -> list[str]:
    return ["transfer", "--model", str(folder / "model"), "--train", str(folder / "train.tsv"), "--test",
            str(folder / "test.tsv"), "--output", str(folder / "out"), "--baseline", "none", "--curve-points", "2",
            "--heatmap-texts", "0", "--C", "1", "--no-progress"]


def test_a_label_written_as_mathtext_is_drawn_literally(transfer_files):
    """On main matplotlib parsed the label as mathtext and failed (ValueError: Unknown symbol: \\undefinedcmd),
    after the first plot was written."""
    assert bytezoo_main(transfer_argv(transfer_files)) == 0
    report = json.loads((transfer_files / "out" / "report.json").read_text())
    assert report["data"]["classes"] == ["$\\undefinedcmd{x}$", "plain"]
    assert (transfer_files / "out" / "unit_histogram.png").stat().st_size > 0


def test_a_transfer_that_fails_while_writing_leaves_no_partial_output(transfer_files, monkeypatch):
    from bytezoo.transfer import classifier

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    (transfer_files / "out").mkdir()
    (transfer_files / "out" / "mine.txt").write_text("not bytezoo's")
    monkeypatch.setattr(classifier.SparseLogisticClassifier, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        bytezoo_main(transfer_argv(transfer_files))
    assert sorted(path.name for path in (transfer_files / "out").iterdir()) == ["mine.txt"]


def test_label_names_are_escaped_in_the_model_card():
    labels = ["<script>alert(1)</script>", "[click](javascript:alert(1))", "**bold** | cell", "`code`"]
    card = hub.make_model_card("m", {"classifier.json": 10, "classifier.safetensors": 10},
                               {"classifier.json": {"label_names": labels, "classes": labels, "task": "multiclass"},
                                "report.json": {"task": "multiclass", "data": {"classes": labels}}}, {})
    assert "<script>" not in card and not re.search(r"(?<!\\)\]\(javascript:", card) and "**bold**" not in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card and "\\[click\\](javascript:alert(1))" in card
    assert "\\*\\*bold\\*\\* \\| cell" in card
    rows = [line for line in card.splitlines() if line.startswith("| ") and "cell" in line]
    assert rows and all(len(re.findall(r"(?<!\\)\|", row)) == 3 for row in rows), rows  # no label adds a cell
