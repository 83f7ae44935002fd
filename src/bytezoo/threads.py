"""How many CPU threads bytezoo's torch work uses: a count that does not collapse when other processes keep cores busy,
and that still uses every core of an idle machine.

Why a policy at all (benchmarks/results/threads.md): PyTorch's default is one OpenMP thread per core, and libgomp's
threads *spin* at every barrier. When another process holds one of two cores, every parallel region waits for the
thread the scheduler has parked, a time slice at a time: on a 2-core Intel Xeon with one busy-loop process, a
pretraining step (mlstm-256, B=32, T=64) took 16 s with the default 2 threads against 1.0 s with one thread, and
token-by-token generation 10 s against 0.5 s. Two things fix it, and bytezoo does both:

* **threads = usable cores minus the cores other processes keep busy**, measured over a short window
  (:data:`SAMPLE_SECONDS`) from ``/proc/stat`` over this process's affinity set, before the work starts (so the work
  itself is not counted) and rounded so that more than half a busy core takes a thread away
  (:func:`choose_threads`). Never fewer than one.
* **batched feature extraction takes every core when idle threads sleep** (``coarse`` in :func:`ensure_threads`):
  its parallel regions are large matrix products, and beside a busy process two sleeping-when-idle threads still
  beat one (the scheduler shares cores per thread).
* **passive waiting**: the ``bytezoo`` command sets ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported (unless the
  user set it), so an idle OpenMP thread sleeps instead of spinning; with 2 threads under load it turned 16 s into
  2.0 s. It only takes effect before torch's first import, so a Python program that wants it sets it itself.

Overrides, in order: an explicit count (the commands' ``--threads N``), the ``BYTEZOO_NUM_THREADS`` environment
variable, and a count the program set itself with ``torch.set_num_threads`` (kept: :func:`ensure_threads` does not
override a caller's choice). ``0`` means "PyTorch's default" (one thread per core). The choice is logged once per
process.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

ENV_VAR = "BYTEZOO_NUM_THREADS"
SAMPLE_SECONDS = 0.1  # long enough for /proc/stat's 10 ms ticks to average a busy core, short beside any real job
REUSE_SECONDS = 30.0  # a measured choice is reused this long in one process (featurizing many small lists)
BUSY_ROUNDING = 0.5  # a core counts as taken when other processes use more than this fraction of one

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int  # 0: leave PyTorch's default
    reason: str  # how it was chosen, for the log line


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity set; a container's CPU limit shows up here too)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def choose_threads(usable: int, busy: float) -> int:
    """The thread count for ``usable`` cores of which other processes keep ``busy`` (in cores) busy: the free cores,
    a core counted taken from :data:`BUSY_ROUNDING` of it, at least one. Pure, for tests."""
    taken = int(busy + (1.0 - BUSY_ROUNDING)) if busy > 0 else 0
    return max(1, min(usable, usable - taken))


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy jiffies, total jiffies) summed over ``cpus`` (None: all), from /proc/stat; None where unreadable."""
    try:
        with open("/proc/stat") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in rest.split()]
        idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
        used = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
        busy += used - idle
        total += used
    return (busy, total) if total else None


def busy_cpus(sample_seconds: float = SAMPLE_SECONDS, reader=_cpu_times, sleep=time.sleep) -> float | None:
    """How many of this process's usable cores other processes keep busy, measured over ``sample_seconds`` while this
    process waits (so its own threads are not counted); None where /proc/stat cannot be read."""
    cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    before = reader(cpus)
    sleep(sample_seconds)
    after = reader(cpus)
    if before is None or after is None or after[1] <= before[1]:
        return None
    fraction = (after[0] - before[0]) / (after[1] - before[1])
    count = len(cpus) if cpus is not None else usable_cpus()
    return max(0.0, fraction * count)


