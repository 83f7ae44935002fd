"""``bytezoo demo``: the main job end to end, as a new user meets it.

On the embedded default (real drug reviews shipped in a PyPI package, see :mod:`bytezoo.data.embedded`), or on your own
data with ``--lm-data`` / ``--train --dev --test``:

1. pretrain a small model through ``bytezoo pretrain`` (the same code path as a multi-GPU run): ``--model``, any zoo
   preset (default a 256-unit mLSTM), sized down with ``--model-config`` if you like;
2. export it (safetensors) and push it to a hub (a local folder unless ``--hub`` names another fsspec URL), in a
   repository named after the preset (``OUTPUT/hub/mlstm-256@demo``);
3. load it back from the hub with ``from_pretrained`` and check it reproduces the exported model's logits;
4. run ``bytezoo transfer`` on the labelled data: features (the model's own pooling), L1 logistic regression, the
   sentiment neuron, plots, and a TF-IDF baseline measured in the same run;
5. fine-tune the pretrained model (``bytezoo finetune``'s loop: a classifier head, every weight trained) at a few of
   the comparison's label counts, on the same rows (by default the largest count and the one nearest the geometric
   midpoint of the smallest and the largest);
6. print a summary table (with validation BPC beside gzip/bz2/xz/zstd on the same held-out bytes, and the majority
   class, TF-IDF, the probe and fine-tuning at the same numbers of labels) and write ``summary.json`` / ``summary.md``
   and ``comparison.png``; everything lands in ``--output``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEMO_TAG = "demo"  # the hub repository is named after the preset: OUTPUT/hub/<preset>@demo
MIN_FINETUNE_STEPS = 20  # a small label count still gets this many optimizer steps (epochs of one or two batches)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the main job: pretrain, export, share, transfer and report on the embedded default data",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", default="outputs/demo", help="output folder for everything (default: outputs/demo)")
    parser.add_argument("--model", default="mlstm-256", help="zoo preset to pretrain (default: mlstm-256)")
    parser.add_argument("--model-config", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset's config field (repeatable)")
    parser.add_argument("--max-steps", type=int, default=1200, help="pretraining steps (default: 1200)")
    parser.add_argument("--batch-size", type=int, default=32, help="parallel byte streams (default: 32)")
    parser.add_argument("--seq-len", type=int, default=128, help="truncated-backprop window in bytes (default: 128)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate (default: 2e-3)")
    parser.add_argument("--lm-data", action="append",
                        help="pretraining text (default: the embedded reviews' train split)")
    parser.add_argument("--lm-val-data", action="append",
                        help="validation text for BPC (default: the embedded dev split)")
    parser.add_argument("--train", help="labelled training set (default: embedded)")
    parser.add_argument("--dev", help="labelled dev set (default: embedded)")
    parser.add_argument("--test", help="labelled test set (default: embedded)")
    parser.add_argument("--text-col", default="text", help="text column of the labelled sets (default: text)")
    parser.add_argument("--label-col", nargs="+", default=["label"], help="label column(s) (default: label)")
    parser.add_argument("--hub", help="hub URL to share the model through (default: OUTPUT/hub, a local folder)")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    parser.add_argument("--finetune-counts", nargs="*", type=int, metavar="N",
                        help="label counts to fine-tune at, among the comparison's (default: the largest and the "
                             "log-midpoint one; the option with no count: no fine-tuning)")
    parser.add_argument("--finetune-epochs", type=float, default=2,
                        help="epochs per fine-tuning run, raised to at least 20 steps for a small count, at most 10 "
                             "epochs (default: 2; dev evaluated every epoch or 10 steps, early stopping)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    summary = run_demo(args)
    print(format_summary(summary))
    return 0


def run_demo(args: argparse.Namespace) -> dict:
    """Run the five steps; returns the summary that is also written to ``OUTPUT/summary.json``."""
    from bytezoo.untrusted import jsonio

    started = time.perf_counter()
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    quiet = ["--no-progress"] if args.no_progress else []
    data = _demo_data(args, output)
    _section("1/5 pretraining")
    exported, training = pretrain_step(args, data, output / "pretrain", quiet)
    _section("2/5 pushing to the hub")
    repository, version = push_step(args, exported, output)
    reference = f"{repository}@{version}"
    _section("3/5 loading from the hub")
    check_hub_copy(exported, reference)
    _section("4/5 transfer")
    transfer_dir = output / "transfer"
    report = transfer_step(args, data, reference, transfer_dir, quiet)
    # 5. Fine-tuning: one more curve in the comparison, at a few of its label counts, on the same rows.
    _section("5/5 fine-tuning")
    finetuned = finetune_curve(args, exported, data["train"], data["dev"], data["test"], report["comparison"],
                               output / "finetune")
    summary = {
        "output": str(output),
        "model": args.model,
        "pretraining": {key: training.get(key) for key in ("steps", "characters_seen", "val_bpc", "train_bpc",
                                                           "chars_per_second", "train_seconds", "val_compression")},
        "hub": {"repository": repository, "version": version, "reference": reference},
        "transfer": _transfer_summary(report),
        "finetune": finetuned["finetune"],
        "comparison": finetuned["comparison"],  # the transfer comparison plus fine-tuning (where it was run)
        "files": {
            "model": str(exported),
            "report": str(transfer_dir / "report.json"),
            "plots": {name: str(transfer_dir / file) for name, file in report["files"]["plots"].items()},
            "classifier": str(transfer_dir),
            "curves": str(output / "pretrain" / "curves.png"),
            "comparison": finetuned["plot"],
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    (output / "summary.json").write_text(jsonio.dumps(summary, indent=2) + "\n")
    (output / "summary.md").write_text(format_summary(summary) + "\n")
    return summary


def _demo_data(args: argparse.Namespace, output: Path) -> dict:
    """0. The data: the embedded default fills in whatever was not given."""
    from bytezoo.data.embedded import prepare_embedded_default

    needs_default = not (args.lm_data and args.train and args.test)
    default = prepare_embedded_default(output / "data") if needs_default else None
    return {
        "lm": args.lm_data or [str(default.lm_train)],
        "lm_val": args.lm_val_data or ([str(default.lm_val)] if default else []),
        "train": args.train or str(default.train),
        "dev": args.dev or (str(default.dev) if default and not args.train else None),
        "test": args.test or str(default.test),
    }


def pretrain_step(args: argparse.Namespace, data: dict, pretrain_dir: Path, quiet: list[str]) -> tuple[Path, dict]:
    """1. Pretrain, through the command users run on GPUs; returns the exported model and its training summary."""
    from bytezoo import cli

    argv = ["pretrain", "--model", args.model, "--output", str(pretrain_dir), "--max-steps", str(args.max_steps),
            "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--lr", str(args.lr),
            "--schedule", "cosine", "--warmup", str(max(1, args.max_steps // 20)),
            "--mixed-precision", args.mixed_precision, "--eval-every", str(max(1, args.max_steps // 6)),
            "--save-every", str(max(1, args.max_steps // 2)),
            "--overwrite"]  # the demo's own folder: running the main job again replaces its earlier run
    for path in data["lm"]:
        argv += ["--data", path]
    for path in data["lm_val"]:
        argv += ["--val-data", path]
    for override in args.model_config:
        argv += ["--model-config", override]
    _call(cli, argv + quiet, "pretraining")
    exported = pretrain_dir / "model"
    return exported, json.loads((exported / "training_summary.json").read_text())


def push_step(args: argparse.Namespace, exported: Path, output: Path) -> tuple[str, str]:
    """2. Share the exported model through the hub, in a repository named after the preset."""
    from bytezoo import hub

    hub_url = args.hub or (output / "hub").as_uri()
    repository = f"{hub_url.rstrip('/')}/{args.model}"
    version = hub.push(exported, repository, tag=DEMO_TAG, move_tag=True)  # the demo's own tag: this run's model
    print(f"pushed {exported} as {repository}@{version}")
    return repository, version


def check_hub_copy(exported: Path, reference: str) -> None:
    """3. Load the model back from the hub: the shared model must be the trained one, to the last bit."""
    import torch

    import bytezoo

    probe = torch.tensor([list("This medicine worked wonders for me.".encode())])
    with torch.no_grad():
        local_logits = bytezoo.from_pretrained(exported).eval()(probe).logits
        shared = bytezoo.from_pretrained(reference).eval()
        hub_logits = shared(probe).logits
    max_difference = float((hub_logits - local_logits).abs().max())
    if max_difference != 0.0:
        raise RuntimeError(f"the model loaded from {reference} differs from the exported one "
                           f"(max |Δlogit| {max_difference})")
    print(f"loaded {type(shared).__name__} from {reference}: logits identical to the exported model")


def transfer_step(args: argparse.Namespace, data: dict, reference: str, transfer_dir: Path, quiet: list[str]) -> dict:
    """4. Transfer: features, L1 logistic regression, the sentiment neuron, plots, the TF-IDF baseline; its report."""
    from bytezoo import cli

    argv = ["transfer", "--model", reference, "--train", data["train"], "--test", data["test"],
            "--output", str(transfer_dir), "--text-col", args.text_col, "--label-col", *args.label_col,
            "--baseline", "tfidf", "--overwrite"]  # the demo's own folder: running the main job again replaces it
    if data["dev"]:
        argv += ["--dev", data["dev"]]
    _call(cli, argv + quiet, "transfer")
    return json.loads((transfer_dir / "report.json").read_text())


def _transfer_summary(report: dict) -> dict:
    """What the demo's summary keeps of the transfer report."""
    return {
        "task": report["task"],
        "model_type": report["model"]["model_type"],
        "pooling": report["featurizer"]["pooling"],
        "metric": report["metric"],
        "classes": report["data"]["classes"],
        "test_accuracy": report["accuracy"]["test"],
        "dev_accuracy": report["accuracy"]["dev"],
        "n_nonzero": report["classifier"]["n_nonzero"],
        "top_unit": report["top_units"][0]["unit"],
        "top_unit_test_accuracy": report["top_unit_classifier"]["test_accuracy"],
        "tfidf_test_accuracy": report["baselines"].get("tfidf", {}).get("test_accuracy"),
        "majority_test_accuracy": _majority_accuracy(report),
        "characters_per_second": report["featurization"]["characters_per_second"],
        "comparison": report["comparison"],  # majority, TF-IDF and the probe at the same label counts
    }


