"""mLSTM kernels against the reference loop and torch.nn.LSTM: training and inference characters/s, FLOP rates, memory.

One run measures every (H, B, T) of the grid with interleaved repetitions (each repetition runs every contender once,
so background load hits them alike) and keeps each contender's fastest repetition, plus the median of the per-repetition
ratios (robust to drift and to one contender's lucky repetition). It prints a table and writes JSON
(device, dtype, versions, raw timings) under benchmarks/results/.

Clocks: on CUDA, wall time (synchronised). On CPU the default is the process's CPU time with one thread
(``--threads 1 --clock cpu``): on a machine shared with other jobs, wall time mostly measures the scheduler (we saw a
tanh over 8K floats "take" 5 ms at load 13 on 2 cores), while one thread's CPU time stays reproducible. Pass
``--threads 0 --clock wall`` for PyTorch's default threads and wall time on an idle machine.

    python benchmarks/bench_kernels.py                                  # CPU fp32, the issue's two CPU shapes
    python benchmarks/bench_kernels.py --dtype bf16                     # CPU bf16 autocast
    python benchmarks/bench_kernels.py --device cuda --dtype bf16 --grid 4096x256x256 --kernels triton,fused

What is timed: one layer of the byte model (embedding -> recurrence -> 256-way head), as in pretraining.
  train     forward + cross-entropy + backward + Adam step, characters/s = B*T / seconds
  infer     forward of the recurrence model only (feature extraction, generation), no grad, with fixed weights: the
            training repetitions come first, then the inference ones, as a user extracting features runs it
  infer_after_update
            the same forward timed right after each training step: the first call after an optimizer step, which
            also rebuilds what inference caches per weight version (the mLSTM's weight norms, input tables and
            panels; nn.LSTM has nothing to rebuild). Until 2026-11-30 this was the only inference figure.
FLOPs per character (forward; a training step counts 3x): mLSTM 10 H^2 (two recurrent products, 1.25x the LSTM's)
+ 512 H (head, trained but not run by the inference forward); nn.LSTM 8 H^2 + 2*64*4H (input projection) + 512 H.
"vs LSTM, FLOP-normalised" is the ratio of achieved FLOP/s. "of mm" divides achieved FLOP/s by the rate of one [B x H] @ [H x 4H] product measured in the same run.
Memory (train): peak of one training step over the analytic minimum = parameters + gradients + Adam's two moments +
saved activations (per character and layer: 4H gate activations, c_t and h_t in the accumulate dtype, and the logits).
CUDA: torch.cuda.max_memory_allocated. CPU: the step's resident-set peak, measured in a fresh subprocess.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _machine.py
from _machine import machine  # noqa: E402  (benchmarks/ is the script's folder)

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EMBEDDING = 64


def build(contender: str, hidden: int, device: str):
    """The model a contender runs: an mLSTM byte LM with that kernel, or the nn.LSTM byte LM."""
    import bytezoo

    torch.manual_seed(0)
    if contender == "lstm":
        model = bytezoo.create_model("lstm-256", hidden_size=hidden, embedding_size=EMBEDDING, num_layers=1)
    else:
        variants = ("fused-eager", "fused-old", "fused-unblocked")
        kernel = "fused" if contender in variants else contender
        model = bytezoo.create_model("mlstm-256", hidden_size=hidden, embedding_size=EMBEDDING, num_layers=1, kernel=kernel)
    return model.to(device)


@contextlib.contextmanager
def loops_for(contender: str):
    """"fused-eager" is the fused kernel with its plain-PyTorch time loops instead of the compiled C++ ones;
    "fused-unblocked" the compiled loops with library GEMMs per step instead of the register-blocked products."""
    from bytezoo.kernels.mlstm import fused_cpu, packing

    before = fused_cpu.USE_COMPILED_LOOPS, packing.BLOCKED_PRODUCTS
    fused_cpu.USE_COMPILED_LOOPS = contender != "fused-eager"
    packing.BLOCKED_PRODUCTS = False if contender == "fused-unblocked" else before[1]
    try:
        yield
    finally:
        fused_cpu.USE_COMPILED_LOOPS, packing.BLOCKED_PRODUCTS = before


def flops_per_char(contender: str, hidden: int, head: bool = True) -> float:
    """Forward multiply-adds x 2 per character; ``head=False`` for the inference forward (no 256-way head)."""
    head = 2 * hidden * 256 if head else 0
    if contender == "lstm":
        return 8 * hidden**2 + 2 * EMBEDDING * 4 * hidden + head
    return 10 * hidden**2 + head


def autocast(device: str, dtype: torch.dtype):
    return torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)


TEXT: bytes | None = None  # --text: what the models read (else uniform random bytes)


def input_ids(batch: int, steps: int, device: str) -> torch.Tensor:
    """(B, T) bytes: uniform random, or with --text B windows spread evenly over the file. The mLSTM reads its input
    projections as rows of (256, 4H) and (256, H) tables: random bytes touch all 256 rows (1.25 MB at H=256, beside
    1.25 MB of weights in a 2 MB L2), English text mostly a few dozen; nn.LSTM's 64-wide embedding does not care."""
    if TEXT is None:
        return torch.randint(0, 256, (batch, steps), device=device)
    stride = (len(TEXT) - steps) // batch
    if stride <= 0:
        raise SystemExit(f"--text has {len(TEXT):,} bytes; B x T = {batch * steps:,} are needed")
    return torch.tensor([list(TEXT[row * stride:row * stride + steps]) for row in range(batch)], device=device)


