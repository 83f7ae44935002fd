"""The GPU path in one run: the Triton mLSTM engine against the reference (fp32, fp16, bf16; forward and every
gradient) at H=4096, training and inference characters/s against cuDNN nn.LSTM (FLOP-normalised) at B=256, T=256 with
peak memory, fp16 training with dynamic loss scaling (skipped steps counted, the schedule not advanced by them), 2-process
DDP where 2 GPUs are visible; one JSON with the device name under benchmarks/results/.

    PYTHONPATH=src python3 benchmarks/gpu_check.py              # on a CUDA machine: about 4-6 minutes on one H100/H200
    python benchmarks/gpu_check.py --smoke --out /tmp/check     # the same plan on CPU, tiny, in seconds (the suite runs it)

``--smoke`` runs every stage with Triton's CPU interpreter (TRITON_INTERPRET=1), tiny shapes (H=16) and fp16 autocast
with ``torch.amp.GradScaler("cpu")``, so the script has run end to end before a GPU ever sees it. The exit code is 1 if
any check fails; the JSON says which and by how much, and the last lines printed are a table of the stages.

Stages, in order (each timed; a failing stage is recorded and the next one still runs):

1. ``kernel``: per dtype, the Triton engine's outputs, final state and gradients of every input against the reference
   loop in float64 on the same inputs (fresh random, masks with resets and holds), by relative error
   ``||x - ref64|| / ||ref64||``. It passes if it is at most twice the error of the reference loop run in that dtype
   (flash-attention's rule) plus two units in the last place of that dtype at 1 (a floor for tiny problems), and never
   NaN.
2. ``throughput``: bench_kernels.run_config (the kernels benchmark's own measurement) for the Triton mLSTM and cuDNN
   nn.LSTM byte models, fp16 and bf16 autocast: train/infer characters/s, achieved FLOP/s, the FLOP-normalised ratio
   to nn.LSTM, and peak memory of a training step against the analytic minimum.
3. ``fp16``: (a) the components' own loop, autocast fp16 + ``torch.amp.GradScaler``, lr from the schedule as a function
   of applied updates, 200 steps, with an infinite gradient planted at steps 2 and 3; every skipped step (the scale
   dropped, no update) is counted, the planted ones must be among them, and the lr must stand still on each. (b) ``bytezoo pretrain --mixed-precision fp16`` itself (Accelerate's scaler) for
   200 steps: summary updates + skipped = steps, and metrics.jsonl's lr at every step equals the schedule at the
   updates applied before it. On CPU (``--smoke``) Accelerate runs fp16 as fp32 (no scaler): (b) then checks 0 skips.
4. ``ddp``: with 2+ GPUs, ``torchrun --nproc_per_node 2 -m bytezoo.cli pretrain --mixed-precision fp16`` for 30 steps;
   its summary must report 2 processes and finite BPC. Skipped (and said so) with fewer GPUs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

if "--smoke" in sys.argv:  # before triton is imported anywhere: its kernels then run on CPU tensors
    os.environ["TRITON_INTERPRET"] = "1"

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_kernels, _machine
RESULTS = HERE / "results"
WORDS = ("the film was good bad great boring plot acting slow fun dull moving script actors story end loved hated "
         "music scenes funny sad long short best worst director camera").split()

PLANS = {  # what each stage runs at, on a GPU and in the smoke test
    "gpu": {"device": "cuda", "kernel_shape": (4, 32, 4096), "throughput": (4096, 256, 256), "repeats": 3,
            "fp16_model": {"hidden_size": 1024}, "fp16_batch": 64, "fp16_seq": 128, "fp16_steps": 200,
            "ddp_steps": 30},
    "smoke": {"device": "cpu", "kernel_shape": (2, 6, 32), "throughput": (16, 2, 4), "repeats": 1,
              "fp16_model": {"hidden_size": 16, "embedding_size": 8}, "fp16_batch": 2, "fp16_seq": 8, "fp16_steps": 6,
              "ddp_steps": 3},
}
FLOORS = {dtype: 2 * torch.finfo(dtype).eps for dtype in (torch.float32, torch.float16, torch.bfloat16)}  # two ulps at 1
INJECTED_OVERFLOWS = (2, 3)  # steps whose gradient is made infinite: dynamic loss scaling must skip them


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.double(), reference.double()
    return float((value - reference).norm() / reference.norm().clamp(min=1e-300))


def scan_with_grads(kernel: str, inputs, reset, hold, output_grads):
    """(hs, cs, h_T, c_T) and the gradients of every input for ``sum(output * output_grad)``."""
    from bytezoo.kernels import mlstm_scan

    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    outputs = mlstm_scan(*leaves, reset=reset, hold=hold, return_cells=True, kernel=kernel)
    torch.autograd.backward(outputs, [g.to(o.dtype) for o, g in zip(outputs, output_grads)])
    return [o.detach() for o in outputs], [leaf.grad for leaf in leaves]


def check_kernel(plan: dict) -> dict:
    """Triton vs the float64 reference, with the reference in the same dtype as the yardstick."""
    batch, steps, hidden = plan["kernel_shape"]
    device = plan["device"]
    names = ["hs", "cs", "h_T", "c_T", "d_gates_x", "d_mult_x", "d_w_mh", "d_w_h", "d_h0", "d_c0"]
    report = {"batch": batch, "steps": steps, "hidden": hidden, "dtypes": {}, "passed": True}
    generator = torch.Generator().manual_seed(int(time.time()))  # fresh inputs every run
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        def randn(*shape, scale=1.0):
            return (torch.randn(*shape, generator=generator) * scale).to(device)

        base = [randn(batch, steps, 4 * hidden), randn(batch, steps, hidden), randn(hidden, hidden, scale=hidden**-0.5),
                randn(hidden, 4 * hidden, scale=hidden**-0.5), randn(batch, hidden), randn(batch, hidden)]
        reset = (torch.rand(batch, steps, generator=generator) < 0.2).to(device)
        hold = (torch.rand(batch, steps, generator=generator) < 0.2).to(device)
        reset[0, 0], hold[-1, -1] = True, True
        output_grads = [randn(batch, steps, hidden), randn(batch, steps, hidden), randn(batch, hidden), randn(batch, hidden)]
        as_dtype = [x.to(dtype) for x in base[:4]] + base[4:]  # products in dtype, the state in fp32
        reference64, grads64 = scan_with_grads("reference", [x.double() for x in base], reset, hold, output_grads)
        same_dtype, same_grads = scan_with_grads("reference", as_dtype, reset, hold, output_grads)
        triton_out, triton_grads = scan_with_grads("triton", as_dtype, reset, hold, output_grads)
        rows = {}
        for name, want, yardstick, got in zip(names, reference64 + grads64, same_dtype + same_grads, triton_out + triton_grads):
            error, baseline = relative_error(got, want), relative_error(yardstick, want)
            ok = math.isfinite(error) and error <= 2 * baseline + FLOORS[dtype]
            rows[name] = {"triton": error, "reference_same_dtype": baseline, "passed": ok}
            report["passed"] &= ok
        report["dtypes"][str(dtype).removeprefix("torch.")] = rows
    return report


def check_throughput(plan: dict) -> dict:
    import bench_kernels

    hidden, batch, steps = plan["throughput"]
    memory = plan["device"] == "cuda"  # on CPU a fresh process per contender: not what this smoke is for
    report = {"hidden": hidden, "batch": batch, "steps": steps, "dtypes": {}, "passed": True}
    # On CPU the smoke times fp32 only: oneDNN's nn.LSTM refuses bf16 autocast at these tiny sizes, and the CPU's
    # figures are bench_kernels.py's business; the plumbing is the same.
    dtypes = (("fp16", torch.float16), ("bf16", torch.bfloat16)) if plan["device"] == "cuda" else (("fp32", torch.float32),)
    for name, dtype in dtypes:
        row = bench_kernels.run_config(["triton", "lstm"], hidden, batch, steps, plan["device"], dtype,
                                       plan["repeats"], memory)
        row["ratios"] = bench_kernels.ratios(row, "triton")
        for contender in row["contenders"].values():  # the raw repetitions stay in all_seconds
            report["passed"] &= all(math.isfinite(contender[mode]["chars_per_s"]) for mode in bench_kernels.MODES)
        report["dtypes"][name] = row
    return report


def synthetic_text(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    words, total = [], 0
    while total < size:
        word = rng.choice(WORDS)
        words.append(word)
        total += len(word) + 1
    path.write_text(" ".join(words) + "\n")


def scaler_loop(plan: dict, work: Path) -> dict:
    """autocast fp16 + GradScaler over bytezoo's own pieces (model, byte streams, schedule): skipped steps counted,
    the schedule advanced by applied updates only."""
    import bytezoo
    from bytezoo.data.packed import PackedCorpus, pack
    from bytezoo.pretrain.data import ByteStreams, StreamLayout
    from bytezoo.pretrain.evaluation import LN2, token_loss
    from bytezoo.pretrain.schedules import Schedule

    device, batch, seq = plan["device"], plan["fp16_batch"], plan["fp16_seq"]
    total = plan["fp16_steps"]
    synthetic_text(work / "loop.txt", batch * (seq + 1) * 40, seed=1)
    pack([str(work / "loop.txt")], str(work / "loop-packed"), progress=False)
    corpus = PackedCorpus.open(str(work / "loop-packed"))
    layout = StreamLayout.plan(corpus.total_bytes, batch, 1 << 20)
    torch.manual_seed(0)
    model = bytezoo.create_model("mlstm-256", **plan["fp16_model"]).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    schedule = Schedule(5e-4, total)
    scaler = torch.amp.GradScaler(device)
    updates, skipped, lrs, bpcs, state, epoch = 0, [], [], [], None, 0
    windows = ByteStreams(corpus, layout, first_stream=0, batch_size=batch, seq_len=seq, prefetch=False)
    for step in range(total):
        if len(windows) == 0:
            epoch += 1
            windows, state = ByteStreams(corpus, layout, first_stream=0, batch_size=batch, seq_len=seq, epoch=epoch,
                                         prefetch=False), None
        window = next(windows)
        lr = schedule(updates)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, targets, reset = (t.to(device) for t in (window.input_ids, window.targets, window.reset_mask))
        with torch.autocast(device, dtype=torch.float16):
            out = model(input_ids=ids, state=state, reset_mask=reset, use_cache=True)
        nll, count = token_loss(out.logits, targets)
        scaler.scale(nll / targets.numel()).backward()
        if step in INJECTED_OVERFLOWS:  # an overflowed gradient, as fp16 produces now and then: this step must be skipped
            next(model.parameters()).grad.view(-1)[0] = float("inf")
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scale_before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        state = tuple(part.detach() for part in out.state)
        if scaler.get_scale() < scale_before:  # inf/NaN gradients: the step was skipped, the scale halved
            skipped.append(step)
        else:
            updates += 1
        lrs.append(lr)
        bpcs.append(nll.item() / max(int(count), 1) / LN2)
    stood_still = all(lrs[i + 1] == lrs[i] for i in skipped if i + 1 < len(lrs))
    expected_lrs = []
    applied = 0
    for step in range(total):
        expected_lrs.append(schedule(applied))
        applied += step not in skipped
    first, last = sum(bpcs[:5]) / 5 if total >= 5 else bpcs[0], sum(bpcs[-5:]) / min(5, total)
    return {"steps": total, "updates": updates, "skipped_steps": skipped, "injected_overflows": sorted(INJECTED_OVERFLOWS),
            "final_scale": scaler.get_scale(),
            "lr_stood_still_on_skipped_steps": stood_still, "lr_is_schedule_of_updates": lrs == expected_lrs,
            "first_bpc": first, "last_bpc": last, "bpc_finite": all(map(math.isfinite, bpcs)),
            "passed": updates + len(skipped) == total and stood_still and lrs == expected_lrs
            and set(INJECTED_OVERFLOWS) <= set(skipped)
            and all(map(math.isfinite, bpcs)) and (device == "cpu" or last < first)}


def pretrain_command(plan: dict, work: Path, output: Path, steps: int) -> list[str]:
    overrides = [arg for key, value in plan["fp16_model"].items() for arg in ("--model-config", f"{key}={value}")]
    return ["pretrain", "--model", "mlstm-256", *overrides, "--data", str(work / "train.txt"), "--output", str(output),
            "--batch-size", str(plan["fp16_batch"]), "--seq-len", str(plan["fp16_seq"]), "--max-steps", str(steps),
            "--mixed-precision", "fp16", "--log-every", "1", "--no-progress", "--overwrite"]


def trainer_fp16(plan: dict, work: Path) -> dict:
    """``bytezoo pretrain --mixed-precision fp16`` itself: skipped steps from its summary, lr from its metrics."""
    import warnings

    from bytezoo.cli import main
    from bytezoo.pretrain.schedules import Schedule

    synthetic_text(work / "train.txt", plan["fp16_batch"] * (plan["fp16_seq"] + 1) * 60, seed=2)
    output = work / "pretrain-fp16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # on CPU: "fp16 on CPU: Accelerate trains in fp32"
        code = main(pretrain_command(plan, work, output, plan["fp16_steps"]))
    summary = json.loads((output / "summary.json").read_text())
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "lr" in r]
    schedule = Schedule(summary["peak_lr"], summary["max_steps"], summary["schedule"], summary["warmup_steps"])
    lr_follows_updates = all(record["lr"] == schedule(previous["updates"] if previous else 0)
                             for previous, record in zip([None] + records[:-1], records))
    skipped = summary["steps"] - summary["updates"]
    return {"exit_code": code, "steps": summary["steps"], "updates": summary["updates"], "skipped_steps": skipped,
            "mixed_precision": summary["mixed_precision"], "train_bpc": summary["train_bpc"],
            "chars_per_second": summary["chars_per_second"], "lr_is_schedule_of_updates": lr_follows_updates,
            "passed": code == 0 and lr_follows_updates and skipped >= 0 and math.isfinite(summary["train_bpc"])
            and (summary["mixed_precision"] == "fp16" or plan["device"] == "cpu")}


def check_fp16(plan: dict, work: Path) -> dict:
    loop, trainer = scaler_loop(plan, work), trainer_fp16(plan, work)
    return {"scaler_loop": loop, "pretrain": trainer, "passed": loop["passed"] and trainer["passed"]}


def check_ddp(plan: dict, work: Path) -> dict:
    visible = torch.cuda.device_count() if plan["device"] == "cuda" else 0
    if visible < 2:
        return {"skipped": f"{visible} CUDA GPU(s) visible; 2-process DDP needs 2", "passed": True}
    output = work / "pretrain-ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
               "-m", "bytezoo.cli", *pretrain_command(plan, work, output, plan["ddp_steps"])]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    summary = json.loads((output / "summary.json").read_text()) if (output / "summary.json").is_file() else {}
    return {"exit_code": result.returncode, "seconds": time.perf_counter() - started,
            "num_processes": summary.get("num_processes"), "train_bpc": summary.get("train_bpc"),
            "chars_per_second": summary.get("chars_per_second"), "stderr_tail": result.stderr[-2000:],
            "passed": result.returncode == 0 and summary.get("num_processes") == 2
            and math.isfinite(summary.get("train_bpc") or float("nan"))}


def device_info(plan: dict) -> dict:
    from _machine import machine

    info = {"machine": machine(), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if plan["device"] == "cuda":
        properties = torch.cuda.get_device_properties(0)
        info.update(device=properties.name, capability=f"{properties.major}.{properties.minor}",
                    multiprocessors=properties.multi_processor_count, memory_bytes=properties.total_memory,
                    gpus_visible=torch.cuda.device_count())
    else:
        info.update(device=f"CPU ({info['machine']['cpu_model']}), Triton interpreter", gpus_visible=0)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the same plan on CPU, tiny shapes, Triton's interpreter")
    parser.add_argument("--out", default=None, help="folder for the JSON (default: benchmarks/results)")
    parser.add_argument("--stages", default="kernel,throughput,fp16,ddp", help="comma-separated subset to run")
    args = parser.parse_args(argv)
    plan = PLANS["smoke" if args.smoke else "gpu"]
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible: run with --smoke on a CPU")
    os.environ.setdefault("BYTEZOO_QUIET_THREADS", "1")
    stages = {"kernel": check_kernel, "throughput": check_throughput, "fp16": check_fp16, "ddp": check_ddp}
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "smoke": args.smoke,
              "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()}, **device_info(plan),
              "stages": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bytezoo-gpu-check-") as work:
        for name in args.stages.split(","):
            begun = time.perf_counter()
            try:
                function = stages[name]
                result = function(plan, Path(work)) if name in ("fp16", "ddp") else function(plan)
            except Exception as error:  # recorded, and the next stage still runs
                result = {"passed": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
            result["seconds"] = time.perf_counter() - begun
            report["stages"][name] = result
            print(f"[gpu_check] {name}: {'ok' if result['passed'] else 'FAILED'} in {result['seconds']:.1f} s", flush=True)
    report["seconds"] = time.perf_counter() - started
    report["passed"] = all(stage["passed"] for stage in report["stages"].values())
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", report["device"].lower()).strip("-")[:60]
    path = out / f"gpu-check-{'smoke' if args.smoke else slug}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_summary(report, path)
    return 0 if report["passed"] else 1


def print_summary(report: dict, path: Path) -> None:
    print(f"\n{report['device']}  torch {report['torch']}  triton {report['triton']}  ({report['seconds']:.0f} s)")
    stages = report["stages"]
    kernel = stages.get("kernel", {})
    for dtype, rows in kernel.get("dtypes", {}).items():
        worst = max(rows.items(), key=lambda item: item[1]["triton"] / (2 * item[1]["reference_same_dtype"] + 1e-30))
        print(f"  kernel {dtype:<8} worst {worst[0]}: triton {worst[1]['triton']:.2e} vs reference in {dtype} "
              f"{worst[1]['reference_same_dtype']:.2e}  {'ok' if all(r['passed'] for r in rows.values()) else 'FAILED'}")
    for dtype, row in stages.get("throughput", {}).get("dtypes", {}).items():
        for contender, entry in row["contenders"].items():
            memory = entry.get("memory", {})
            print(f"  {dtype} {contender:<7} train {entry['train']['chars_per_s']:>12,.0f} char/s  infer "
                  f"{entry['infer']['chars_per_s']:>12,.0f} char/s  peak {memory.get('peak_bytes', 0) / 2**30:.2f} GiB")
        ratios = row.get("ratios", {})
        print(f"  {dtype} triton vs nn.LSTM, FLOP-normalised: train {ratios.get('train_vs_lstm_flop_normalised', float('nan')):.2f}x"
              f"  infer {ratios.get('infer_vs_lstm_flop_normalised', float('nan')):.2f}x")
    fp16 = stages.get("fp16", {})
    for part in ("scaler_loop", "pretrain"):
        if part in fp16:
            entry = fp16[part]
            skipped = entry["skipped_steps"] if isinstance(entry["skipped_steps"], int) else len(entry["skipped_steps"])
            print(f"  fp16 {part:<11} {entry['steps']} steps, {entry['updates']} updates, {skipped} skipped, "
                  f"lr follows updates: {entry['lr_is_schedule_of_updates']}  {'ok' if entry['passed'] else 'FAILED'}")
    ddp = stages.get("ddp", {})
    print(f"  ddp  {ddp.get('skipped') or ('ok' if ddp.get('passed') else 'FAILED')}")
    for name, stage in stages.items():
        if "error" in stage:
            print(f"  {name} FAILED: {stage['error']}")
    print(f"{'PASSED' if report['passed'] else 'FAILED'}; wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
