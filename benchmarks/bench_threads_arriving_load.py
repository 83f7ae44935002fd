"""A busy process arrives while a job runs: does bytezoo's thread policy give the core back, and take it again?

A child process pretrains ``mlstm-256`` (random weights, B=32, T=64, Adam) for ``--seconds``, calling
``bytezoo.threads.ensure_threads`` every step as the pretraining loop does, and logs each step's wall time and thread
count. The parent starts a ``while True: pass`` process at ``--arrive`` seconds and kills it at ``--leave``. Settings,
run one after the other: "auto" (what the ``bytezoo`` command does: the wait policy chosen from the load before torch
loads, the count re-measured every ``RECHECK_SECONDS``) and "2 threads, default spin" (PyTorch's defaults). The machine
should otherwise be idle: the load average is recorded.

    python benchmarks/bench_threads_arriving_load.py --seconds 100 --arrive 25 --leave 70

Phases are by wall clock from the child's launch (its start-up included in "before").
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _machine.py
from _machine import machine  # noqa: E402  (benchmarks/ is the script's folder)

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {"auto": {}, "2 threads, default spin": {"BYTEZOO_NUM_THREADS": "2"}}


def child(seconds: float) -> None:
    if not os.environ.get("BYTEZOO_NUM_THREADS"):
        from bytezoo.threads import openmp_wait_before_torch

        openmp_wait_before_torch()  # as bytezoo.cli.main does
    import torch

    import bytezoo
    from bytezoo.threads import ensure_threads

    torch.manual_seed(0)
    model = bytezoo.create_model("mlstm-256", hidden_size=256, num_layers=1)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    ids = torch.randint(0, 256, (32, 64))
    policy = os.environ.get("OMP_WAIT_POLICY") or (f"GOMP_SPINCOUNT={os.environ['GOMP_SPINCOUNT']}" if "GOMP_SPINCOUNT" in os.environ else "default")
    start = time.perf_counter()
    steps = []
    while time.perf_counter() - start < seconds:
        ensure_threads("cpu")
        began = time.perf_counter()
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        steps.append((time.time(), time.perf_counter() - began, torch.get_num_threads()))  # wall clock: the parent's
    print(json.dumps({"policy": policy, "steps": steps}))


def per_second(steps: list[tuple[float, float, int]]) -> list[list]:
    """[second since launch, steps begun in it, median step ms, thread counts seen] per second with steps."""
    seconds: dict[int, list] = {}
    for began, duration, threads in steps:
        seconds.setdefault(int(began), []).append((duration, threads))
    return [[second, len(rows), round(1000 * statistics.median(d for d, _ in rows), 2), sorted({n for _, n in rows})]
            for second, rows in sorted(seconds.items())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=100.0)
    parser.add_argument("--arrive", type=float, default=25.0)
    parser.add_argument("--leave", type=float, default=70.0)
    parser.add_argument("--output", default=str(RESULTS / "threads-arriving-load.json"))
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    result = {"benchmark": "threads-arriving-load", "machine": machine(), "seconds": args.seconds,
              "arrive": args.arrive, "leave": args.leave, "settings": {}}
    for name, extra in SETTINGS.items():
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "BYTEZOO_NUM_THREADS")}
        env.update(extra, BYTEZOO_QUIET_THREADS="1")
        load_before = os.getloadavg()
        process = subprocess.Popen([sys.executable, __file__, "--child", str(args.seconds)], env=env,
                                   stdout=subprocess.PIPE, text=True)
        busy = None
        started = time.time()
        try:
            time.sleep(args.arrive)
            arrived = time.time()
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(max(0.0, args.leave - args.arrive))
            left = time.time()
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        out, _ = process.communicate()
        run = json.loads(out.strip().splitlines()[-1])
        phases = {"before": (started, arrived), "busy": (arrived, left), "after": (left, float("inf"))}  # wall clock
        summary = {}
        for phase, (lo, hi) in phases.items():
            rows = [(t, d, n) for t, d, n in run["steps"] if lo <= t < hi]
            if rows:
                summary[phase] = {"median_step_s": statistics.median(d for _, d, _ in rows), "steps": len(rows),
                                  "threads": sorted({n for _, _, n in rows})}
        result["settings"][name] = {"policy": run["policy"], "summary": summary, "load_before": load_before,
                                    "per_second": per_second([(t - started, d, n) for t, d, n in run["steps"]])}
        print(name, run["policy"], json.dumps(summary), flush=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