def default_finetune_counts(n_train: list[int]) -> list[int]:
    """The largest label count and the one nearest the geometric midpoint of the smallest and the largest."""
    if len(n_train) < 2:
        return list(n_train)
    middle = (n_train[0] * n_train[-1]) ** 0.5
    return sorted({min(n_train[:-1], key=lambda n: abs(n - middle)), n_train[-1]})


def finetune_curve(args, model: Path, train: str, dev: str | None, test: str, transfer_comparison: dict,
                   folder: Path) -> dict:
    """Fine-tune ``model`` at some of the comparison's label counts (one run each, on the rows ``training_subset``
    draws for that count: the probe's and TF-IDF's rows) and add fine-tuning to a copy of the comparison; the counts
    not fine-tuned hold ``accuracy: None`` (``"run": false``). Returns ``{"finetune", "comparison", "plot"}``."""
    import copy
    import math

    from bytezoo.finetune import compare as finetune_compare
    from bytezoo.finetune.trainer import FinetuneConfig, run
    from bytezoo.transfer import comparison as compare
    from bytezoo.data.labelled import read_dataset
    from bytezoo.transfer.plots import plot_comparison

    comparison = copy.deepcopy(transfer_comparison)
    available = comparison["n_train"]
    wanted = default_finetune_counts(available) if args.finetune_counts is None else sorted(set(args.finetune_counts))
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise SystemExit(f"bytezoo demo: --finetune-counts {unknown} are not among the comparison's label counts "
                         f"{available}")
    if not wanted or comparison["split"] is None:
        return {"finetune": {"counts": [], "note": "not run"}, "comparison": comparison, "plot": None}
    started = time.perf_counter()
    labels = read_dataset(train, args.text_col, args.label_col).labels  # as transfer read them: the same draws
    seed = comparison["draws"]["seed"]
    batch_size, lr, body_lr, patience = 32, 2e-3, 5e-4, 3
    runs = {}
    for n in wanted:
        rows = compare.training_subset(labels, n, seed)
        steps_per_epoch = math.ceil(n / batch_size)
        epochs = min(10.0, max(args.finetune_epochs, math.ceil(MIN_FINETUNE_STEPS / steps_per_epoch)))
        print(f"fine-tuning on {n:,} of {len(labels):,} labels (at most {epochs:g} epochs)", flush=True)
        summary = run(FinetuneConfig(
            train=train, dev=dev, test=test, model=str(model), output=str(folder / f"n-{n}"), text_col=args.text_col,
            label_cols=list(args.label_col), train_rows=None if n >= len(labels) else [int(i) for i in rows],
            batch_size=batch_size, epochs=epochs, eval_every=max(steps_per_epoch, 10), lr=lr, body_lr=body_lr,
            warmup=0.1, patience=patience, seed=seed,
            mixed_precision=args.mixed_precision, overwrite=True, progress=not args.no_progress, log_every=10))
        metric = summary["metric"]
        runs[n] = {"n_train": n, "accuracy": (summary["test_metrics"] or {}).get(metric),
                   "dev_accuracy": (summary["best_dev"] or {}).get(metric), "run": True, "steps": summary["steps"],
                   "epochs": summary["epochs"], "stopped_by": summary["stopped_by"],
                   "train_seconds": summary["train_seconds"], "model": str(folder / f"n-{n}" / "model")}
    points = [runs.get(n, {"n_train": n, "accuracy": None, "run": False}) for n in available]
    shown = ", ".join(f"{n:,}" for n in runs)
    compare.add_method(comparison, finetune_compare.FINETUNE, f"fine-tuned, all weights ({shown} labels only)", points)
    plot = folder.parent / finetune_compare.PLOT_FILE
    plot_comparison(comparison, str(plot))
    note = (f"fine-tuned at {shown} of the {len(available)} label counts, each a separate run from the pretrained "
            f"model (batch {batch_size}, head rate {lr:g}, body rate {body_lr:g}, {args.finetune_epochs:g} epochs or "
            f"{MIN_FINETUNE_STEPS} steps whichever is more, at most 10 epochs, dev evaluated every epoch or 10 steps, "
            f"early stopping with patience {patience}); the "
            "other counts were not fine-tuned, to keep the main job short")
    return {"finetune": {"counts": list(runs), "note": note, "runs": list(runs.values()),
                         "seconds": round(time.perf_counter() - started, 1)},
            "comparison": comparison, "plot": str(plot)}


