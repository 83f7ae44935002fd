"""How many CPU threads bytezoo's torch work uses, and how idle OpenMP threads wait: a setting that does not collapse
when other processes keep cores busy, and that still gets the most from an idle machine.

Why a policy at all (benchmarks/results/threads.md): PyTorch's default is one OpenMP thread per core, and libgomp's
threads *spin* at every barrier. When another process holds one of two cores, every parallel region waits for the
thread the scheduler has parked, a time slice at a time: on a 2-core Intel Xeon with one busy-loop process, a
pretraining step (mlstm-256, B=32, T=64) ran 3-14x slower with the default 2 threads than with one. But sleeping
instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) costs 1.5-2.4x on an *idle* machine (each parallel region then waits
for threads to wake up). So bytezoo measures first and chooses:

* **threads = usable cores minus the cores other processes keep busy**, measured over a short window
  (:data:`SAMPLE_SECONDS`) from ``/proc/stat`` over this process's affinity set, less this process's own CPU time,
  and rounded so that more than half a busy core takes a thread away (:func:`choose_threads`). Never fewer than one.
  Usable cores are the affinity set, capped by a cgroup CPU quota (``cpu.max``) where one is set.
* **the wait policy, before torch is imported** (:func:`openmp_wait_before_torch`, called by the ``bytezoo``
  command): beside busy cores, idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``); on an idle machine they spin
  briefly (``GOMP_SPINCOUNT``=:data:`SHORT_SPIN`, about a tenth of a millisecond), which measured as fast as
  libgomp's long default spin there and, unlike it, gives a core back soon when a busy process appears. libgomp reads
  both only when it loads, so a Python program that wants them sets them itself before importing torch.
* **re-measured while the work runs**: long loops (featurization chunks, and training steps of a run that asked for
  it with ``--adapt-threads``: a training run otherwise keeps its count, see below) call :func:`ensure_threads` every
  step; every :data:`RECHECK_SECONDS` it reads how busy the cores were since its last
  look, less this process's own CPU time (no pause: the work itself keeps running), and changes the count, so a job
  that started on an idle machine gives a thread back within seconds when another process starts (one thread has
  no barrier to wait at, whatever the wait policy), and takes it again when the machine is free.
* **batched feature extraction takes every core when idle threads sleep** (``coarse`` in :func:`ensure_threads`):
  its parallel regions are large matrix products, and beside a busy process two sleeping-when-idle threads still
  match one (the scheduler shares cores per thread).

Overrides, in order: an explicit count (the commands' ``--threads N``, :func:`ask_for`), the ``BYTEZOO_NUM_THREADS``
environment variable, ``OMP_NUM_THREADS`` (what launchers such as torchrun set per process), and a count the program
set itself with ``torch.set_num_threads`` (kept: :func:`ensure_threads` does not override a caller's choice). ``0``
means "PyTorch's default" (one thread per core). The first choice is printed once per process, naming where it came
from; later changes are logged.

A training run is different: the thread count changes the order of the sums, so a run fixes its count at the start
(this choice, for a new run) and keeps it, on resume too (:func:`pin_threads`, :mod:`bytezoo.training.cpu_threads`);
re-measuring while it runs is an opt-in (``--adapt-threads``) that gives up bitwise reproducibility.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

ENV_VAR = "BYTEZOO_NUM_THREADS"
SAMPLE_SECONDS = 0.1  # long enough for /proc/stat's 10 ms ticks to average a busy core, short beside any real job
RECHECK_SECONDS = 5.0  # long work looks at the load again this often (two small file reads, no pause)
SHORT_SPIN = 10_000  # libgomp pause-loop iterations before an idle thread sleeps (its default: 300,000)
BUSY_ROUNDING = 0.5  # a core counts as taken when other processes use more than this fraction of one

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int  # 0: leave PyTorch's default
    reason: str  # how it was chosen, for the log line
    measured: bool = False  # from the load (so worth measuring again later), not fixed by the user or a launcher

    @property
    def count(self) -> int:
        """The count it sets: ``threads``, or PyTorch's default for 0."""
        return self.threads or _default_threads()


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity set (a container's cpuset), capped by a cgroup CPU quota."""
    if hasattr(os, "sched_getaffinity"):
        cpus = max(1, len(os.sched_getaffinity(0)))
    else:
        cpus = max(1, os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, int(quota + 0.5))) if quota is not None else cpus


