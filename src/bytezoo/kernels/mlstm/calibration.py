"""Which of the fused engines' choices win on *this* CPU, measured once (under 2 s) and cached next to the compiled
extension: from which hidden size packing a recurrent weight for oneDNN beats plain ``torch.mm``, per dtype, up to
which hidden size the compiled loops' register-blocked fp32 products beat library GEMMs, and from which size those
products should treat the weights as streamed from memory (prefetching ahead) rather than cached
(:mod:`.packing`).

Why measure instead of a fixed rule: the rule in :mod:`bytezoo.kernels.mlstm.packing` was measured on one Intel Xeon
(AVX-512 + AMX); oneDNN's packed and MKL's plain GEMMs rank differently on CPUs without AMX (an AMD EPYC with AVX-512
BF16 filed issue 16), and only Intel CPUs were available to check a rule on. So the first use on a machine times
both products at the hidden sizes that decide it and keeps the answer, keyed by everything that changes it: the CPU
model and its flags, the torch version, and the compiled extension's build key (source + compiler flags).

A measurement taken while other processes keep a core busy is marked provisional and repeated by the first later
process that finds the machine quiet (calibrated under load, the two products' ranking can flip).

``BYTEZOO_KERNEL_CALIBRATION=0`` skips the measurement and uses the built-in rule (the test suite does this, so no
test depends on timings); ``=refresh`` measures again. The cache is a small JSON file in
``$TORCH_EXTENSIONS_DIR/bytezoo/`` (see :func:`bytezoo.kernels.mlstm.cpu_extension.cache_dir`), written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import torch

from .onednn import PACK_FP32_BATCHES, pack_weight, packed_product, packing_works

ENV_SWITCH = "BYTEZOO_KERNEL_CALIBRATION"  # "0": built-in rule, no measurement; "refresh": measure again
VERSION = 5  # bump when what is measured or how it is decided changes
SIZES = (256, 512, 1024)  # hidden sizes timed; packing is decided from the smallest size where it wins for all larger
BATCH = 64
WIN = 0.95  # packed must take at most this fraction of plain's time
# The built-in rule (Intel Xeon with AMX, 2026-11; see packing.py): fp32 packs from H=1024, bf16 always.
# Blocked products, fp32 inference (Intel Xeon with AMX, 2026-11-30): up to H=512 on one thread, up to 2048 on two
# (they won at 256 and 1024 there, and lost at 4096); their panels streamed from H=1024 (2 MB L2 per core).
DEFAULTS = {"fp32_min_size": 1024, "bf16_min_size": 1, "fp32_blocked_max_size": 512,
            "fp32_blocked_max_size_threads": 2048, "fp32_blocked_stream_min_size": 1024,
            "fp32_blocked_stream_min_size_threads": 1024}
# The compiled loops' register-blocked products against library GEMMs, whole fp32 inference forwards: (H, B, T).
BLOCKED_SHAPES = ((256, 32, 32), (1024, 64, 8))
NEVER = 1 << 30

_state: dict[str, dict] = {}
_lock = threading.Lock()


def _cpu_identity() -> str:
    from .cpu_extension import _cpu_flags

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return f"{model}|{_cpu_flags()}"


def calibration_key() -> str:
    """Hash of what the measurement depends on: CPU model and flags, torch version, the extension's build key."""
    from .cpu_extension import build_key

    digest = hashlib.sha256()
    for part in (str(VERSION), _cpu_identity(), torch.__version__, build_key(), platform.machine()):
        digest.update(hashlib.sha256(part.encode()).digest())
    return digest.hexdigest()[:16]


def cache_path() -> Path:
    from .cpu_extension import cache_dir

    return cache_dir() / f"calibration-{calibration_key()}.json"


def _interleaved_times(functions, repeats: int, calls: int = 1) -> list[list[float]]:
    """Seconds per call of each function, after one warm-up call each, timed in turn (``calls`` calls per timing),
    so a busy neighbour hits them alike."""
    for fn in functions:
        fn()
    times = [[] for _ in functions]
    for _ in range(repeats):
        for fn, own in zip(functions, times):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            own.append((time.perf_counter() - start) / calls)
    return times


def _paired_ratio(times: list[float], other_times: list[float]) -> float:
    """The median over repetitions of one time over the other's in the same repetition (drift cancels)."""
    return statistics.median(mine / theirs for mine, theirs in zip(times, other_times))


def _time_products(x: torch.Tensor, weight: torch.Tensor, repeats: int = 5, calls: int = 3) -> tuple[float, float]:
    """Median seconds per product: plain ``torch.mm`` on a contiguous weight, and the oneDNN-packed weight."""
    packed = pack_weight(weight, x.shape[0])

    def plain():
        torch.mm(x, weight)

    def packed_call():
        packed_product(x, packed)

    plain_times, packed_times = _interleaved_times((plain, packed_call), repeats, calls)
    return statistics.median(plain_times), statistics.median(packed_times)


