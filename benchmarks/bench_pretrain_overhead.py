"""Pipeline overhead: characters/s of the full ``bytezoo pretrain`` loop (streaming data, per-step loss reduction,
logging, TensorBoard, periodic checkpoints) against the bare training step of the same model and batch (forward with
the carried state, fp32 loss, backward, clipping, Adam). Goal: the loop keeps >= 90% of the bare throughput.

The two are measured alternately, ``--repeats`` times, and compared by their medians, since other work on the machine
moves both. Writes benchmarks/results/pretrain-overhead.json.

    .venv/bin/python benchmarks/bench_pretrain_overhead.py [--hidden-size 256 --batch-size 32 --seq-len 128 --steps 40]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import bytezoo
from bytezoo.pretrain import pretrain

RESULTS = Path(__file__).parent / "results"
DATA = Path("/work/shared/data/sst/train.csv")


def bare_steps(model, optimizer, batch_size: int, seq_len: int, steps: int) -> float:
    """Characters/s of ``steps`` bare training steps on random bytes (one warm-up step not timed)."""
    windows = torch.randint(0, 256, (steps + 1, batch_size, seq_len + 1))
    state = None
    for index, window in enumerate(windows):
        if index == 1:
            start = time.perf_counter()
        out = model(input_ids=window[:, :-1], state=state, use_cache=True)  # logits (B, T, 256)
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), window[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state = tuple(part.detach() for part in out.state)
    return steps * batch_size * seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is absent: nothing to measure")
    config = {"hidden_size": args.hidden_size}
    model = bytezoo.create_model("mlstm-256", **config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    bare, loop, wall = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            bare.append(bare_steps(model, optimizer, args.batch_size, args.seq_len, args.steps))
            start = time.perf_counter()
            summary = pretrain(data=[str(DATA)], output=f"{scratch}/run{repeat}", model="mlstm-256", model_config=config,
                               batch_size=args.batch_size, seq_len=args.seq_len, max_steps=args.steps,
                               save_every=args.steps // 2, log_every=10, progress=False, lr=1e-3)
            wall.append(time.perf_counter() - start)
            loop.append(summary["chars_per_second"])
            print(f"repeat {repeat}: bare {bare[-1]:,.0f} char/s, loop {loop[-1]:,.0f} char/s", flush=True)
    ratio = statistics.median(loop) / statistics.median(bare)
    report = {
        "benchmark": "pretrain-overhead", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "model": f"mlstm-256 hidden_size={args.hidden_size}", "batch_size": args.batch_size, "seq_len": args.seq_len,
        "steps": args.steps, "loop_includes": "data streaming, loss all-reduce, metrics.jsonl + TensorBoard every 10 steps, "
        f"a checkpoint every {args.steps // 2} steps", "bare_chars_per_second": bare, "loop_chars_per_second": loop,
        "loop_wall_seconds_including_startup_and_export": wall, "ratio_of_medians": ratio, "goal": ">= 0.90",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrain-overhead.json").write_text(json.dumps(report, indent=2))
    print(f"loop / bare = {ratio:.3f} (goal >= 0.90)")


if __name__ == "__main__":
    main()