def cgroup_cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> float | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max``: ``"QUOTA PERIOD"``), in cores; None when unlimited
    or unreadable. (A container limited to 1.5 CPUs on a 64-core host sees 64 CPUs in its affinity set.)"""
    try:
        with open(path) as handle:
            quota, _, period = handle.read().strip().partition(" ")
        return int(quota) / int(period or 100_000) if quota != "max" else None
    except (OSError, ValueError, ZeroDivisionError):
        return None


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


@dataclass(frozen=True)
class LoadSample:
    """Cumulative counters at one moment: /proc/stat's busy and total jiffies over this process's cores, and this
    process's own CPU seconds."""

    busy: float
    total: float
    own: float
    cores: int


def load_sample(reader=_cpu_times, own_cpu_seconds=time.process_time) -> LoadSample | None:
    cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    times = reader(cpus)
    if times is None:
        return None
    return LoadSample(times[0], times[1], own_cpu_seconds(), len(cpus) if cpus is not None else usable_cpus())


def busy_between(before: LoadSample, after: LoadSample, min_seconds: float = 0.05) -> float | None:
    """Cores other processes kept busy between two samples (all busy time less this process's own); None when the
    window is too short to tell."""
    window = (after.total - before.total) / _clock_ticks() / max(after.cores, 1)  # wall seconds, from the jiffies
    if window < min_seconds:
        return None
    all_busy = (after.busy - before.busy) / (after.total - before.total) * after.cores
    return max(0.0, all_busy - (after.own - before.own) / window)


def busy_cpus(sample_seconds: float = SAMPLE_SECONDS, reader=_cpu_times, sleep=time.sleep,
              own_cpu_seconds=time.process_time) -> float | None:
    """How many of this process's usable cores other processes keep busy, measured over ``sample_seconds`` while this
    process waits, less the CPU time this process used meanwhile (OpenMP threads still spinning down, other Python
    threads); None where /proc/stat cannot be read."""
    before = load_sample(reader, own_cpu_seconds)
    sleep(sample_seconds)
    after = load_sample(reader, own_cpu_seconds)
    if before is None or after is None or after.total <= before.total:
        return None
    return busy_between(before, after, min_seconds=0.0)


def _clock_ticks() -> float:
    """/proc/stat's jiffies per second."""
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100.0


def ask_for(threads: int, source: str = "--threads") -> None:
    """The count a command was told on its command line (``--threads N``), with the words that told it: it comes
    before the environment in :func:`resolve_threads`, and the start line names it."""
    _state["asked"] = (_checked(threads, source), f"{source} {threads}")


def explicit_threads(threads: int | None = None, *, environ=os.environ) -> ThreadChoice | None:
    """The count something fixed, or None: ``threads`` if given, else the command line's (:func:`ask_for`), else
    ``$BYTEZOO_NUM_THREADS``, else a launcher's (or the user's) ``$OMP_NUM_THREADS``."""
    if threads is not None:
        return ThreadChoice(_checked(threads, "--threads"), "asked for")
    if "asked" in _state:
        count, reason = _state["asked"]
        return ThreadChoice(count, reason)
    value = environ.get(ENV_VAR, "").strip()
    if value:
        try:
            return ThreadChoice(_checked(int(value), ENV_VAR), f"{ENV_VAR}={value}")
        except ValueError:
            from bytezoo.errors import InvalidArgumentError

            raise InvalidArgumentError(f"{ENV_VAR}={value!r} is not a whole number of threads "
                                       "(0: PyTorch's default)") from None
    launcher = environ.get("OMP_NUM_THREADS", "").strip()
    if launcher.isdigit() and int(launcher) > 0:  # set per process by torchrun/accelerate launch, or by the user
        return ThreadChoice(int(launcher), f"OMP_NUM_THREADS={launcher}")
    return None