def resolve_threads(threads: int | None = None, *, environ=os.environ, measure=busy_cpus) -> ThreadChoice:
    """The thread count to use: ``threads`` if given, else ``$BYTEZOO_NUM_THREADS``, else measured (see the module)."""
    if threads is not None:
        return ThreadChoice(_checked(threads, "--threads"), "asked for")
    value = environ.get(ENV_VAR, "").strip()
    if value:
        try:
            return ThreadChoice(_checked(int(value), ENV_VAR), f"{ENV_VAR}={value}")
        except ValueError:
            from bytezoo.errors import InvalidArgumentError

            raise InvalidArgumentError(f"{ENV_VAR}={value!r} is not a whole number of threads (0: PyTorch's default)") from None
    usable = usable_cpus()
    if usable == 1:
        return ThreadChoice(1, "1 usable core")
    busy = measure()
    if busy is None:
        return ThreadChoice(0, "the load could not be measured; PyTorch's default")
    chosen = choose_threads(usable, busy)
    return ThreadChoice(chosen, f"{usable} usable cores, {busy:.1f} kept busy by other processes")


def _checked(threads: int, name: str) -> int:
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        from bytezoo.errors import InvalidArgumentError

        raise InvalidArgumentError(f"{name} must be a whole number >= 0 (0: PyTorch's default); got {threads!r}")
    return threads


_state: dict[str, object] = {}


def configure_threads(threads: int | None = None, *, log: bool = True) -> int:
    """Sets torch's thread count by :func:`resolve_threads` and returns it; logs the choice once per process.
    An explicit count or ``$BYTEZOO_NUM_THREADS`` also stops :func:`ensure_threads` from measuring again."""
    import torch

    choice = resolve_threads(threads)
    if choice.threads:
        torch.set_num_threads(choice.threads)
    _state["set"] = torch.get_num_threads()
    _state["fixed"] = threads is not None or bool(os.environ.get(ENV_VAR, "").strip())
    _state["when"] = time.monotonic()
    if log and not _state.get("logged"):
        _state["logged"] = True
        message = (f"bytezoo: {torch.get_num_threads()} CPU thread(s) ({choice.reason}; "
                   f"set --threads or {ENV_VAR} to override)")
        logger.info(message)
        if os.environ.get("BYTEZOO_QUIET_THREADS", "") in ("", "0"):
            print(message, file=sys.stderr)
    return torch.get_num_threads()


def ensure_threads(device="cpu", *, coarse: bool = False) -> None:
    """Before a CPU workload of the library (featurizing, generating, pretraining): applies :func:`configure_threads`
    unless the program chose a count itself (a ``torch.set_num_threads`` that was not ours) or the last choice for
    this kind of work is younger than :data:`REUSE_SECONDS`. Nothing for other devices. The count stays set.

    ``coarse``: work made of few large parallel regions (batched feature extraction: big matrix products per step).
    Where idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``) it takes every usable core even beside a busy process:
    the scheduler shares a core per runnable thread, so the second thread still gains (benchmarks/results/threads.md:
    featurizing beside a busy loop, 2 passive threads 0.58 s against 1.07 s with one). Fine-grained work (a training
    step's many small ops, one-byte generation steps) keeps the measured free cores."""
    import torch

    if getattr(device, "type", str(device).split(":")[0]) != "cpu":
        return
    current = torch.get_num_threads()
    ours = _state.get("set")
    caller_chose = (ours is None and current != _default_threads()) or (ours is not None and current != ours)
    fresh = (ours is not None and _state.get("coarse") == coarse
             and (_state.get("fixed") or time.monotonic() - float(_state["when"]) < REUSE_SECONDS))
    if caller_chose or fresh:
        return
    if coarse and passive_waiting() and not os.environ.get(ENV_VAR, "").strip():
        torch.set_num_threads(usable_cpus())
        _state.update(set=torch.get_num_threads(), fixed=False, when=time.monotonic(), coarse=True)
        return
    configure_threads()
    _state["coarse"] = coarse


def passive_waiting(environ=os.environ) -> bool:
    """Whether OpenMP's idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``, or libgomp's ``GOMP_SPINCOUNT=0``)."""
    return environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE" or environ.get("GOMP_SPINCOUNT", "") == "0"


def _default_threads() -> int:
    """PyTorch's default intra-op count: ``OMP_NUM_THREADS`` if set, else one per usable core."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else usable_cpus()


def passive_wait_before_torch(environ=os.environ) -> bool:
    """Sets ``OMP_WAIT_POLICY=PASSIVE`` when torch is not imported yet and the user set no policy; True if it did."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in environ:
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


__all__ = ["ENV_VAR", "ThreadChoice", "busy_cpus", "choose_threads", "configure_threads", "passive_wait_before_torch", "passive_waiting",
           "ensure_threads", "resolve_threads", "usable_cpus"]
