"""Stopping a run early and cleanly: SIGTERM (a scheduler's preemption notice), Ctrl-C, or the wall-clock budget
``--max-time`` spent. The loop asks :meth:`StopRequest.reason` after every step; a run that stops early ends as a
finished one does (checkpoint, export, summary) and ``--resume`` continues it exactly.

How a run ended decides how the command exits, so that ``bytezoo pretrain ... && bytezoo transfer ...`` never goes
on with a half-trained model by accident: a signal ends as shells and ``timeout`` expect (Ctrl-C 130, SIGTERM 143,
after the clean checkpoint); a finished run, early stopping and the time budget the user asked for end 0. The summary
(``ended``) and the command's last line say which it was.
"""
from __future__ import annotations

import signal
import threading
import time

# How each reason reads in the stop line and the summary.
STOP_REASONS = {"sigterm": "SIGTERM", "interrupt": "Ctrl-C", "max_time": "--max-time spent"}
# The exit code of a run stopped by a signal: 128 + the signal's number, as a shell reports a process it killed.
EXIT_CODES = {"interrupt": 128 + signal.SIGINT, "sigterm": 128 + signal.SIGTERM}


def exit_code(stopped_by: str) -> int:
    """What the command exits with after a run that ended so: 130 (Ctrl-C), 143 (SIGTERM), else 0."""
    return EXIT_CODES.get(stopped_by, 0)


def how_it_ended(stopped_by: str, step: int, total_steps: int) -> str:
    """How a run ended, in words, for the summary and the command's last line."""
    if stopped_by == "max_steps":
        return f"finished: {step} of {total_steps} steps"
    if stopped_by == "early_stopping":
        return f"finished by early stopping at step {step} of {total_steps}"
    asked = " (as asked)" if stopped_by == "max_time" else ""
    return (f"stopped by {STOP_REASONS[stopped_by]}{asked} at step {step} of {total_steps}, exit code "
            f"{exit_code(stopped_by)}; --resume continues it")


class StopRequest:
    """Why the loop should end early: SIGTERM or Ctrl-C (SIGINT) during the run, or the wall-clock budget spent. A
    context manager: the handlers are installed for the run only (main thread only, where Python delivers signals).
    A second Ctrl-C aborts at once (KeyboardInterrupt); a SIGINT that the process was started to ignore (a
    background job) stays ignored.

    Every process must leave the loop at the same step (the next collective would hang otherwise), so with several
    processes the flags are pooled (summed) every ``every`` steps, by all of them at the same steps.
    """

    clock = staticmethod(time.monotonic)  # seconds; a test may replace it

    def __init__(self, max_time: float | None):
        self.deadline = None if max_time is None else self.clock() + max_time
        self.signalled = False
        self.interrupted = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _on_sigterm(self, signum, frame) -> None:
        self.signalled = True

    def _on_sigint(self, signum, frame) -> None:
        if self.interrupted:  # the second Ctrl-C: the user wants out now
            raise KeyboardInterrupt
        self.interrupted = True
        print("\nCtrl-C: stopping at the next step with a checkpoint and an export (Ctrl-C again to abort at once)",
              flush=True)

    def reason(self, accelerator, step: int, every: int) -> str | None:
        """"sigterm", "interrupt", "max_time" or None, agreed by every process."""
        if accelerator.num_processes > 1 and step % every:
            return None  # pooling is a collective: every process pools at the same steps, now and then
        signalled, interrupted = self.signalled, self.interrupted
        out_of_time = self.deadline is not None and self.clock() >= self.deadline
        if accelerator.num_processes > 1:
            import torch

            flags = torch.tensor([float(signalled), float(interrupted), float(out_of_time)], device=accelerator.device)
            signalled, interrupted, out_of_time = (bool(f > 0) for f in accelerator.reduce(flags, reduction="sum"))
        if signalled:
            return "sigterm"
        if interrupted:
            return "interrupt"
        return "max_time" if out_of_time else None


__all__ = ["EXIT_CODES", "STOP_REASONS", "StopRequest", "exit_code", "how_it_ended"]