def resolve_threads(threads: int | None = None, *, environ=os.environ, measure=busy_cpus) -> ThreadChoice:
    """The thread count to use: the one something fixed (:func:`explicit_threads`), else measured (see the module)."""
    fixed = explicit_threads(threads, environ=environ)
    if fixed is not None:
        return fixed
    usable = usable_cpus()
    if usable == 1:
        return ThreadChoice(1, "1 usable core")
    busy = measure()
    if busy is None:
        return ThreadChoice(0, "the load could not be measured; PyTorch's default")
    chosen = choose_threads(usable, busy)
    return ThreadChoice(chosen, f"{usable} usable cores, {busy:.1f} kept busy by other processes", measured=True)


def _checked(threads: int, name: str) -> int:
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        from bytezoo.errors import InvalidArgumentError

        raise InvalidArgumentError(f"{name} must be a whole number >= 0 (0: PyTorch's default); got {threads!r}")
    return threads


_state: dict[str, object] = {}
PRE_TORCH_REUSE_SECONDS = 10.0  # the wait policy's measurement also serves the first thread count this long


def _measure_busy() -> float | None:
    """Other processes' busy cores: the measurement taken before torch's import if it is recent, else a new one."""
    early = _state.pop("busy_before_torch", None)
    if early is not None and time.monotonic() - early[0] < PRE_TORCH_REUSE_SECONDS:
        return early[1]
    return busy_cpus()


def configure_threads(threads: int | None = None, *, log: bool = True) -> int:
    """Sets torch's thread count by :func:`resolve_threads` and returns it. The first choice is printed once per
    process (stderr) and logged; a later change is logged. An explicit count, ``$BYTEZOO_NUM_THREADS`` or
    ``$OMP_NUM_THREADS`` also stops :func:`ensure_threads` from measuring again."""
    import torch

    previous = _state.get("set")
    choice = resolve_threads(threads, measure=_measure_busy)
    if choice.threads:
        torch.set_num_threads(choice.threads)
    _state["set"] = torch.get_num_threads()
    _state["fixed"] = not choice.measured
    _state["when"] = time.monotonic()
    _state["sample"] = load_sample()  # the start of the next look's window
    message = start_line(torch.get_num_threads(), choice.reason)
    if log and not _state.get("logged"):
        _state["logged"] = True
        say(message)
    elif previous is not None and previous != _state["set"]:
        logger.info(message)
    return torch.get_num_threads()


def start_line(count: int, reason: str) -> str:
    """The line that says how many threads this process uses and why (the flag that set it, the variable, or the
    load measured)."""
    if reason.startswith("--threads"):
        return f"bytezoo: {count} CPU thread(s) ({reason})"
    return f"bytezoo: {count} CPU thread(s) ({reason}; set --threads or {ENV_VAR} to override)"


def say(message: str) -> None:
    """Logs a thread line and prints it to stderr, unless ``BYTEZOO_QUIET_THREADS`` is set."""
    logger.info(message)
    if os.environ.get("BYTEZOO_QUIET_THREADS", "") in ("", "0"):
        print(message, file=sys.stderr)


def pin_threads(count: int, *, adapt: bool = False) -> int:
    """Sets torch's intra-op thread count to ``count`` (0: PyTorch's default) for this process's work from now on;
    :func:`ensure_threads` leaves it as it is, unless ``adapt`` (then it re-measures as for any long work). A training
    run's count is part of the run (it changes the sums): set once at its start, kept on resume."""
    import torch

    torch.set_num_threads(count or _default_threads())
    _state.update(set=torch.get_num_threads(), fixed=not adapt, when=time.monotonic(), coarse=False,
                  sample=load_sample(), logged=True)
    return torch.get_num_threads()