def _majority_accuracy(report: dict) -> float | None:
    """Accuracy of always predicting the training set's most frequent class: the floor every model must beat."""
    test = report["data"].get("test")
    train_counts = report["data"]["train"]["label_counts"]
    if report["task"] == "multilabel" or not test or not train_counts:
        return None
    majority = max(train_counts, key=train_counts.get)
    return test["label_counts"].get(majority, 0) / test["rows"]


def format_summary(summary: dict) -> str:
    from bytezoo.pretrain.compression import describe
    from bytezoo.transfer.comparison import format_table

    pretraining, transfer = summary["pretraining"], summary["transfer"]

    def percent(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    rows = [
        ("pretraining", f"{pretraining['steps']} steps, {pretraining['characters_seen']:,} characters, "
                        f"{pretraining['chars_per_second']:,.0f} char/s"),
        ("validation BPC", f"{pretraining['val_bpc']:.3f} bits per character"),
        ("standard compressors", describe(pretraining.get("val_compression"))),
        ("shared as", summary["hub"]["reference"]),
        (f"test {transfer['metric']} ({transfer['model_type']} {transfer['pooling']} features + L1 LR)",
         f"{percent(transfer['test_accuracy'])} ({transfer['n_nonzero']} non-zero weights)"),
        ("test, top unit alone", f"{percent(transfer['top_unit_test_accuracy'])} (unit {transfer['top_unit']})"),
        ("test, TF-IDF baseline (same run)", percent(transfer["tfidf_test_accuracy"])),
        ("test, majority class", percent(transfer["majority_test_accuracy"])),
        ("feature extraction", f"{transfer['characters_per_second']:,.0f} char/s"),
        ("report", summary["files"]["report"]),
        ("plots", ", ".join(summary["files"]["plots"].values())),
        ("model", summary["files"]["model"]),
        ("fine-tuning", _describe_finetune(summary.get("finetune"))),
        ("total time", f"{summary['seconds']:.0f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["", f"bytezoo demo — {summary['model']} — everything in {summary['output']}", ""]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    compression = pretraining.get("val_compression") or {}
    if compression.get("compressors"):
        sizes = ", ".join(f"{name} {entry['compressed_bytes']:,}" for name, entry in compression["compressors"].items())
        lines += ["", f"  compressed sizes of the {compression['raw_bytes']:,} held-out bytes: {sizes} bytes;",
                  "  small held-out sets handicap compressors (headers, no prior over the language)"]
    comparison = summary.get("comparison") or transfer.get("comparison")
    if comparison:
        lines += [""] + ["  " + line for line in format_table(comparison).splitlines()]
        if (summary.get("finetune") or {}).get("counts"):
            lines += ["  n/a: not measured; " + summary["finetune"]["note"]]
        if summary["files"].get("comparison"):
            lines += [f"  plot: {summary['files']['comparison']}"]
    return "\n".join(lines)


def _describe_finetune(finetune: dict | None) -> str:
    if not finetune or not finetune.get("counts"):
        return "not run"
    runs = ", ".join(f"{r['n_train']:,} labels: {r['steps']} steps" for r in finetune["runs"])
    return "; ".join([runs, f"{finetune['seconds']:.0f} s"])


def _section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _call(cli, argv: list[str], what: str) -> None:
    code = cli.main(argv)
    if code:
        raise SystemExit(f"bytezoo demo: {what} failed (exit code {code}); see the messages above")
