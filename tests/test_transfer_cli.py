"""Transfer stage end to end: `bytezoo transfer` / `classify` / `generate`, SentimentPipeline, steered generation."""
from __future__ import annotations

import dataclasses
import json
import random
import re
import uuid

import numpy as np
import pytest
import torch

import bytezoo
from bytezoo.cli import main
from bytezoo.data.errors import DatasetError
from bytezoo.data.labelled import read_dataset
from bytezoo.transfer import SentimentPipeline, generate_steered

from hub_cards import assert_card_shows_the_comparison
from zoo_presets import one_preset_per_family

POSITIVE = ["good", "great", "lovely", "fun"]
NEGATIVE = ["bad", "awful", "dull", "poor"]
NEUTRAL = ["okay", "plain", "so so"]


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    model = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8)
    model.save_pretrained(tmp_path / "model")
    bytezoo.ByteTokenizer().save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def write_split(path, rows: int, seed: int, classes=("1", "0")) -> None:
    words = {"1": POSITIVE, "0": NEGATIVE, "positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}
    rng = random.Random(seed)
    lines = ["review\trating"]
    for row in range(rows):
        label = classes[row % len(classes)]
        lines.append(" ".join(rng.choice(words[label]) for _ in range(rng.randint(1, 3))) + f"\t{label}")
    path.write_text("\n".join(lines) + "\n")


def test_transfer_command_end_to_end(tmp_path, model_dir, capsys):
    for split, rows, seed in (("train", 24, 1), ("dev", 10, 2), ("test", 10, 3)):
        write_split(tmp_path / f"{split}.tsv", rows, seed)
    out = tmp_path / "out"
    code = main([
        "transfer", "--model", str(model_dir), "--train", str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "dev.tsv"),
        "--test", str(tmp_path / "test.tsv"), "--text-col", "review", "--label-col", "rating", "--output", str(out),
        "--baseline", "tfidf", "--top-k", "3", "--C", "0.25", "1", "--curve-points", "2", "--heatmap-texts", "2", "--no-progress",
    ])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 2 and report["task"] == "binary" and report["metric"] == "accuracy"
    assert report["model"]["reference"] == str(model_dir) and report["model"]["hidden_size"] == 16
    assert report["data"]["classes"] == ["0", "1"] and report["data"]["train"]["rows"] == 24
    assert report["classifier"]["Cs"] == [0.25, 1.0] and report["classifier"]["C"] in (0.25, 1.0)
    assert all(0.0 <= report["accuracy"][split] <= 1.0 for split in ("train", "dev", "test"))
    assert len(report["top_units"]) == 3 and report["top_unit_classifier"]["units"] == [report["top_units"][0]["unit"]]
    assert report["top_k_classifier"]["units"] == [unit["unit"] for unit in report["top_units"]]
    assert 0.0 <= report["baselines"]["tfidf"]["test_accuracy"] <= 1.0
    assert [point["n_train"] for point in report["data_efficiency"]] == [10, 24]
    assert report["featurization"]["characters_per_second"] > 0 and report["featurization"]["texts"] == 44
    for name in report["files"]["plots"].values():
        assert (out / name).stat().st_size > 0
    assert (out / "unit_histogram.png").read_bytes()[:4] == b"\x89PNG"
    assert "<span" in (out / "unit_heatmap.html").read_text()
    assert json.loads(capsys.readouterr().out)["accuracy"] == report["accuracy"]
    assert_card_shows_the_comparison(out, report)

    # The saved classifier points at the model; the pipeline reproduces the report's test accuracy.
    pipe = SentimentPipeline.from_pretrained(str(out))
    test_texts = [line.split("\t")[0] for line in (tmp_path / "test.tsv").read_text().splitlines()[1:]]
    test_labels = [line.split("\t")[1] for line in (tmp_path / "test.tsv").read_text().splitlines()[1:]]
    results = pipe(test_texts)
    assert pipe("good fun") == pipe(["good fun"]) and len(pipe("good fun")) == 1  # a string is a list of one
    assert pipe.predict("good fun").tolist() == pipe.predict(["good fun"]).tolist()
    assert np.mean([r["label"] == y for r, y in zip(results, test_labels)]) == pytest.approx(report["accuracy"]["test"])
    assert all(set(r["probabilities"]) == {"0", "1"} and abs(sum(r["probabilities"].values()) - 1) < 1e-9 for r in results)

    assert main(["classify", "--pipeline", str(out), "--no-progress", "good fun", "awful"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    alone = pipe(["good fun"])[0]
    assert [line["text"] for line in lines] == ["good fun", "awful"] and lines[0]["label"] == alone["label"]
    assert lines[0]["score"] == pytest.approx(alone["score"], abs=1e-6)  # batched vs alone: float rounding only


def test_three_class_pipeline_with_the_model_inside_and_through_the_hub(tmp_path, model_dir):
    import fsspec

    classes = ("positive", "negative", "neutral")
    write_split(tmp_path / "train.tsv", 18, 4, classes)
    write_split(tmp_path / "dev.tsv", 9, 5, classes)
    out = tmp_path / "out"
    assert main([
        "transfer", "--model", str(model_dir), "--train", str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "dev.tsv"),
        "--output", str(out), "--include-model", "--no-plots", "--curve-points", "0", "--C", "1", "--no-progress",
    ]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "multiclass" and report["accuracy"]["test"] is None and report["files"]["model"] == "."
    assert report["baselines"]["tfidf"]["dev_accuracy"] is not None  # measured by default, in the same run
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    local = SentimentPipeline.from_pretrained(str(out))
    assert local.model_reference == str(out)
    texts = ["good great", "so so", "dull"]
    expected = local(texts)
    assert {r["label"] for r in expected} <= set(classes) and len(expected[0]["probabilities"]) == 3

    from bytezoo.hub import push

    assert list(out.glob("*.py")), "save_pretrained's remote-code modules: the hub must leave them behind by itself"
    root = f"/transfer-tests-{uuid.uuid4().hex[:8]}"
    memory = fsspec.filesystem("memory")
    try:
        push(str(out), f"memory://{root}/sentiment", model_card=False)
        remote = SentimentPipeline.from_pretrained(f"memory://{root}/sentiment@latest")
        for got, want in zip(remote(texts), expected):
            assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-9)
    finally:
        if memory.exists(root):
            memory.rm(root, recursive=True)


def test_multilabel_transfer_from_json_lines(tmp_path, model_dir):
    rng = random.Random(6)
    for split, rows in (("train", 24), ("dev", 8)):
        with open(tmp_path / f"{split}.jsonl", "w") as handle:
            for _ in range(rows):
                joy, anger = rng.random() < 0.5, rng.random() < 0.5
                text = " ".join(["yay"] * joy + ["grr"] * anger) or "hmm"
                handle.write(json.dumps({"Tweet": text, "joy": int(joy), "anger": int(anger)}) + "\n")
    out = tmp_path / "out"
    assert main([
        "transfer", "--model", str(model_dir), "--train", str(tmp_path / "train.jsonl"), "--test", str(tmp_path / "dev.jsonl"),
        "--text-col", "Tweet", "--label-col", "joy", "anger", "--output", str(out), "--curve-points", "0", "--heatmap-texts", "1",
        "--C", "1", "--no-progress",
    ]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "multilabel" and report["metric"] == "jaccard" and report["classifier"]["C_chosen_on"] == "train split"
    assert len(report["top_units"][0]["weights"]) == 2 and report["data"]["train"]["label_counts"].keys() == {"joy", "anger"}
    result = SentimentPipeline.from_pretrained(str(out))(["yay grr"])[0]
    assert set(result["probabilities"]) == {"joy", "anger"} and set(result["labels"]) <= {"joy", "anger"}
    comparison = report["comparison"]  # Jaccard scores, one column (all 24 labels), no standard errors
    assert comparison["metric"] == "jaccard" and comparison["n_train"] == [24]
    assert [m["name"] for m in comparison["methods"]] == ["majority", "tfidf", "probe"]
    assert comparison["methods"][2]["points"][0]["accuracy"] == report["accuracy"]["test"]
    assert all(p["stderr"] is None for m in comparison["methods"] for p in m["points"])


def read_labels(path) -> list[str]:
    return [line.split("\t")[1] for line in path.read_text().splitlines()[1:]]


@pytest.mark.parametrize("with_dev", [True, False])
def test_every_method_is_compared_at_the_same_label_counts(tmp_path, model_dir, capsys, with_dev):
    """Majority class, TF-IDF and the frozen probe: one table, one plot, the same numbers of labels and the same rows."""
    from bytezoo.transfer.baseline import tfidf_baseline
    from bytezoo.transfer.comparison import training_subset

    classes = ("positive", "positive", "negative", "neutral")  # half positive: a majority class to beat
    for split, rows, seed in (("train", 40, 1), ("dev", 12, 2), ("test", 20, 3)):
        write_split(tmp_path / f"{split}.tsv", rows, seed, classes)
    out = tmp_path / "out"
    dev = ["--dev", str(tmp_path / "dev.tsv")] if with_dev else []
    assert main(["transfer", "--model", str(model_dir), "--train", str(tmp_path / "train.tsv"), *dev, "--test",
                 str(tmp_path / "test.tsv"), "--text-col", "review", "--label-col", "rating", "--output", str(out),
                 "--C", "0.25", "1", "--curve-points", "3", "--heatmap-texts", "0", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    comparison = report["comparison"]
    assert comparison["split"] == "test" and comparison["n_eval"] == 20 and comparison["metric"] == "accuracy"
    assert comparison["n_train"] == [point["n_train"] for point in report["data_efficiency"]] == [10, 20, 40]
    assert [m["name"] for m in comparison["methods"]] == ["majority", "tfidf", "probe"]
    for method in comparison["methods"]:
        assert [p["n_train"] for p in method["points"]] == comparison["n_train"], method["name"]
        assert all(0.0 <= p["accuracy"] <= 1.0 for p in method["points"])
        assert all(p["stderr"] == pytest.approx((p["accuracy"] * (1 - p["accuracy"]) / 20) ** 0.5) for p in method["points"])
    majority, tfidf, probe = comparison["methods"]

    # The majority class scores the test set's largest-class share at every size (stratified draws keep it).
    test_labels = read_labels(tmp_path / "test.tsv")
    largest = max(set(test_labels), key=test_labels.count)
    assert majority["constant"] and {p["class"] for p in majority["points"]} == {largest} == {"positive"}
    assert all(p["accuracy"] == test_labels.count(largest) / len(test_labels) for p in majority["points"])

    # The probe's points are the data-efficiency curve; its last is the classifier on every label.
    assert [p["accuracy"] for p in probe["points"]] == [p["test_accuracy"] for p in report["data_efficiency"]]
    assert probe["points"][-1]["accuracy"] == report["accuracy"]["test"] and probe["label"] == "frozen mlstm features + L1 LR"

    # TF-IDF on exactly the probe's rows at every size, its C chosen as the probe's is (dev, or a 20% split of train).
    assert tfidf["points"][-1]["accuracy"] == report["baselines"]["tfidf"]["test_accuracy"]
    assert report["baselines"]["tfidf"]["C_chosen_on"] == report["classifier"]["C_chosen_on"] == ("dev" if with_dev else "train split")
    texts = [line.split("\t")[0] for line in (tmp_path / "train.tsv").read_text().splitlines()[1:]]
    labels = np.asarray(read_labels(tmp_path / "train.tsv"))
    test_texts = [line.split("\t")[0] for line in (tmp_path / "test.tsv").read_text().splitlines()[1:]]
    dev_texts = [line.split("\t")[0] for line in (tmp_path / "dev.tsv").read_text().splitlines()[1:]] if with_dev else None
    dev_labels = read_labels(tmp_path / "dev.tsv") if with_dev else None
    for point in tfidf["points"]:
        rows = training_subset(labels, point["n_train"], seed=0)
        assert len(rows) == point["n_train"]
        again = tfidf_baseline([texts[i] for i in rows], labels[rows], dev_texts, dev_labels, test_texts, test_labels)
        assert again["test_accuracy"] == point["accuracy"] and again["C"] == point["C"]

    # One plot of them all, and the same table printed.
    assert report["files"]["plots"]["data_efficiency"] == "data_efficiency.png"
    assert (out / "data_efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().err
    assert "majority class" in printed and "TF-IDF word 1-2grams + L2 LR" in printed and "frozen mlstm features" in printed
    row = next(line for line in printed.splitlines() if line.strip().startswith("majority class"))
    assert row.split()[-3:] == [f"{100 * p['accuracy']:.1f}" for p in majority["points"]]


def test_a_fine_tuning_curve_joins_the_comparison_at_the_same_label_counts(tmp_path):
    from bytezoo.errors import InvalidArgumentError
    from bytezoo.transfer.comparison import add_method, format_table, new_comparison
    from bytezoo.transfer.plots import plot_comparison

    comparison = new_comparison("test", "accuracy", 100, [10, 100], seed=0)
    add_method(comparison, "majority", "majority class", [{"n_train": n, "accuracy": 0.6} for n in (10, 100)], constant=True)
    add_method(comparison, "probe", "probe", [{"n_train": 100, "accuracy": 0.7}, {"n_train": 10, "accuracy": 0.62}])
    add_method(comparison, "finetune", "fine-tuned", [{"n_train": n, "accuracy": a} for n, a in ((10, 0.5), (100, 0.9))])
    assert [p["n_train"] for p in comparison["methods"][1]["points"]] == [10, 100]  # sorted
    assert comparison["methods"][2]["points"][1]["stderr"] == pytest.approx(0.03)
    with pytest.raises(InvalidArgumentError, match="measured at \\[10, 100\\]"):
        add_method(comparison, "other", "other", [{"n_train": 10, "accuracy": 0.5}])
    table = format_table(comparison)
    assert "fine-tuned" in table and "90.0" in table and "62.0" in table
    plot_comparison(comparison, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def one_error_line(capsys, command: str) -> str:
    """The user error a command printed: exactly one line on stderr, naming the command, and no traceback."""
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith(f"bytezoo {command}: error: "), error
    return error


def test_transfer_bad_input_names_the_file_and_column(tmp_path, model_dir, capsys):
    write_split(tmp_path / "train.tsv", 6, 7, classes=("1",))
    train = ["transfer", "--model", str(model_dir), "--train", str(tmp_path / "train.tsv"), "--output", str(tmp_path / "o"), "--no-progress"]
    assert main(train) == 2
    assert "train.tsv, column 'rating': every training row has the label '1'" in one_error_line(capsys, "transfer")
    write_split(tmp_path / "train.tsv", 6, 7)
    assert main([*train, "--label-col", "stars"]) == 2
    assert "no label column 'stars'; columns are ['review', 'rating']" in one_error_line(capsys, "transfer")
    assert not (tmp_path / "o").exists()  # refused before anything was written
    with pytest.raises(DatasetError, match=r"no label column 'stars'; columns are \['review', 'rating'\]"):
        read_dataset(tmp_path / "train.tsv", label_cols=["stars"])  # the API raises; the command prints its line
    with pytest.raises(FileNotFoundError, match="classifier.json"):
        SentimentPipeline.from_pretrained(str(model_dir))


@pytest.mark.parametrize(
    "command, arguments, message",
    [
        ("transfer", ["--train", "{bad_csv}"], r"bad.csv, row 3: 1 fields but the header has 2"),
        ("transfer", ["--train", "{train}", "--model", "{tmp}/no-model"], r"no-model/config.json: missing"),
        ("transfer", ["--train", "{train}", "--C", "-1"], r"C values must be positive finite numbers \(got \[-1.0\]\)"),
        ("transfer", ["--train", "{train}", "--device", "nonsense"], r"device='nonsense' is not a torch device"),
        ("transfer", ["--train", "{train}", "--pooling", "max"], r"transfer options: pooling 'max' is not one of final_cell, final_hidden, mean"),
        ("transfer", ["--train", "{train}", "--pooling", "final_cell", "--model", "{gru}"], r"pooling 'final_cell' reads a per-unit cell state, which ByteGRUModel does not have; ByteGRUModel offers final_hidden, mean \(default final_hidden\)$"),
        ("transfer", ["--train", "{train}", "--curve-points", "-1"], r"argument --curve-points: must be an integer >= 0"),
        ("classify", ["--pipeline", "{model}", "good"], r"no classifier.json; not a saved bytezoo classifier"),
        ("classify", ["--pipeline", "{model}", "--input", "{tmp}/texts.dat"], r"texts.dat: cannot tell the format .*--format on the command line"),
        ("classify", ["--pipeline", "{model}"], r"give the texts as arguments, - for standard input, or --input FILE"),
        ("generate", ["--model", "{model}", "--neuron", "300"], r"neuron 300 is outside the model's 16 units; choose one in 0..15"),
        ("generate", ["--model", "{model}", "--top-k", "0"], r"top_k must be in \[1, 256\]"),
        ("generate", ["--model", "{model}", "--device", "nonsense"], r"device='nonsense' is not a torch device"),
        pytest.param("generate", ["--model", "{model}", "--device", "cuda"], r"device='cuda', but torch sees no CUDA GPU here",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")),
    ],
)
def test_user_errors_print_one_line_and_exit_2(tmp_path, model_dir, capsys, command, arguments, message):
    (tmp_path / "bad.csv").write_text('text,label\ngood,1\n"bad,0\nfine,1\n')  # an unclosed quote swallows the rest
    (tmp_path / "texts.dat").write_text("one text\n")
    write_split(tmp_path / "train.tsv", 8, 1)
    paths = {"bad_csv": tmp_path / "bad.csv", "train": tmp_path / "train.tsv", "tmp": tmp_path, "model": model_dir,
             "gru": tmp_path / "gru"}
    if "{gru}" in arguments:
        bytezoo.create_model("gru-1024", hidden_size=8, embedding_size=4).save_pretrained(tmp_path / "gru")
    argv = [command, *(a.format(**paths) for a in arguments)]
    if command == "transfer":
        argv = [*argv[:1], "--model", str(model_dir), "--output", str(tmp_path / "out"), "--no-progress", *argv[1:]]
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's own errors exit from the parser
        code = exited.code
    assert code == 2
    assert re.search(message, one_error_line(capsys, command))
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback_and_programming_errors_still_raise(tmp_path, model_dir, capsys, monkeypatch):
    argv = ["generate", "--model", str(model_dir), "--neuron", "300"]
    assert main([*argv, "--debug"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("Traceback (most recent call last):") and "generation.py" in error
    assert error.strip().splitlines()[-1].startswith("bytezoo generate: error: neuron 300")
    monkeypatch.setenv("BYTEZOO_DEBUG", "1")
    assert main(argv) == 2 and "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("BYTEZOO_DEBUG", "0")
    assert main(argv) == 2 and "Traceback" not in capsys.readouterr().err

    from bytezoo.transfer import experiment

    def a_bug(*args, **kwargs):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(experiment, "run_transfer", a_bug)
    with pytest.raises(KeyError, match="a bug"):
        main(["transfer", "--model", str(model_dir), "--train", "t.tsv", "--output", str(tmp_path / "o")])


def test_a_used_output_folder_is_refused_and_overwrite_removes_the_earlier_runs_files(tmp_path, model_dir, capsys):
    write_split(tmp_path / "train.tsv", 16, 1)
    write_split(tmp_path / "test.tsv", 8, 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.md").write_text("mine")  # not bytezoo's: never removed
    common = ["transfer", "--model", str(model_dir), "--train", str(tmp_path / "train.tsv"), "--test", str(tmp_path / "test.tsv"),
              "--output", str(out), "--C", "1", "--curve-points", "2", "--heatmap-texts", "1", "--no-progress"]
    assert main([*common, "--include-model"]) == 0
    first = json.loads((out / "report.json").read_text())
    assert set(first["files"]["plots"].values()) == {"unit_histogram.png", "data_efficiency.png", "unit_heatmap.png", "unit_heatmap.html"}
    assert {"config.json", "model.safetensors", "report.json", "classifier.json"} <= set(first["files"]["written"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    assert main([*common, "--no-plots"]) == 2
    error = one_error_line(capsys, "transfer")
    assert "holds the output of an earlier bytezoo transfer run (report.json" in error and "--overwrite" in error
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing changed

    assert main([*common, "--no-plots", "--baseline", "none", "--overwrite"]) == 0
    second = json.loads((out / "report.json").read_text())
    assert second["files"]["plots"] == {} and second["baselines"] == {} and second["files"]["model"] is None
    left = sorted(p.name for p in out.iterdir())
    assert left == ["classifier.json", "classifier.safetensors", "notes.md", "report.json"]  # no stale plot, no stale model
    assert SentimentPipeline.from_pretrained(str(out)).model_reference == str(model_dir)  # not a stale copy beside it


def test_transfer_config_holds_the_defaults_and_the_command_line_uses_them(tmp_path, model_dir):
    from bytezoo.cli import build_parser
    from bytezoo.transfer import TransferConfig, run_transfer
    from bytezoo.transfer import config as transfer_config

    args = build_parser().parse_args(["transfer", "--model", "m", "--train", "t.csv", "--output", "o"])
    from_cli = TransferConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TransferConfig)})
    assert from_cli == TransferConfig(model="m", train="t.csv", output="o")
    assert from_cli.baseline == "tfidf"  # the baseline is measured unless --baseline none
    choices = {action.dest: tuple(action.choices) for action in build_parser()._subparsers._group_actions[0].choices["transfer"]._actions if action.choices}
    assert choices["preprocess"] == transfer_config.PREPROCESSORS
    assert from_cli.pooling is None and "pooling" not in choices  # the modes and the default are the model's
    assert choices["dtype"] == transfer_config.DTYPES and choices["baseline"] == transfer_config.BASELINES

    with pytest.raises(ValueError, match="pooling 'max' is not one of final_cell, final_hidden, mean; batch_size must be"):
        TransferConfig(model="m", train="t.csv", output="o", pooling="max", batch_size=0).validated()

    write_split(tmp_path / "train.tsv", 12, 3)
    config = TransferConfig(model=str(model_dir), train=str(tmp_path / "train.tsv"), output=str(tmp_path / "a"), Cs=[1.0],
                            plots=False, curve_points=0, progress=False)
    report = run_transfer(config, log=lambda message: None)
    assert report["baselines"]["tfidf"]["dev_accuracy"] is not None and report["classifier"]["C_chosen_on"] == "train split"
    again = run_transfer(config, output=str(tmp_path / "b"), baseline="none", log=lambda message: None)  # options override
    assert again["baselines"] == {} and again["top_units"] == report["top_units"]


# --- generation -----------------------------------------------------------------------------------------------------
def replay_greedy(model, prompt: str, steps: int, neuron: int | None, value: float, state_index: int = 1) -> bytes:
    """Independent greedy decoding, one byte per forward call, overwriting the unit after each step."""
    body = model.model
    state, out_bytes, logits = None, [], None
    with torch.no_grad():
        for byte in ("\n " + prompt).encode():
            out = model(torch.tensor([[byte]]), state=state)
            state, logits = [part.clone() for part in out.state], out.logits[0, -1]
            if neuron is not None:
                state[state_index][-1, :, neuron] = value
        for _ in range(steps):
            byte = int(logits.argmax())
            out_bytes.append(byte)
            out = model(torch.tensor([[byte]]), state=tuple(state))
            state, logits = [part.clone() for part in out.state], out.logits[0, -1]
            if neuron is not None:
                state[state_index][-1, :, neuron] = value
    assert body is model.model
    return bytes(out_bytes)


@pytest.mark.parametrize("hold, state_index", [("cell", 1), ("hidden", 0)])
def test_steered_generation_holds_the_unit(hold, state_index):
    torch.manual_seed(1)
    model = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8, num_layers=2).eval()
    steered = generate_steered(model, "It", neuron=5, value=3.0, hold=hold, max_new_bytes=8, temperature=0)
    assert steered.held_values.shape == (1, len("\n It") + 8) and (steered.held_values == 3.0).all()
    assert steered.new_bytes[0] == replay_greedy(model, "It", 8, neuron=5, value=3.0, state_index=state_index)
    plain = generate_steered(model, "It", max_new_bytes=8, temperature=0)
    assert plain.held_values is None and plain.new_bytes[0] == replay_greedy(model, "It", 8, neuron=None, value=0.0)


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    torch.manual_seed(2)
    model = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8).eval()
    first = generate_steered(model, "A", max_new_bytes=10, num_samples=3, temperature=1.5, seed=11)
    again = generate_steered(model, "A", max_new_bytes=10, num_samples=3, temperature=1.5, seed=11)
    assert first.new_bytes == again.new_bytes and len(first.texts) == 3 and all(len(b) == 10 for b in first.new_bytes)
    greedy = generate_steered(model, "A", max_new_bytes=10, temperature=0)
    assert generate_steered(model, "A", max_new_bytes=10, top_k=1, seed=3).new_bytes == greedy.new_bytes
    with pytest.raises(ValueError, match="outside the model's 16 units"):  # InvalidArgumentError: a ByteZooError and a ValueError
        generate_steered(model, "A", neuron=16)


def test_generate_command(model_dir, capsys):
    assert main(["generate", "--model", str(model_dir), "--prompt", "Great", "--neuron", "3", "--value", "-1", "--max-new-bytes", "8", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("Great")
    greedy = ["generate", "--model", str(model_dir), "--prompt", "Great", "--max-new-bytes", "8", "--temperature", "0"]
    assert main([*greedy, "--device", "cpu"]) == 0
    on_cpu = capsys.readouterr().out
    expected = generate_steered(bytezoo.from_pretrained(str(model_dir)), "Great", max_new_bytes=8, temperature=0).texts[0]
    assert on_cpu == expected + "\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_generation_on_a_device_this_machine_lacks_is_refused_before_loading(tmp_path):
    from bytezoo.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"device='cuda:1', but torch sees no CUDA GPU here"):
        generate_steered(str(tmp_path / "no-model"), "A", device="cuda:1")  # named before the missing checkpoint
    torch.manual_seed(3)
    model = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8).eval()
    assert generate_steered(model, "A", max_new_bytes=6, temperature=0, device="cpu").new_bytes == \
        generate_steered(model, "A", max_new_bytes=6, temperature=0).new_bytes


# --- steering every family, and the data a user brings ------------------------------------------------------------------
@pytest.mark.parametrize("name", one_preset_per_family())
def test_every_family_with_a_per_unit_state_can_be_steered_and_the_others_are_refused_in_one_line(name, tmp_path, capsys):
    from bytezoo.zoo.recurrent_lm import TextPooling

    torch.manual_seed(4)
    model = bytezoo.create_model(name, **bytezoo.get_model_info(name).test_overrides).eval()
    model.save_pretrained(tmp_path / "m")
    steer = ["generate", "--model", str(tmp_path / "m"), "--prompt", "Hi", "--neuron", "3", "--value", "2.5",
             "--max-new-bytes", "5", "--temperature", "0"]
    states = model.model.unit_states
    if not states:  # the Transformer: no per-unit state to hold
        assert main(steer) == 2
        assert re.search(r"ByteTransformerModel has no per-unit state to hold a unit in \(its state is key, value, "
                         r"position\): steering needs a family with per-unit states", one_error_line(capsys, "generate"))
        return
    assert main(steer) == 0  # no --hold: the state the model's own feature reads (the GRU: hidden)
    default = TextPooling(model).unit_state
    assert default == ("cell" if "cell" in states else "hidden")
    held = generate_steered(model, "Hi", neuron=3, value=2.5, hold=default, max_new_bytes=5, temperature=0)
    assert capsys.readouterr().out == held.texts[0] + "\n" and (held.held_values == 2.5).all()
    for hold in ("cell", "hidden"):
        if hold not in states:  # the GRU: told which state it has, and how to ask for it
            assert main([*steer, "--hold", hold]) == 2
            assert re.search(rf"{type(model.model).__name__} has no per-unit cell state to hold; its per-unit states: "
                             rf"hidden \(--hold hidden; hold= in Python\)", one_error_line(capsys, "generate"))


def test_the_generate_help_no_longer_ties_the_sign_to_a_class(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "negative for negative sentiment" not in text and "depends on the sign of the unit's weight" in text
    assert "not the Transformer" in text


def test_transfer_describes_the_data_and_the_units_and_generate_takes_them_from_the_folder(tmp_path, model_dir, capsys):
    """The classes, warnings about empty texts, rare classes and unseen labels; the top units with their signs and
    ranges; the steering values generate --pipeline holds; a classifier without weights says so."""
    write_split(tmp_path / "train.tsv", 20, 1)
    with open(tmp_path / "train.tsv", "a") as handle:
        handle.write("\tneutral\n")  # an empty text, and a class of one row
    write_split(tmp_path / "test.tsv", 8, 2, classes=("1", "0", "positive"))  # 'positive' never occurs in training
    out = tmp_path / "out"
    assert main(["transfer", "--model", str(model_dir), "--train", str(tmp_path / "train.tsv"), "--test",
                 str(tmp_path / "test.tsv"), "--output", str(out), "--C", "1e-9", "--curve-points", "0", "--top-k", "2",
                 "--no-progress", "--no-plots"]) == 0
    err = capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert "multiclass task: 21 train / 0 dev / 8 test texts; classes 0, 1, neutral" in err
    warnings = report["data"]["warnings"]
    assert len(warnings) == 3 and all(f"warning: {warning}" in err for warning in warnings)
    assert "train.tsv: 1 empty text(s) (first at row 22)" in warnings[0]
    assert "train.tsv: fewer than 2 training rows for 'neutral' (1)" in warnings[1]
    assert "test.tsv: labels never seen in training: 'positive' (2 rows)" in warnings[2]
    # C = 1e-9 leaves no weight: said so, and every text gets the majority class
    assert report["classifier"]["n_nonzero"] == 0
    assert re.search(r"warning: the classifier kept 0 non-zero weights \(C=1e-09\): it ignores the features and "
                     r"predicts the majority class '(0|1)' for every text", err)
    # the top units, with their weights' signs and their ranges per class, printed and in the report
    assert "top units: their weights, the classes their higher values favour, and their 5th-95th percentile" in err
    top = report["top_units"][0]
    assert set(top["range"]) == set(top["steer"]) == {"0", "1", "neutral"} and all(low <= high for low, high in top["range"].values())
    low, high = top["range"]["neutral"]
    assert re.search(rf"unit +{top['unit']}  weight \S+  higher favours \S.*\|  0 \[.*neutral \[{low:.3g}, {high:.3g}\]", err)
    steering = report["steering"]
    assert steering["state"] == "cell" and steering["pooling"] == "final_cell" and steering["unit"] == top["unit"]

    # generate --pipeline: the folder's model, unit, state and value (and --toward another class's value)
    model = bytezoo.from_pretrained(str(model_dir))
    for toward in (None, "neutral"):
        value = steering["values"][toward or steering["class"]]
        assert main(["generate", "--pipeline", str(out), "--prompt", "A", "--max-new-bytes", "6", "--temperature", "0",
                     *(["--toward", toward] if toward else [])]) == 0
        printed = capsys.readouterr()
        expected = generate_steered(model, "A", neuron=top["unit"], value=value, hold="cell", max_new_bytes=6, temperature=0)
        assert printed.out == expected.texts[0] + "\n" and f"holding unit {top['unit']} of the cell state" in printed.err
    assert main(["generate", "--pipeline", str(out), "--toward", "nope"]) == 2
    assert "--toward 'nope': the pipeline's classes are 0, 1, neutral" in one_error_line(capsys, "generate")


def test_classify_reads_standard_input_and_text_files_and_refuses_another_model(tmp_path, model_dir, capsys, monkeypatch):
    import io
    import sys

    write_split(tmp_path / "train.tsv", 16, 1)
    out = tmp_path / "out"
    assert main(["transfer", "--model", str(model_dir), "--train", str(tmp_path / "train.tsv"), "--output", str(out),
                 "--C", "1", "--curve-points", "0", "--no-plots", "--baseline", "none", "--no-progress"]) == 0
    assert json.loads((out / "classifier.json").read_text())["weights_fingerprint"]
    texts = ["good fun", "awful, dull", "é"]
    expected = [r["label"] for r in SentimentPipeline.from_pretrained(str(out))(texts)]
    (tmp_path / "texts.txt").write_text("".join(f"{text}\n" for text in texts))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("".join(f"{t}\n" for t in texts).encode())))
    for source in (["--input", str(tmp_path / "texts.txt")], ["-"]):
        capsys.readouterr()
        assert main(["classify", "--pipeline", str(out), "--no-progress", *source]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [row["text"] for row in rows] == texts and [row["label"] for row in rows] == expected, source

    # another model (same shape, other weights) is refused in one line, unless allowed
    torch.manual_seed(99)
    other = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8)
    other.save_pretrained(tmp_path / "other")
    assert main(["classify", "--pipeline", str(out), "--model", str(tmp_path / "other"), "good"]) == 2
    assert re.search(r"the classifier was fitted on the features of weights [0-9a-f]{12}, and the model given has weights "
                     r"[0-9a-f]{12} \(retrained, or another model\).*--allow-other-model", one_error_line(capsys, "classify"))
    assert main(["classify", "--pipeline", str(out), "--model", str(tmp_path / "other"), "--allow-other-model", "good",
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "good"