def make_steps(contender: str, hidden: int, batch: int, steps: int, device: str, dtype: torch.dtype):
    """Returns (train_step, infer_step) closures over one model, optimizer and batch."""
    model = build(contender, hidden, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    ids = input_ids(batch, steps, device)

    def train_step():
        with loops_for(contender):
            with autocast(device, dtype):
                logits = model(ids).logits
            loss = F.cross_entropy(logits.float().view(-1, 256), ids.view(-1))
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer_step():
        if contender == "fused-old":  # the code before the inference cache: weights and tables rebuilt every call
            for layer in model.model.layers:
                layer.__dict__.pop("_inference_cache", None)
        with torch.no_grad(), autocast(device, dtype), loops_for(contender):
            model.model(ids)

    return model, optimizer, train_step, infer_step


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = clock()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def matmul_rate(hidden: int, batch: int, device: str, dtype: torch.dtype, repeats: int = 20) -> float:
    """FLOP/s of one per-step product [B x H] @ [H x 4H] in the compute dtype (best of ``repeats``)."""
    x = torch.randn(batch, hidden, device=device, dtype=dtype)
    w = torch.randn(hidden, 4 * hidden, device=device, dtype=dtype)
    best = min(timed(lambda: [torch.mm(x, w) for _ in range(10)], device) for _ in range(repeats)) / 10
    return 2 * batch * hidden * 4 * hidden / best


def analytic_minimum_bytes(model, hidden: int, batch: int, steps: int, dtype: torch.dtype) -> int:
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    activation_bytes = torch.finfo(torch.promote_types(dtype, torch.float32)).bits // 8
    per_char = (6 * hidden + 256) * activation_bytes  # gates (4H), c, h; logits
    return 4 * params + batch * steps * per_char  # weights, grads, two Adam moments, activations


def measure_memory(contender: str, hidden: int, batch: int, steps: int, device: str, dtype: torch.dtype) -> dict:
    if device == "cuda":
        model, optimizer, train_step, _ = make_steps(contender, hidden, batch, steps, device, dtype)
        train_step()  # creates Adam's state
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        train_step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        minimum = analytic_minimum_bytes(model, hidden, batch, steps, dtype)
        return {"peak_bytes": peak, "analytic_minimum_bytes": minimum, "ratio": peak / minimum}
    # CPU: there is no allocator peak counter, so a fresh process reports its resident-set growth over one step.
    command = [sys.executable, __file__, "--memory-child", f"{contender},{hidden},{batch},{steps},{dtype_name(dtype)}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def memory_child(spec: str) -> None:
    contender, hidden, batch, steps, dtype = spec.split(",")
    hidden, batch, steps, dtype = int(hidden), int(batch), int(steps), DTYPES[dtype]
    import bytezoo  # noqa: F401  (imports happen before the baseline)

    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(Path("/proc/self/statm").read_text().split()[1]) * page  # noqa: E731
    # A tiny model's training step first, so lazily imported modules and one-time buffers are not counted.
    make_steps(contender, 8, 2, 2, "cpu", dtype)[2]()
    gc.collect()
    baseline = rss()
    # The process's own resident high-water mark (VmHWM; ru_maxrss would include the parent's peak, inherited across
    # exec), reset to the current size where the kernel allows it.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    model, optimizer, train_step, _ = make_steps(contender, hidden, batch, steps, "cpu", dtype)
    train_step()  # creates Adam's state; the peak it sets is the step's own peak as well
    status = Path("/proc/self/status").read_text()
    high_water = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024
    peak = high_water - baseline
    minimum = analytic_minimum_bytes(model, hidden, batch, steps, dtype)
    print(json.dumps({"peak_bytes": peak, "analytic_minimum_bytes": minimum, "ratio": peak / minimum}))


MODES = {"train": 3, "infer": 1, "infer_after_update": 1}  # what is timed, and its FLOPs as multiples of a forward's


def run_config(contenders, hidden, batch, steps, device, dtype, repeats, memory) -> dict:
    chars = batch * steps
    closures = {name: make_steps(name, hidden, batch, steps, device, dtype) for name in contenders}
    times = {f"{name}/{mode}": [] for name in contenders for mode in MODES}
    for name, (_, _, train_step, infer_step) in closures.items():  # warm-up: packing checks, Triton compile, caches
        train_step()
        infer_step()
    for _ in range(repeats):  # interleaved: every contender once per repetition
        for name, (_, _, train_step, infer_step) in closures.items():
            times[f"{name}/train"].append(timed(train_step, device))
            times[f"{name}/infer_after_update"].append(timed(infer_step, device))
    for _, _, _, infer_step in closures.values():  # the weights stay as they are from here on
        infer_step()
    for _ in range(repeats):
        for name, (_, _, _, infer_step) in closures.items():
            times[f"{name}/infer"].append(timed(infer_step, device))
    del closures
    mm_rate = matmul_rate(hidden, batch, device, dtype)
    row = {"hidden": hidden, "batch": batch, "steps": steps, "matmul_flops": mm_rate, "contenders": {}}
    for name in contenders:
        entry = {}
        for mode in MODES:
            best = min(times[f"{name}/{mode}"])
            flop_rate = MODES[mode] * flops_per_char(name, hidden, head=mode == "train") * chars / best
            entry[mode] = {"seconds": best, "all_seconds": times[f"{name}/{mode}"], "chars_per_s": chars / best,
                           "flops": flop_rate, "of_matmul_rate": flop_rate / mm_rate}
        if memory:
            entry["memory"] = measure_memory(name, hidden, batch, steps, device, dtype)
        row["contenders"][name] = entry
    return row


def ratios(row: dict, fast: str) -> dict:
    """Speed-ups of ``fast`` from each contender's best repetition, and ("..._median") the median over repetitions of
    the ratio within one repetition: contenders run back to back there, so drift in machine speed cancels, and one
    contender's occasional lucky repetition (nn.LSTM's times were bimodal here) does not decide the result."""
    entries = row["contenders"]
    hidden = row["hidden"]
    out = {}
    for mode in MODES:
        mine = entries[fast][mode]["all_seconds"]
        head = mode == "train"
        lstm_flop_ratio = flops_per_char(fast, hidden, head) / flops_per_char("lstm", hidden, head)
        for peer, key, flop_ratio in (
            ("reference", f"{mode}_vs_reference", 1.0),
            ("lstm", f"{mode}_vs_lstm_flop_normalised", lstm_flop_ratio),
        ):
            if peer not in entries:
                continue
            theirs = entries[peer][mode]["all_seconds"]
            out[key] = min(theirs) / min(mine) * flop_ratio
            out[key + "_median"] = statistics.median(t / m for t, m in zip(theirs, mine)) * flop_ratio
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="fp32, or bf16/fp16 autocast")
    parser.add_argument("--grid", default=None, help="comma-separated HxBxT (default: the issue's targets per device)")
    parser.add_argument(
        "--kernels", default=None,
        help="fast kernels to measure (default: fused,fused-eager on CPU, triton on CUDA); fused-eager = the fused "
        "kernel with its plain-PyTorch time loops instead of the compiled ones; fused-unblocked = the compiled loops "
        "with library GEMMs per step instead of the register-blocked products; fused-old = fused as before issue 16 "
        "(inference rebuilds the weight-normed weights and input tables at every call)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the slow reference loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 on CPU; 0 = PyTorch's default)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default=None, help="default: cpu on CPU, wall on CUDA")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--text", default=None,
                        help="a file whose bytes the models read (default: uniform random bytes; see input_ids)")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/kernels-<device>-<dtype>.json)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0

    device, dtype = args.device, DTYPES[args.dtype]
    global clock, TEXT
    TEXT = Path(args.text).read_bytes() if args.text else None
    clock_name = args.clock or ("wall" if device == "cuda" else "cpu")
    clock = CLOCKS[clock_name]
    threads = args.threads if args.threads is not None else (1 if device == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    grid = args.grid or ("4096x256x256" if device == "cuda" else "256x32x128,1024x64x64")
    shapes = [tuple(int(v) for v in item.lower().split("x")) for item in grid.split(",")]
    fast = (args.kernels or ("triton" if device == "cuda" else "fused,fused-eager")).split(",")
    contenders = fast + ([] if args.no_reference else ["reference"]) + ["lstm"]

    print(f"{device} {args.dtype}: {torch.get_num_threads()} thread(s), {clock_name} clock, best of {args.repeats} interleaved")
    rows = []
    for hidden, batch, steps in shapes:
        row = run_config(contenders, hidden, batch, steps, device, dtype, args.repeats, not args.no_memory)
        row["ratios"] = {name: ratios(row, name) for name in fast}
        rows.append(row)
        print_row(row)

    import bytezoo

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    result = {
        "benchmark": "bench_kernels",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "device": torch.cuda.get_device_name() if device == "cuda" else machine()["cpu_model"],
        "machine": machine(),
        "cpu_threads": torch.get_num_threads(),
        "clock": clock_name,
        "load_average": os.getloadavg(),
        "dtype": args.dtype,
        "input": args.text or "uniform random bytes",
        "versions": {"torch": torch.__version__, "triton": triton_version, "bytezoo": getattr(bytezoo, "__version__", None),
                     "python": platform.python_version()},
        "repeats": args.repeats,
        "rows": rows,
    }
    output = Path(args.output) if args.output else RESULTS / f"kernels-{device}-{args.dtype}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


def print_row(row: dict) -> None:
    print(f"\nH={row['hidden']} B={row['batch']} T={row['steps']}   [B x H]@[H x 4H] product: {row['matmul_flops'] / 1e9:.1f} GFLOP/s")
    print(f"  {'contender':<15} {'train chars/s':>14} {'GFLOP/s':>8} {'of mm':>6} {'infer chars/s':>14} {'GFLOP/s':>8} "
          f"{'after update':>13} {'peak/min mem':>13}")
    for name, entry in row["contenders"].items():
        memory = entry.get("memory")
        print(
            f"  {name:<15} {entry['train']['chars_per_s']:>14,.0f} {entry['train']['flops'] / 1e9:>8.1f} "
            f"{entry['train']['of_matmul_rate']:>6.2f} {entry['infer']['chars_per_s']:>14,.0f} "
            f"{entry['infer']['flops'] / 1e9:>8.1f} {entry['infer_after_update']['chars_per_s']:>13,.0f} "
            f"{memory['ratio'] if memory else float('nan'):>13.2f}"
        )
    for name, values in row["ratios"].items():
        best = ", ".join(f"{key} {value:.2f}x" for key, value in values.items() if not key.endswith("_median"))
        median = ", ".join(f"{value:.2f}x" for key, value in values.items() if key.endswith("_median"))
        print(f"  {name}: {best}\n  {' ' * len(name)}  (median of paired repetitions: {median})")


if __name__ == "__main__":
    raise SystemExit(main())
