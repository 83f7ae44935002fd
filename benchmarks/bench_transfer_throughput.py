"""Feature-extraction throughput of ``bytezoo.transfer.Featurizer`` on CPU, against the matrix-product rate measured in
the same run.

    .venv/bin/python benchmarks/bench_transfer_throughput.py --hidden 1024 --batch-size 128 --texts 512

Per byte and text an mLSTM layer does two recurrent matrix products, ``h @ W_mh`` (2H² FLOP) and ``m @ W_h`` (8H² FLOP):
10H² FLOP per byte (the input projections are row gathers from precomputed tables for a byte model). The achieved
rate is ``10 H² × bytes/s``; the reference rate is the same two products, timed alone at the same shapes
([B×H]·[H×H] and [B×H]·[H×4H]), in the same process. Their ratio says how much of the time goes to the recurrence's
matrix work rather than to everything else (elementwise gates, Python, padding). Texts are SST sentences when
../shared/data/sst is present (else random sentences of the same length distribution).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

import bytezoo
from bytezoo.transfer import Featurizer

from _machine import SHARED_DATA, cpu_model, machine  # noqa: E402  (benchmarks/ is the script's folder)

SST = SHARED_DATA / "sst" / "train.csv"


def load_texts(count: int, seed: int) -> tuple[list[str], str]:
    if SST.is_file():
        from bytezoo.data.labelled import read_dataset

        texts = read_dataset(str(SST)).texts
        random.Random(seed).shuffle(texts)
        return texts[:count], str(SST)
    rng = random.Random(seed)
    words = "the film was a great dull moving funny story of love and war with bad acting".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) for _ in range(count)], "synthetic"




def matmul_rate(batch: int, hidden: int, dtype: torch.dtype, repeats: int = 30) -> float:
    """FLOP/s of the recurrence's two products at its shapes, timed back to back as the recurrence runs them."""
    h = torch.randn(batch, hidden, dtype=dtype)
    w_mh = torch.randn(hidden, hidden, dtype=dtype)
    w_h = torch.randn(hidden, 4 * hidden, dtype=dtype)
    with torch.inference_mode():
        for _ in range(3):  # warm-up
            h @ w_mh
            h @ w_h
        started = time.perf_counter()
        for _ in range(repeats):
            h @ w_mh
            h @ w_h
        seconds = time.perf_counter() - started
    return repeats * 10 * batch * hidden * hidden / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=None, help="Featurizer chunk_size (default: the Featurizer's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "transfer-throughput.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = bytezoo.create_model("mlstm-1024", hidden_size=args.hidden).eval()
    texts, source = load_texts(args.texts, seed=0)
    runs = []
    for dtype_name in args.dtype:
        dtype = torch.float32 if dtype_name == "float32" else torch.bfloat16
        options = {} if args.chunk_size is None else {"chunk_size": args.chunk_size}
        featurizer = Featurizer(model, batch_size=args.batch_size, dtype=dtype_name, progress=False, **options).fit()
        featurizer.transform(texts[: args.batch_size // 4])  # warm-up: allocator, oneDNN primitives
        rate_before = matmul_rate(args.batch_size, args.hidden, dtype)
        featurizer.transform(texts)
        stats = featurizer.extraction_stats_
        rate_after = matmul_rate(args.batch_size, args.hidden, dtype)
        achieved = 10 * args.hidden**2 * stats["bytes_per_second"]
        reference = (rate_before + rate_after) / 2
        run = {
            "dtype": dtype_name,
            "texts": stats["texts"],
            "characters": stats["characters"],
            "bytes": stats["bytes"],
            "seconds": stats["seconds"],
            "characters_per_second": stats["characters"] / stats["seconds"],
            "bytes_per_second": stats["bytes_per_second"],
            "achieved_gflops": achieved / 1e9,
            "matmul_gflops": reference / 1e9,
            "matmul_gflops_before_after": [rate_before / 1e9, rate_after / 1e9],
            "fraction_of_matmul_rate": achieved / reference,
        }
        runs.append(run)
        print(json.dumps(run))
    result = {
        "benchmark": "transfer feature extraction throughput",
        "command": f"python benchmarks/bench_transfer_throughput.py --hidden {args.hidden} --batch-size {args.batch_size} --texts {args.texts} --chunk-size {featurizer.chunk_size} --dtype {' '.join(args.dtype)}",
        "model": {"preset": "mlstm-1024", "hidden_size": args.hidden, "kernel": model.config.kernel},
        "batch_size": args.batch_size,
        "chunk_size": featurizer.chunk_size,
        "data": source,
        "runs": runs,
        "machine": machine(),
        "device": {
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
