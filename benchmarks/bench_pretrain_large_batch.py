"""Puri et al. 2018's finding in miniature: at 32x the batch, scaling the learning rate linearly fails; a capped rate
with warmup and linear decay (``--recipe puri2018``) is the project's answer. Same characters for every run:

    (a) batch 32,        lr 3e-3, linear decay                      (the small-batch baseline)
    (b) batch 32 x 32,   lr 3e-3 x 32 (linear scaling), linear decay
    (c) batch 32 x 32,   --recipe puri2018 with lr 3e-3 per 32 sequences: scaled linearly, capped at 3e-3, warmup, decay

Data: the text column of ../shared/data/sst/unsup.csv (all SST sentences, test ones included: fine for LM
pretraining, but say so), its first 90% rows for training and the last 10% held out for validation BPC.
Model: mlstm-256 with hidden_size=64, seq 16, 393,216 characters per run (the CPU budget of a shared 2-core
machine). Writes benchmarks/results/pretrain-large-batch.{json,md,png}.

    .venv/bin/python benchmarks/bench_pretrain_large_batch.py [--chars 393216] [--seq-len 16] [--hidden-size 64]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from bytezoo.pretrain import pretrain

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _machine.py
from _machine import SHARED_DATA, machine  # noqa: E402  (benchmarks/ is the script's folder)

RESULTS = Path(__file__).parent / "results"
UNSUP = SHARED_DATA / "sst" / "unsup.csv"


def split_corpus(directory: Path) -> tuple[str, str]:
    with open(UNSUP, newline="") as file:
        rows = [row["sentence"] for row in csv.DictReader(file)]
    cut = int(0.9 * len(rows))
    for name, part in (("train.txt", rows[:cut]), ("val.txt", rows[cut:])):
        (directory / name).write_text("".join(text + "\n" for text in part))
    return str(directory / "train.txt"), str(directory / "val.txt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=768 * 32 * 16, help="training characters per run")
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="the small-batch rate")
    args = parser.parse_args()
    if not UNSUP.exists():
        raise SystemExit(f"{UNSUP} is absent: nothing to measure")
    small, large = 32, 32 * 32
    runs = {
        "a": dict(label="(a) batch 32, lr 3e-3", batch_size=small, lr=args.lr),
        "b": dict(label="(b) batch 1024, linear scaling (lr 9.6e-2)", batch_size=large, lr=args.lr * large / small),
        "c": dict(label="(c) batch 1024, --recipe puri2018", batch_size=large, recipe="puri2018", lr=args.lr,
                  base_batch_size=small),
    }
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        train, val = split_corpus(scratch)
        for key, run in runs.items():
            options = {k: v for k, v in run.items() if k != "label"}
            steps = args.chars // (run["batch_size"] * args.seq_len)
            start = time.perf_counter()
            summary = pretrain(data=[train], val_data=[val], output=str(scratch / key), model="mlstm-256",
                               model_config={"hidden_size": args.hidden_size}, seq_len=args.seq_len, max_steps=steps,
                               log_every=max(1, steps // 40), seed=0, progress=False, **options)
            curve = [json.loads(line) for line in (scratch / key / "metrics.jsonl").read_text().splitlines()]
            results[key] = {"label": run["label"], "steps": steps, "peak_lr": summary["peak_lr"],
                            "warmup_steps": summary["warmup_steps"], "characters_seen": summary["characters_seen"],
                            "final_train_bpc": summary["train_bpc"], "val_bpc": summary["val_bpc"],
                            "seconds": time.perf_counter() - start,
                            "curve": [(r["characters_seen"], r["bpc"]) for r in curve if "bpc" in r]}
            print(f"{run['label']}: {steps} steps, val BPC {summary['val_bpc']:.4f} ({results[key]['seconds']:.0f} s)", flush=True)

    base = results["a"]["val_bpc"]
    report = {
        "benchmark": "pretrain-large-batch", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "device": {"cpu": machine()["cpu_model"], "threads": torch.get_num_threads(), "torch": torch.__version__},
        "data": "SST unsup.csv sentences (includes test sentences), first 90% rows train / last 10% validation",
        "model": f"mlstm-256 with hidden_size={args.hidden_size}", "seq_len": args.seq_len, "characters_per_run": args.chars,
        "runs": results, "c_vs_a_relative": results["c"]["val_bpc"] / base - 1, "goal": "(c) within 3% of (a)",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrain-large-batch.json").write_text(json.dumps(report, indent=2))
    lines = ["| run | steps | peak lr | warmup | val BPC | vs (a) | seconds |", "|---|---|---|---|---|---|---|"]
    for r in results.values():
        lines.append(f"| {r['label']} | {r['steps']} | {r['peak_lr']:.2e} | {r['warmup_steps']} | {r['val_bpc']:.4f} | "
                     f"{100 * (r['val_bpc'] / base - 1):+.1f}% | {r['seconds']:.0f} |")
    (RESULTS / "pretrain-large-batch.md").write_text(
        f"# Large-batch pretraining in miniature ({report['date']})\n\n{report['model']}, seq {args.seq_len}, "
        f"{args.chars:,} training characters per run, {report['data']}.\n\n" + "\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for r in results.values():
        xs, ys = zip(*r["curve"])
        axis.plot(xs, ys, label=f"{r['label']}: val {r['val_bpc']:.3f}")
    axis.set_xlabel("training characters")
    axis.set_ylabel("training BPC")
    axis.set_ylim(top=min(8.5, axis.get_ylim()[1]))
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "pretrain-large-batch.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
