"""Thread counts under a competing load: does bytezoo's thread policy (bytezoo.threads) hold up?

For each workload (featurize SST sentences, a pretraining step, token-by-token generation; mlstm-256 H=256, random
weights) and each thread setting, a fresh process times the work, with no load of ours and then with one busy-loop
process started (and killed) by this script. Settings: 1 thread; 2 threads with PyTorch's defaults (libgomp spins);
2 threads with OMP_WAIT_POLICY=PASSIVE; 2 threads with a bounded libgomp spin (GOMP_SPINCOUNT); "auto" = what the
``bytezoo`` command does (the wait policy chosen from the load before torch loads, then the measured count).
Settings alternate within each round, and every figure is a median over rounds of the work's own wall time (start-up
excluded); a run past --timeout (start-up included) counts as the timeout. The machine is shared, so the load average is recorded next to the results.

    python benchmarks/bench_threads.py --rounds 3
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
from _machine import SHARED_DATA, machine  # noqa: E402  (benchmarks/ is the script's folder)

RESULTS = Path(__file__).resolve().parent / "results"
UNSUP = SHARED_DATA / "sst" / "unsup.csv"
SETTINGS = {
    "1 thread": ("1", {}),
    "2 threads (default spin)": ("2", {}),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": ("2", {"OMP_WAIT_POLICY": "PASSIVE"}),
    # libgomp spins GOMP_SPINCOUNT times (a pause instruction each) before it sleeps: a short spin bridges the few
    # microseconds between one time step's parallel regions without holding a core a busy process needs.
    "2 threads, GOMP_SPINCOUNT=1000": ("2", {"GOMP_SPINCOUNT": "1000"}),
    "2 threads, GOMP_SPINCOUNT=10000": ("2", {"GOMP_SPINCOUNT": "10000"}),
    "2 threads, GOMP_SPINCOUNT=100000": ("2", {"GOMP_SPINCOUNT": "100000"}),
    # what the bytezoo command does: the wait policy from the load before torch loads, the count measured, re-measured
    "auto (bytezoo policy)": ("auto", {}),
}


def child(work: str, threads: str, sentences: int) -> None:
    import csv

    if threads == "auto":
        from bytezoo.threads import openmp_wait_before_torch

        openmp_wait_before_torch()  # as bytezoo.cli.main does before a subcommand imports torch
    import torch

    import bytezoo
    from bytezoo.threads import configure_threads

    configure_threads(log=False)  # "auto": measured; otherwise BYTEZOO_NUM_THREADS, set by the parent
    torch.manual_seed(0)
    model = bytezoo.create_model("mlstm-256", hidden_size=256, num_layers=1)
    if work == "featurize":
        from bytezoo.transfer import Featurizer

        with open(UNSUP, newline="") as handle:
            texts = [row["sentence"] for row in csv.DictReader(handle)][:sentences]
        featurizer = Featurizer(model, progress=False).fit()
        featurizer.transform(texts[:16])
        start = time.perf_counter()
        featurizer.transform(texts)
    elif work == "pretrain":
        optimizer = torch.optim.Adam(model.parameters(), 1e-4)
        ids = torch.randint(0, 256, (32, 64))

        def step():
            model(ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        step()
        start = time.perf_counter()
        for _ in range(3):
            step()
    else:  # generate
        model.eval()
        ids = torch.tensor([list(b"\n This film was ")])
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=4, do_sample=False)
            start = time.perf_counter()
            model.generate(ids, max_new_tokens=60, do_sample=False)
    print(json.dumps({"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}))


def run_one(work, setting, sentences, timeout):
    threads, extra = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "BYTEZOO_NUM_THREADS")}
    env.update(extra)
    if threads != "auto":
        env["BYTEZOO_NUM_THREADS"] = threads  # also what the library's own ensure_threads then keeps
    try:
        out = subprocess.run([sys.executable, __file__, "--child", work, threads, str(sentences)], env=env,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": float(timeout), "timed_out": True}
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=90.0, help="per run, start-up included")
    parser.add_argument("--works", default="featurize,pretrain,generate")
    parser.add_argument("--output", default=str(RESULTS / "threads.json"))
    parser.add_argument("--settings", default=";".join(SETTINGS), help="names from SETTINGS, separated by ;")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    works = args.works.split(",")
    settings = args.settings.split(";")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    runs: dict[str, list] = {}
    loads = {}
    for load in ("no load of ours", "one busy-loop process"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "no load of ours" else None
        loads[load] = {"before": os.getloadavg()}
        try:
            if busy:
                time.sleep(1.0)
            for _ in range(args.rounds):
                for work in works:
                    for setting in settings:
                        runs.setdefault(f"{load} | {work} | {setting}", []).append(
                            run_one(work, setting, args.sentences, args.timeout))
        finally:
            if busy:
                busy.kill()
                busy.wait()
        loads[load]["after"] = os.getloadavg()
        print(load, loads[load], flush=True)
    summary = {}
    for key, values in runs.items():
        load, work, setting = key.split(" | ")
        seconds = [v["seconds"] for v in values]
        summary.setdefault(load, {}).setdefault(work, {})[setting] = {
            "median_seconds": statistics.median(seconds), "threads_used": [v.get("threads") for v in values],
            "timed_out": sum(bool(v.get("timed_out")) for v in values)}
    for load, works_ in summary.items():
        for work, settings in works_.items():
            best = min(s["median_seconds"] for s in settings.values())
            for setting, s in settings.items():
                s["of_best"] = s["median_seconds"] / best
                print(f"{load:>22} {work:>10} {setting:>36}: {s['median_seconds']:7.2f} s  {s['of_best']:5.2f}x best  "
                      f"threads {s['threads_used']}")
    result = {"benchmark": "threads", "machine": machine(), "rounds": args.rounds, "sentences": args.sentences,
              "timeout_s": args.timeout, "loads": loads, "summary": summary, "runs": runs,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
