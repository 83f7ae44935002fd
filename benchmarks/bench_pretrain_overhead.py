"""Pipeline overhead: characters/s of the full ``bytezoo pretrain`` loop (streaming data, per-step loss reduction,
logging, TensorBoard, periodic checkpoints) against the bare training step of the same model and batch (forward with
the carried state, fp32 loss, backward, clipping, Adam) on the same windows. Goal: the loop keeps >= 90% of the bare
throughput.

The two are measured alternately, ``--repeats`` times, and compared by their medians, both per wall-clock second and
per CPU second of this process (on a machine shared with other work neither is steady: run it on a quiet one; the
load average at the end is recorded). The loop's rate is the difference of a ``2 x steps`` run and a ``steps`` run, so
start-up (sizing the corpus, building the model) and the export cancel out. Writes
benchmarks/results/pretrain-overhead.json.

    .venv/bin/python benchmarks/bench_pretrain_overhead.py [--hidden-size 256 --batch-size 32 --seq-len 128 --steps 40]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F

import bytezoo
from bytezoo.pretrain import pretrain
from bytezoo.data.packed import PackedCorpus, pack
from bytezoo.pretrain.data import ByteStreams, StreamLayout

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _machine.py
from _machine import SHARED_DATA, machine  # noqa: E402  (benchmarks/ is the script's folder)

RESULTS = Path(__file__).parent / "results"
DATA = SHARED_DATA / "sst" / "train.csv"


def bare_steps(model, optimizer, batch_size: int, seq_len: int, steps: int) -> tuple[float, float]:
    """Characters per wall second and per CPU second of ``steps`` bare training steps (one warm-up step not timed) on
    the same windows and reset masks the loop trains on, built before the clock starts."""
    with tempfile.TemporaryDirectory() as folder:  # the loop packs the same file into OUTPUT/corpus
        pack([str(DATA)], folder, progress=False, overwrite=True)
        corpus = PackedCorpus.open(folder)
        layout = StreamLayout.plan(corpus.total_bytes, batch_size, 1 << 20)
        windows = list(islice(ByteStreams(corpus, layout, first_stream=0, batch_size=batch_size, seq_len=seq_len),
                              steps + 1))
    state = None
    for index, window in enumerate(windows):
        if index == 1:
            start, start_cpu = time.perf_counter(), time.process_time()
        out = model(input_ids=window.input_ids, state=state, reset_mask=window.reset_mask, use_cache=True)  # (B, T, 256)
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), window.targets.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state = tuple(part.detach() for part in out.state)
    chars = steps * batch_size * seq_len
    return chars / (time.perf_counter() - start), chars / (time.process_time() - start_cpu)


def loop_run(output: str, config: dict, args, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds of a whole ``bytezoo pretrain`` run of ``steps`` steps."""
    start, start_cpu = time.perf_counter(), time.process_time()
    pretrain(data=[str(DATA)], output=output, model="mlstm-256", model_config=config, batch_size=args.batch_size,
             seq_len=args.seq_len, max_steps=steps, save_every=args.steps // 2, log_every=10, progress=False, lr=1e-3)
    return time.perf_counter() - start, time.process_time() - start_cpu


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
    bare, bare_cpu, loop, loop_cpu = [], [], [], []
    chars = args.steps * args.batch_size * args.seq_len
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            wall, cpu = bare_steps(model, optimizer, args.batch_size, args.seq_len, args.steps)
            bare.append(wall)
            bare_cpu.append(cpu)
            short = loop_run(f"{scratch}/short{repeat}", config, args, args.steps)
            long = loop_run(f"{scratch}/long{repeat}", config, args, 2 * args.steps)
            loop.append(chars / (long[0] - short[0]))
            loop_cpu.append(chars / (long[1] - short[1]))
            print(f"repeat {repeat}: bare {bare[-1]:,.0f} char/s ({bare_cpu[-1]:,.0f} per CPU s), "
                  f"loop {loop[-1]:,.0f} char/s ({loop_cpu[-1]:,.0f} per CPU s)", flush=True)
    ratio = statistics.median(loop) / statistics.median(bare)
    ratio_cpu = statistics.median(loop_cpu) / statistics.median(bare_cpu)
    report = {
        "benchmark": "pretrain-overhead", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "device": {"cpu": machine()["cpu_model"], "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "load_average_at_end": os.getloadavg()},
        "model": f"mlstm-256 hidden_size={args.hidden_size}", "batch_size": args.batch_size, "seq_len": args.seq_len,
        "steps": args.steps, "loop_includes": "data streaming, loss all-reduce, metrics.jsonl + TensorBoard every 10 steps, "
        f"a checkpoint every {args.steps // 2} steps",
        "bare_chars_per_second": bare, "loop_chars_per_second": loop, "ratio_of_medians_wall": ratio,
        "bare_chars_per_cpu_second": bare_cpu, "loop_chars_per_cpu_second": loop_cpu, "ratio_of_medians_cpu": ratio_cpu,
        "goal": ">= 0.90",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrain-overhead.json").write_text(json.dumps(report, indent=2))
    print(f"loop / bare = {ratio:.3f} per wall second, {ratio_cpu:.3f} per CPU second (goal >= 0.90)")


if __name__ == "__main__":
    main()