def ensure_threads(device="cpu", *, coarse: bool = False) -> None:
    """Before and during a CPU workload of the library (featurizing, generating, pretraining, fine-tuning): applies
    :func:`configure_threads` unless the program chose a count itself (a ``torch.set_num_threads`` that was not ours)
    or the last look for this kind of work is younger than :data:`RECHECK_SECONDS` (then it costs a clock read, so
    loops call it every step; a look reads the load since the previous one, without pausing). Nothing for other
    devices. The count stays set.

    ``coarse``: work made of few large parallel regions (batched feature extraction: big matrix products per step).
    Where idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``) it takes every usable core even beside a busy process:
    the scheduler shares a core per runnable thread, so the second thread still gains or breaks even
    (benchmarks/results/threads.md). Where they spin, it is measured like any other work: a spinning thread beside a
    busy process is what collapses. Fine-grained work (a training step's many small ops, one-byte generation steps)
    keeps the measured free cores."""
    import torch

    if getattr(device, "type", str(device).split(":")[0]) != "cpu":
        return
    current = torch.get_num_threads()
    ours = _state.get("set")
    caller_chose = (ours is None and current != _default_threads()) or (ours is not None and current != ours)
    fresh = (ours is not None and _state.get("coarse") == coarse
             and (_state.get("fixed") or time.monotonic() - float(_state["when"]) < RECHECK_SECONDS))
    if caller_chose or fresh:
        return
    if coarse and passive_waiting() and resolve_threads(measure=lambda: 0.0).measured:
        torch.set_num_threads(usable_cpus())
        _state.update(set=torch.get_num_threads(), fixed=False, when=time.monotonic(), coarse=True,
                      sample=load_sample())
        return
    previous, now = _state.get("sample"), load_sample()
    recent = ours is not None and time.monotonic() - float(_state.get("when", 0.0)) < 4 * RECHECK_SECONDS
    busy = busy_between(previous, now) if recent and previous is not None and now is not None else None
    # No window to read (the first look, work that paused for a while, other work): measure from a standing start.
    if busy is None or _state.get("coarse") != coarse:
        configure_threads()
        _state["coarse"] = coarse
        return
    chosen = choose_threads(usable_cpus(), busy)  # the load while this work ran, its own threads excluded
    if chosen != ours:
        torch.set_num_threads(chosen)
        logger.info(f"bytezoo: {chosen} CPU thread(s) now ({busy:.1f} cores kept busy by other processes)")
    _state.update(set=torch.get_num_threads(), when=time.monotonic(), sample=now)


def passive_waiting(environ=os.environ) -> bool:
    """Whether OpenMP's idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``, or libgomp's ``GOMP_SPINCOUNT=0``)."""
    return environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE" or environ.get("GOMP_SPINCOUNT", "") == "0"


def _default_threads() -> int:
    """PyTorch's default intra-op count: ``OMP_NUM_THREADS`` if set, else one per usable core."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else usable_cpus()


def openmp_wait_before_torch(environ=os.environ, measure=busy_cpus) -> str | None:
    """Chooses how idle OpenMP threads wait, before torch (and its libgomp) is loaded: ``OMP_WAIT_POLICY=PASSIVE``
    when other processes keep a core busy now, else a short spin (``GOMP_SPINCOUNT``). Returns the setting made, or
    None when torch is already imported, the user set either variable, or the load cannot be measured (then
    PASSIVE: the safe side). The measurement is kept for the first thread count (:func:`configure_threads`)."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return None
    busy = measure() if usable_cpus() > 1 else 0.0
    _state["busy_before_torch"] = (time.monotonic(), busy)
    if busy is None or choose_threads(usable_cpus(), busy) < usable_cpus():
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "OMP_WAIT_POLICY=PASSIVE"
    environ["GOMP_SPINCOUNT"] = str(SHORT_SPIN)
    return f"GOMP_SPINCOUNT={SHORT_SPIN}"


__all__ = ["ENV_VAR", "ThreadChoice", "ask_for", "busy_cpus", "choose_threads", "configure_threads", "ensure_threads",
           "explicit_threads",
           "openmp_wait_before_torch", "passive_waiting", "pin_threads", "resolve_threads", "start_line", "usable_cpus"]
