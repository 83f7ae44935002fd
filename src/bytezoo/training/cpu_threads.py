"""A run's CPU thread count, kept as part of the run.

The count of torch's intra-op threads changes the order in which sums are taken, so two runs on 1 and 2 threads end
apart (2.4e-7 after a few hundred steps of a small model, more in longer runs). A run therefore fixes its count at the
start and records it (``run.json``, every checkpoint, the summary):

- a **new run** takes the usual choice (:func:`bytezoo.threads.resolve_threads`: ``--threads``, the environment, or the
  cores the load leaves free, measured once) and keeps it for the whole run;
- a **resumed run** keeps the count its checkpoint ran with, whatever the load is now, and says so; told another
  count (``--threads``, ``BYTEZOO_NUM_THREADS``, ``OMP_NUM_THREADS``), it uses that one, says that the sums change,
  and records the change;
- **adapting to the load while the run goes** (the library's default for other long work) is an opt-in,
  ``--adapt-threads``: recorded, and the summary then says the run is not bit-reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bytezoo import threads
from bytezoo.errors import InvalidArgumentError


@dataclass
class RunThreads:
    """The run's thread count, how it was chosen, and what would keep the run from being bit-reproducible."""

    count: int
    how: str  # the start line's reason: "--threads 2", "BYTEZOO_NUM_THREADS=2", "2 usable cores, 0.0 kept busy ..."
    adaptive: bool = False  # re-measured while the run went (--adapt-threads), in this or an earlier invocation
    changes: list[dict] = field(default_factory=list)  # {"step", "from", "to", "how"}: a count changed on resume
    counts_used: list[int] = field(default_factory=list)  # with adaptive: every count a step ran with
    adapting: bool = field(default=False, compare=False)  # this invocation follows the load (not recorded)

    def record(self) -> dict:
        return {"count": self.count, "how": self.how, "adaptive": self.adaptive, "changes": self.changes,
                "counts_used": self.counts_used}

    @classmethod
    def from_record(cls, record: dict) -> RunThreads:
        return cls(int(record["count"]), str(record.get("how", "")), bool(record.get("adaptive", False)),
                   list(record.get("changes", [])), list(record.get("counts_used", [])))

    @property
    def not_reproducible_because(self) -> str | None:
        """Why the run will not end bitwise equal to an uninterrupted run on its first thread count; None if nothing
        of the thread count stands in the way."""
        reasons = []
        if self.adaptive:
            used = ", ".join(str(n) for n in sorted(set(self.counts_used or [self.count])))
            reasons.append(f"the thread count followed the load (--adapt-threads; counts used: {used})")
        reasons += [f"the thread count changed from {change['from']} to {change['to']} at step {change['step']} "
                    f"({change['how']})" for change in self.changes]
        return "; ".join(reasons) or None

    def step_ran(self) -> None:
        """With --adapt-threads: looks at the load (every few seconds) and notes the count the steps run with."""
        if self.adapting:
            import torch

            threads.ensure_threads("cpu")
            self._use(torch.get_num_threads())

    def _use(self, count: int) -> None:
        self.count = count
        if count not in self.counts_used:
            self.counts_used.append(count)


def choose(recorded: dict | None, *, step: int, adaptive: bool) -> tuple[RunThreads, str]:
    """Sets the thread count of this invocation of a run, and returns it with the words that say it. ``recorded``:
    what the run has run with so far (its checkpoint's record; None for a new run); ``step``: where it resumes."""
    told = threads.explicit_threads()
    if adaptive and told is not None and told.reason.startswith("--threads"):
        raise InvalidArgumentError("--adapt-threads lets the load choose the thread count and --threads fixes it: "
                                   "choose one")
    if recorded is None:  # a new run: the usual choice, kept from here on
        choice = told or threads.resolve_threads()
        run = RunThreads(choice.count, choice.reason, adaptive=adaptive)
        note = threads.start_line(choice.count, choice.reason) + (
            "; following the load (--adapt-threads)" if adaptive else "; kept for the whole run and on --resume")
    else:
        run = RunThreads.from_record(recorded)
        run.adaptive = run.adaptive or adaptive
        if told is not None and told.count != run.count:  # told another count: the sums change
            run.changes.append({"step": step, "from": run.count, "to": told.count, "how": told.reason})
            note = (f"{told.count} CPU thread(s) ({told.reason}), not the run's {run.count}: the sums change, so the "
                    f"run will not end bitwise equal to an uninterrupted one")
            run.count, run.how = told.count, told.reason
        else:
            note = f"{run.count} CPU thread(s) as the run started ({run.how}); --threads N changes it"
        if adaptive:
            note += "; following the load from here on (--adapt-threads)"
    run.adapting = adaptive and told is None  # a count the user or a launcher fixed is not second-guessed
    threads.pin_threads(run.count, adapt=run.adapting)
    if adaptive:
        run._use(run.count)
    return run, note


__all__ = ["RunThreads", "choose"]