def measure(sizes=SIZES, batch: int = BATCH, blocked_shapes=BLOCKED_SHAPES) -> dict:
    """Times plain and packed [batch x H] @ [H x 4H] products at each size and dtype, and blocked against library
    products over whole forwards; returns the thresholds and the timings behind them. 2.3 s on a 2-core Xeon."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    timings, result = {}, {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if not packing_works(dtype):
            result[f"{name}_min_size"] = NEVER
            continue
        wins = {}
        for hidden in sizes:
            x = torch.randn(batch, hidden, generator=generator).to(dtype)
            weight = torch.randn(hidden, 4 * hidden, generator=generator).to(dtype)
            plain, packed = _time_products(x, weight)
            timings[f"{name}/H={hidden}"] = {"plain_s": plain, "packed_s": packed, "packed_over_plain": packed / plain}
            wins[hidden] = packed <= WIN * plain
        # the smallest size from which packing wins at every larger measured size
        threshold = NEVER
        for hidden in sorted(sizes, reverse=True):
            if not wins[hidden]:
                break
            threshold = hidden
        result[f"{name}_min_size"] = 1 if threshold == min(sizes) else threshold
    # Blocked against library products rank differently on one thread and on several (the library-GEMM loops'
    # pointwise passes and oneDNN's GEMMs use threads differently), so both are measured: one thread, and the
    # threads this process has (when more than one; else the built-in rule).
    threads = torch.get_num_threads()
    for suffix, count in (("", 1), ("_threads", threads)):
        limit_key, stream_key = "fp32_blocked_max_size" + suffix, "fp32_blocked_stream_min_size" + suffix
        if suffix and threads == 1:
            result[limit_key], result[stream_key] = DEFAULTS[limit_key], DEFAULTS[stream_key]
            continue
        try:
            torch.set_num_threads(count)
            result[limit_key], result[stream_key] = _measure_blocked(
                result["fp32_min_size"], timings, blocked_shapes, f"{count} thread{'s' if count > 1 else ''}",
                DEFAULTS[limit_key], DEFAULTS[stream_key])
        finally:
            torch.set_num_threads(threads)
    result["timings"] = timings
    result["seconds"] = time.perf_counter() - started
    result["threads"] = torch.get_num_threads()
    result["load_average"] = list(os.getloadavg())
    return result


def _measure_blocked(fp32_min_size: int, timings: dict, shapes=BLOCKED_SHAPES, label: str = "",
                     default: int = 0, default_stream: int = NEVER, repeats: int = 7) -> tuple[int, int]:
    """``(limit, stream_from)``: the largest hidden size for which the compiled loops' blocked products should run
    fp32 inference, and the smallest from which they should stream their panels. Whole forwards (table inputs, no
    saving) at each (H, B, T) of ``shapes``: library GEMMs (oneDNN-packed where ``fp32_min_size`` says so), blocked
    with cached panels and blocked with streamed panels, interleaved, medians of the paired ratios.
    :func:`stream_from` picks the panel mode per size and :func:`blocked_limit` turns the chosen mode's ratios into
    the limit (``default`` / ``default_stream``: the built-in rule, for sizes too close to call). ``(0, NEVER)`` when
    the blocked products cannot run here."""
    from . import cpu_extension

    ops = cpu_extension.cpu_ops()
    if ops is None or not ops.blocked_products_available():
        return 0, NEVER
    generator = torch.Generator().manual_seed(0)
    ratios, stream_ratios = [], []
    for hidden, batch, steps in shapes:
        w_mh = torch.randn(hidden, hidden, generator=generator) / hidden**0.5
        w_h = torch.randn(hidden, 4 * hidden, generator=generator) / hidden**0.5
        gates_x = torch.randn(256, 4 * hidden, generator=generator)  # a byte model's (V, 4H) and (V, H) tables
        mult_x = torch.randn(256, hidden, generator=generator)
        ids = torch.randint(0, 256, (batch, steps), generator=generator)
        zeros = torch.zeros(batch, hidden)
        pack = hidden >= fp32_min_size and batch in PACK_FP32_BATCHES and packing_works(torch.float32)
        packed = [pack_weight(w, batch) if pack else None
                  for w in (w_mh, w_h)]
        panels = ops.blocked_panels(w_mh, w_h)

        def forward(packed_weights, panel_arguments):  # one inference forward: packed or plain weights, or panels
            return lambda: ops.forward(gates_x, mult_x, w_mh, w_h, *packed_weights, zeros, zeros, None, None, ids,
                                       False, False, *panel_arguments)

        library_times, blocked_times, streamed_times = _interleaved_times(
            (forward(packed, (None, None, False)), forward((None, None), (*panels, False)),
             forward((None, None), (*panels, True))), repeats)
        entry = {"library_s": statistics.median(library_times), "blocked_s": statistics.median(blocked_times),
                 "streamed_s": statistics.median(streamed_times),
                 "blocked_over_library": _paired_ratio(blocked_times, library_times),
                 "streamed_over_library": _paired_ratio(streamed_times, library_times),
                 "streamed_over_blocked": _paired_ratio(streamed_times, blocked_times)}
        timings[f"blocked/H={hidden},B={batch},T={steps}/{label}"] = entry
        ratios.append((hidden, entry["blocked_over_library"], entry["streamed_over_library"]))
        stream_ratios.append((hidden, entry["streamed_over_blocked"]))
    stream_min = stream_from(stream_ratios, default_stream)
    chosen = [(hidden, over_library_streamed if hidden >= stream_min else over_library_cached)
              for hidden, over_library_cached, over_library_streamed in ratios]
    return blocked_limit(chosen, default), stream_min


BLOCKED_MARGIN = 0.05  # a ratio within 5% of 1 is too close to call on a 2-core machine: the built-in rule decides


def _won(ratio: float, builtin_verdict: bool) -> bool:
    """Whether the contender won at a time ratio (its time over the other's), or the built-in rule's verdict when the
    ratio lies within BLOCKED_MARGIN of 1."""
    return ratio < 1 if abs(ratio - 1) >= BLOCKED_MARGIN else builtin_verdict


def stream_from(ratios: list[tuple[int, float]], default: int) -> int:
    """The smallest H from which the blocked products stream their panels, from (H, streamed time / cached time) in
    increasing H: the smallest measured size from which streaming won at every larger one (1 if at all of them), NEVER
    if it did not win at the largest. A ratio within BLOCKED_MARGIN of 1 takes the built-in rule's verdict (won if
    H >= ``default``)."""
    threshold = NEVER
    for hidden, ratio in reversed(ratios):
        if not _won(ratio, hidden >= default):
            break
        threshold = hidden
    return 1 if ratios and threshold == ratios[0][0] else threshold


def blocked_limit(ratios: list[tuple[int, float]], default: int) -> int:
    """The largest H for the blocked products from (H, blocked time / library time) in increasing H: up to the
    geometric midpoint between the last size where they won (from the smallest up) and the next; past the largest
    measured size only one octave (at H=4096, B=512, two threads they measured 0.95x the library products, with
    320 MB of panels besides); 0 if they lost at the smallest. A size whose ratio lies within BLOCKED_MARGIN of 1
    takes the built-in rule's verdict (won if H <= ``default``): one-thread runs on this Xeon measured 0.93-1.04 at
    H=256, and a coin flip must not turn the products off for good."""
    limit = 0
    for index, (hidden, ratio) in enumerate(ratios):
        if not _won(ratio, hidden <= default):
            break
        following = ratios[index + 1][0] if index + 1 < len(ratios) else 4 * hidden
        limit = int((hidden * following) ** 0.5)
    return limit


def thresholds() -> dict:
    """``{"fp32_min_size": int, "bf16_min_size": int, "fp32_blocked_max_size": int, "fp32_blocked_max_size_threads":
    int, "fp32_blocked_stream_min_size": int, "fp32_blocked_stream_min_size_threads": int}`` for this machine (the
    blocked ones for one thread and for several): the built-in rule
    with ``BYTEZOO_KERNEL_CALIBRATION=0``, else the cached measurement, else measured now (once per process)."""
    switch = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if switch == "0":
        return dict(DEFAULTS)
    if "thresholds" in _state:
        return _state["thresholds"]
    with _lock:
        if "thresholds" not in _state:
            _state["thresholds"] = _load_or_measure(refresh=switch == "refresh")
    return _state["thresholds"]


def other_processes_busy() -> float | None:
    """Cores other processes keep busy right now (:func:`bytezoo.threads.busy_cpus`, 0.1 s); None if unknown."""
    from bytezoo.threads import busy_cpus

    return busy_cpus()


def _load_or_measure(refresh: bool) -> dict:
    """The cached thresholds, unless absent, damaged, refreshed, or *provisional*: measured while other processes
    kept a core busy, when the two products' timings say more about the neighbour than about the CPU. A provisional
    result serves until a later process finds the machine quiet and measures again."""
    from bytezoo.threads import BUSY_ROUNDING

    path = cache_path()
    cached = None
    if not refresh:
        try:
            record = json.loads(path.read_text())
            cached = {key: int(record[key]) for key in DEFAULTS}
            if not record.get("provisional"):
                return cached
        except (OSError, ValueError, KeyError, TypeError):
            cached = None
    busy = other_processes_busy()
    quiet = busy is not None and busy < BUSY_ROUNDING
    if cached is not None and not quiet:
        return cached  # still busy: the provisional answer stays
    try:
        measured = measure()
    except Exception:  # a private op gone or failing: keep the built-in rule
        return dict(DEFAULTS)
    record = {**measured, "key": calibration_key(), "cpu": _cpu_identity().split("|")[0], "torch": torch.__version__,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "other_processes_busy_cores": busy,
              "provisional": not quiet}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        staged.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(staged, path)
    except OSError:
        pass  # a read-only cache folder: measured again next process
    return {key: int(measured[key]) for key in DEFAULTS}


def reset() -> None:
    """Forget this process's thresholds (tests)."""
    _state.clear()
