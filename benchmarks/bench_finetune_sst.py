"""SST (binary): does fine-tuning a pretrained byte-level LM beat its frozen probe, TF-IDF, and the same architecture
fine-tuned from random weights, at 100, 1,000 and all 6,920 labels?

    OMP_NUM_THREADS=1 nohup .venv/bin/python benchmarks/bench_finetune_sst.py --model /tmp/ftsst/lm/model \\
        --work /tmp/ftsst > /tmp/ftsst/bench.log 2>&1 &

``--model`` is a causal LM checkpoint; with ``--pretrain`` the script first pretrains one (mlstm-256 on the sentences
of ../shared/data/sst/unsup.csv, the command in :data:`PRETRAIN`). **unsup.csv holds every SST sentence, the test
sentences included**: the LM has read the test texts (without their labels). Everything is scored on SST test.csv;
dev.csv chooses C (probe, TF-IDF) and the fine-tuned weights (early stopping, best dev evaluation exported).

At each label count the rows are ``bytezoo.transfer.comparison.training_subset(train labels, n, seed 0)``, the same
for every method. Cells: majority class and TF-IDF (per count), the probe (features once, then per count), fine-tuning
from the pretrained LM and from random initialisation (the ``mlstm-256`` preset) per count. Results are rewritten after
every cell (``benchmarks/results/finetune-sst.json``, ``.md`` and ``finetune-sst-comparison.png``), so a partial run
still leaves figures; a cell not yet measured shows ``n/a``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from bytezoo.zoo.recurrent_lm import POOLINGS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import SHARED_DATA, cpu_model  # noqa: E402

SST = SHARED_DATA / "sst"
RESULTS = Path(__file__).resolve().parent / "results"
PRETRAIN = ["pretrain", "--model", "mlstm-256", "--data", str(SST / "unsup.csv"), "--text-field", "sentence",
            "--batch-size", "32", "--seq-len", "128", "--lr", "2e-3", "--schedule", "cosine", "--warmup", "100",
            "--max-steps", "3600", "--max-time", "15m", "--no-progress"]
METHODS = {  # name -> label, in the order of the table
    "majority": "majority class",
    "tfidf": "TF-IDF word 1-2grams + L2 LR",
    "probe": "frozen mlstm-256 features ({pooling}) + L1 LR",
    "finetune": "fine-tuned from the pretrained LM",
    "scratch": "same architecture fine-tuned from random init",
}


def epochs_for(n: int, max_epochs: float, small_epochs: float) -> float:
    """At 100 labels an epoch is 4 steps of 32: allow more epochs there (early stopping on dev still decides)."""
    return small_epochs if n <= 100 else max_epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pretrained causal LM checkpoint (default: WORK/lm/model, made with --pretrain)")
    parser.add_argument("--pretrain", action="store_true", help="pretrain the LM first (PRETRAIN, ~15 min on one thread)")
    parser.add_argument("--work", default="/tmp/bytezoo-finetune-sst", help="run folders")
    parser.add_argument("--counts", nargs="+", type=int, default=[100, 1000, 6920])
    parser.add_argument("--max-epochs", type=float, default=3, help="epochs at n > 100 (default: 3)")
    parser.add_argument("--small-epochs", type=float, default=20, help="epochs at n <= 100 (default: 20)")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3, help="the head's peak rate")
    parser.add_argument("--body-lr", type=float, default=5e-4, help="the body's peak rate")
    parser.add_argument("--result", default=str(RESULTS / "finetune-sst.json"))
    parser.add_argument("--pooling", default="final_cell", choices=POOLINGS,
                        help="the feature the probe and the fine-tuned head read (default: final_cell)")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(METHODS), help="methods not to measure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    from bytezoo.finetune import compare as finetune_compare
    from bytezoo.finetune.trainer import FinetuneConfig, run
    from bytezoo.transfer import comparison as compare
    from bytezoo.data.labelled import read_dataset

    started = time.perf_counter()
    model = args.model or str(work / "lm" / "model")
    pretrain_seconds = None
    if args.pretrain:
        tick = time.perf_counter()
        command = [sys.executable, "-m", "bytezoo.cli", *PRETRAIN, "--output", str(work / "lm"), "--overwrite"]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        pretrain_seconds = time.perf_counter() - tick
    training = json.loads((Path(model) / "training_summary.json").read_text())

    train, dev, test = (read_dataset(str(SST / f"{name}.csv"), "sentence", ["label"]) for name in ("train", "dev", "test"))
    counts = sorted({min(n, len(train)) for n in args.counts})
    seed = 0
    cells: dict[str, dict[int, dict]] = {name: {} for name in METHODS}
    timings: dict[str, float] = {}
    result = {
        "benchmark": "SST binary: fine-tuning vs frozen probe vs TF-IDF vs from-scratch, same label counts and draws",
        "command": "OMP_NUM_THREADS=1 python benchmarks/bench_finetune_sst.py " + " ".join(sys.argv[1:]),
        "data": {"train": len(train), "dev": len(dev), "test": len(test), "source": str(SST)},
        "pretraining": {
            "model": model, "command": "bytezoo " + " ".join(PRETRAIN), "seconds": pretrain_seconds,
            "note": ("mlstm-256 pretrained on the sentences of SST unsup.csv, which holds every SST sentence INCLUDING "
                     "THE TEST SENTENCES: the LM has read the test texts (not their labels)"),
            "training_summary": training,
        },
        "finetune_settings": {"batch_size": 32, "lr_head": args.lr, "lr_body": args.body_lr, "schedule": "linear",
                              "warmup": 0.1, "patience": args.patience, "eval": "dev, once per epoch; best exported",
                              "epochs": {str(n): epochs_for(n, args.max_epochs, args.small_epochs) for n in counts},
                              "pooling": args.pooling, "threads": 1, "tuned": "no: one setting for every cell"},
        "machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_at_start": os.getloadavg()},
    }

    def save(final: bool = False) -> None:
        comparison = compare.new_comparison("test", "accuracy", len(test), counts, seed)
        for name, label in METHODS.items():
            if name in args.skip:
                continue
            points = [cells[name].get(n, {"n_train": n, "accuracy": None, "pending": True}) for n in counts]
            shown = label.format(pooling=args.pooling.replace("_", " "))
            compare.add_method(comparison, name, shown, points, **({"constant": True} if name == "majority" else {}))
        result.update(comparison=comparison, timings=dict(timings), complete=final,
                      seconds=time.perf_counter() - started, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        result["machine"]["load_average_now"] = os.getloadavg()
        path = Path(args.result)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        path.with_suffix(".md").write_text(markdown(result) + "\n")
        from bytezoo.transfer.plots import plot_comparison

        plot_comparison(comparison, str(path.with_name(path.stem + "-comparison.png")))
        print(compare.format_table(comparison), flush=True)

    # Baselines: majority class and TF-IDF on each count's rows.
    for n in counts:
        rows = compare.training_subset(train.labels, n, seed)
        cells["majority"][n] = {"n_train": n, **compare.majority_point("binary", train.labels[rows], test.labels)}
        if "tfidf" not in args.skip:
            tick = time.perf_counter()
            cells["tfidf"][n] = {"n_train": n, **finetune_compare.tfidf_point(train, dev, test, rows, seed)}
            timings[f"tfidf_{n}_s"] = time.perf_counter() - tick
        save()

    # The frozen probe: features of every split once, an L1 LR per count.
    if "probe" not in args.skip:
        tick = time.perf_counter()
        config = FinetuneConfig(train="", output="", model=model, seed=seed, progress=False,
                                model_config={"classifier_pooling": args.pooling})
        for point in finetune_compare.probe_points(config, train, dev, test, counts, print):
            cells["probe"][point["n_train"]] = point
        timings["probe_s"] = time.perf_counter() - tick
        save()

    # Fine-tuning, from the pretrained LM and from random weights, one run per count on the same rows.
    for name, start in (("finetune", model), ("scratch", "mlstm-256")):
        if name in args.skip:
            continue
        for n in counts:
            rows = compare.training_subset(train.labels, n, seed)
            epochs = epochs_for(n, args.max_epochs, args.small_epochs)
            config = FinetuneConfig(
                train=str(SST / "train.csv"), dev=str(SST / "dev.csv"), test=str(SST / "test.csv"), model=start,
                output=str(work / f"{name}-{args.pooling}-n{n}"), text_col="sentence", label_cols=["label"],
                model_config={"classifier_pooling": args.pooling},
                train_rows=None if n >= len(train) else [int(i) for i in rows], batch_size=32, epochs=epochs,
                lr=args.lr, body_lr=args.body_lr, warmup=0.1, patience=args.patience, seed=seed, overwrite=True,
                progress=False, log_every=50)
            tick = time.perf_counter()
            summary = run(config)
            timings[f"{name}_{n}_s"] = time.perf_counter() - tick
            cells[name][n] = {"n_train": n, "accuracy": summary["test_metrics"]["accuracy"],
                              "dev_accuracy": summary["best_dev"]["accuracy"], "epochs": summary["epochs"],
                              "steps": summary["steps"], "best_step": summary["best_step"],
                              "stopped_by": summary["stopped_by"], "train_seconds": summary["train_seconds"],
                              "seconds_per_epoch": summary["seconds_per_epoch"],
                              "texts_per_second": summary["texts_seen"] / max(summary["train_seconds"], 1e-9)}
            result["machine"][f"load_average_after_{name}_{n}"] = os.getloadavg()
            save()
    save(final=True)
    print(f"wrote {args.result} (+ .md, -comparison.png) in {time.perf_counter() - started:.0f} s")


def markdown(result: dict) -> str:
    comparison = result["comparison"]
    counts = comparison["n_train"]
    lines = ["# SST binary: fine-tuning vs the frozen probe vs TF-IDF vs from-scratch", "",
             f"Test accuracy (%) on {comparison['n_eval']} SST test sentences; at each label count every method is "
             "fitted on the same seeded stratified draw of SST train (`training_subset`, seed 0). "
             "± is one standard error from the test set alone.", "",
             "| method | " + " | ".join(f"n = {n:,}" for n in counts) + " |",
             "|---|" + "---:|" * len(counts)]
    for method in comparison["methods"]:
        cells = []
        for point in method["points"]:
            if point.get("accuracy") is None:
                cells.append("n/a")
            else:
                cells.append(f"{100 * point['accuracy']:.1f} ± {100 * point['stderr']:.1f}")
        lines.append(f"| {method['label']} | " + " | ".join(cells) + " |")
    winners = []
    for index, n in enumerate(counts):
        scored = [(m["points"][index]["accuracy"], m["label"]) for m in comparison["methods"]
                  if m["points"][index].get("accuracy") is not None]
        if scored:
            best = max(scored)
            winners.append(f"n = {n:,}: **{best[1]}** ({100 * best[0]:.1f}%)")
    lines += ["", "Best at each count: " + "; ".join(winners) + ".", ""]
    tuned = [m for m in comparison["methods"] if m["name"] in ("finetune", "scratch")]
    for method in tuned:
        for point in method["points"]:
            if point.get("accuracy") is not None:
                lines.append(f"- {method['label']}, n = {point['n_train']:,}: {point['steps']} steps "
                             f"({point['epochs']:.1f} epochs, stopped by {point['stopped_by']}, best step "
                             f"{point['best_step']}), {point['seconds_per_epoch']:.1f} s per epoch (dev evaluation included)")
    machine, pretraining, settings = result["machine"], result["pretraining"], result["finetune_settings"]
    summary = pretraining["training_summary"]
    lines += ["", f"Machine: {machine['cpu']}, {machine['cpu_count']} cores shared with other jobs, one torch thread; "
              f"load average at start {machine['load_average_at_start'][0]:.1f}, now {machine['load_average_now'][0]:.1f}.",
              f"Pretraining: {pretraining['note']}; {summary.get('steps')} steps, {summary.get('characters_seen'):,} "
              f"characters, {summary.get('train_seconds', 0) / 60:.1f} min, final train BPC {summary.get('train_bpc', 0):.2f}.",
              f"Fine-tuning: batch {settings['batch_size']}, head rate {settings['lr_head']:g}, body rate "
              f"{settings['lr_body']:g}, linear decay, 10% warmup, epochs {settings['epochs']} (capped), early "
              f"stopping on dev with patience {settings['patience']}, not tuned.",
              f"Complete: {result['complete']}; {result['seconds'] / 60:.1f} min of benchmark (pretraining excluded)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
