"""The one training runtime: what a run of either objective (``bytezoo pretrain``, ``bytezoo finetune``) goes
through, in the order it goes through it. An objective's ``_run`` reads as this outline with its own model, batches
and figures filled in::

    run = TrainingRun(config, ...)         accelerator and precision, launch checks, seed
    run.claim_folder(fingerprint)          the output folder: one run (new, --resume or --overwrite); the checkpoint
                                           to resume from (the newest sound one); the run's CPU thread count
    ... the objective's data, checked (run.check_data: not changed under a run being resumed) ...
    run.write_identity(data)               from here on the folder holds this run (run.json: settings, data, threads)
    ... the objective's model and optimizer ...
    model, optimizer = run.prepare(model, optimizer)
    saved, state = run.resume(position, total_steps)     the checkpoint's state, or (None, {})
    ... the objective checks it fits, then run.restore_position(saved): "resumed from step N of M" ...
    with run.steps(total_steps, desc):     progress bar, stop signals and the time budget
        while run.running():
            ... rates ...
            reports = run.optimizer_step(model, optimizer, batches, forward, advice=...)   accumulate, clip, step
            ... log (run.due), evaluate, save (run.save) ...
            if run.stop_requested(): break
    run.end_of_loop(save)                  the checkpoint a stopped run needs, and the stop line
    ... the objective's last evaluation and summary (with run.summary()) ...
    run.finish(model, summary)             export, summary.json

The schedule (warmup and decay shapes) lives in :mod:`bytezoo.training.schedules`; each objective sets the rate of
its parameter groups from it before every step.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from bytezoo.errors import ByteZooError

from . import checkpoint as ckpt
from . import cpu_threads, run_folder
from .launch import start_accelerator
from .metrics import MetricsLog
from .stop import STOP_REASONS, StopRequest, exit_code, how_it_ended


class NonFiniteLossError(ByteZooError, RuntimeError):
    """The loss became NaN or infinite (in fp32 or bf16, where no loss scaler can skip the step)."""


class TrainingRun:
    """One run of an objective, from the Accelerator to the export.

    ``config`` is the objective's config; the runtime reads the options both share: ``output``, ``mixed_precision``,
    ``grad_accum_steps``, ``seed``, ``resume``, ``overwrite``, ``keep_checkpoints``, ``max_time``, ``log_every``,
    ``save_every``, ``clip_grad_norm``, ``progress``, ``adapt_threads``. ``use`` says what the command writes into its
    folder."""

    def __init__(self, config, *, command: str, use: run_folder.FolderUse = run_folder.TRAINING_RUN,
                 kwargs_handlers=()):
        from accelerate.utils import set_seed

        self.config, self.command, self.use, self.output = config, command, use, Path(config.output)
        self.accelerator, self.precision = start_accelerator(config.mixed_precision, config.grad_accum_steps,
                                                             kwargs_handlers)
        set_seed(config.seed)
        accelerator = self.accelerator
        self.main, self.rank = accelerator.is_main_process, accelerator.process_index
        self.world = accelerator.num_processes
        self.fingerprint: dict | None = None
        self.continued: dict | None = None  # the identity of the run this one continues (on --resume)
        self.run_id: str | None = None
        self.position: dict = {"step": 0, "updates": 0, "train_seconds": 0.0}
        self.resumed_from: Path | None = None  # the checkpoint this invocation continues from
        self.damaged: list[tuple[Path, str]] = []  # newer checkpoints passed over, with what is wrong with them
        self.threads: cpu_threads.RunThreads | None = None
        self.threads_note = ""
        self.last_checkpoint: Path | None = None
        self.stopped_by: str | None = None
        self.total_steps = 0

    # --- the output folder -------------------------------------------------------------------------------------------
    def claim_folder(self, fingerprint: dict) -> None:
        """One run per folder, decided by every process before anything is written; --overwrite then clears it.
        On --resume, the checkpoint to continue from is chosen here (the newest sound one), and with it the CPU
        thread count: the run's, unless told another."""
        self.fingerprint = fingerprint
        self.continued = run_folder.check_output_folder(self.output, self.use, resume=bool(self.config.resume),
                                                        overwrite=self.config.overwrite, now=fingerprint)
        recorded, step = None, 0
        if self.config.resume:
            self.resumed_from, self.damaged = ckpt.find_resumable(
                self.output, self.config.resume, self.continued["run_id"] if self.continued else None)
        if self.resumed_from is not None:
            saved = ckpt.read_train_state(self.resumed_from)
            recorded, step = saved.get("threads") or (self.continued or {}).get("threads"), saved.get("step", 0)
        self.accelerator.wait_for_everyone()  # nobody writes before every process has read the folder as it was
        if self.main and self.config.overwrite:
            run_folder.clear_output_folder(self.output, self.use)
        self.threads, self.threads_note = cpu_threads.choose(recorded, step=step,
                                                             adaptive=getattr(self.config, "adapt_threads", False))
        if self.resumed_from is None:
            from bytezoo.threads import say

            say(self.threads_note)

    def check_data(self, sources: list[dict]) -> None:
        """Refuses to continue a run from a checkpoint on data that changed since the run started (one line naming
        the source and what changed), before anything is trained or written."""
        if self.resumed_from is not None and self.continued is not None and self.continued.get("data") is not None:
            run_folder.check_data(self.output, self.continued["data"], sources)

    def write_identity(self, data: list[dict] | None = None) -> None:
        """The data are usable: from here on the folder holds this run (a data error before left no run.json).
        ``data``: each training source's identity (``url``, ``sha256``, ``bytes`` or ``rows``)."""
        if data is not None:
            self.check_data(data)
        if self.main:
            self.output.mkdir(parents=True, exist_ok=True)
            run_folder.write_identity(self.output, self.fingerprint, self.continued, data=data,
                                      threads=self.threads.record())
        self.accelerator.wait_for_everyone()
        self.run_id = run_folder.read_identity(self.output)["run_id"]

    # --- model and resume ---------------------------------------------------------------------------------------------
    def prepare(self, *objects):
        return self.accelerator.prepare(*objects)

    def unwrap(self, model):
        return self.accelerator.unwrap_model(model)

    def resume(self, position: dict, total_steps: int) -> tuple[dict | None, dict]:
        """With --resume, restores the checkpoint chosen by :meth:`claim_folder` into the prepared objects; returns
        its train state and this process's recurrent state, or ``(None, {})`` when there is nothing to resume.
        ``position`` (the objective's counters) is filled in by :meth:`restore_position`."""
        self.position, self.total_steps = position, total_steps
        if not self.config.resume:
            return None, {}
        if self.resumed_from is None:
            if self.main:
                print(f"--resume: no checkpoint in {self.output / 'checkpoints'}; starting from scratch", flush=True)
            return None, {}
        if self.main:
            for path, problem in self.damaged:
                print(f"checkpoint {path.name} is damaged ({problem}): resuming from {self.resumed_from.name}, the "
                      f"newest sound one, instead", flush=True)
        saved, named_state = ckpt.load_checkpoint(self.accelerator, self.resumed_from)
        self.last_checkpoint = self.resumed_from
        return saved, named_state

    def restore_position(self, saved: dict) -> None:
        """The counters of a checkpoint (after the objective checked it fits), and the line that says so."""
        self.position.update({key: saved[key] for key in self.position})
        if self.main:
            print(f"resumed from step {self.position['step']} of {self.total_steps} (checkpoint {self.resumed_from}); "
                  f"{self.threads_note.removeprefix('bytezoo: ')}", flush=True)

    def metrics_log(self) -> MetricsLog:
        self.output.mkdir(parents=True, exist_ok=True)
        return MetricsLog(self.output, self.main, self.position["step"] if self.resumed_from else None)

    # --- the loop -----------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def steps(self, total_steps: int, desc: str):
        """The loop's frame: a progress bar, the stop signals and the time budget, the run's clock."""
        from tqdm.auto import tqdm

        self.total_steps = total_steps
        shown = self.main and self.config.progress
        self.bar = tqdm(total=total_steps, initial=self.position["step"], disable=not shown, unit="step",
                        dynamic_ncols=True, mininterval=0.5, desc=desc)
        if not shown:  # lines written "above the bar" still reach the main process's output
            self.bar.write = lambda text: print(text, flush=True) if self.main else None
        self._clock_start = time.perf_counter() - self.position["train_seconds"]
        try:
            with StopRequest(self.config.max_time) as self._stop:
                yield self
        finally:
            self.bar.close()
            self.position["train_seconds"] = self.train_seconds()

    def running(self) -> bool:
        self.threads.step_ran()  # with --adapt-threads: a look at the load every few seconds
        return self.position["step"] < self.total_steps

    def train_seconds(self) -> float:
        return time.perf_counter() - self._clock_start

    def optimizer_step(self, model, optimizer, batches: Iterable, forward: Callable, *,
                       advice: str) -> list[torch.Tensor]:
        """One optimizer step over the step's batches (``grad_accum_steps`` of them; Accelerate adds up their
        gradients and steps, clipped, after the last). ``forward(batch)`` returns ``(loss, report)``: the loss to
        backpropagate and a 1-d tensor of figures summed over processes (the first: a loss whose non-finite value
        stops the run, naming ``advice``). Returns each batch's pooled report; the step is counted (an fp16 step
        skipped for overflow is no applied update)."""
        accelerator, reports = self.accelerator, []
        for batch in batches:
            with accelerator.accumulate(model):
                loss, report = forward(batch)
                accelerator.backward(loss)
                pooled = accelerator.reduce(report, reduction="sum")
                if self.config.mixed_precision != "fp16" and not torch.isfinite(pooled[0]):
                    raise NonFiniteLossError(
                        f"the loss is {pooled[0].item()} at step {self.position['step'] + 1}; stopping before the "
                        f"update. Last good checkpoint: {self.last_checkpoint or 'none'}. {advice}")
                # Only the summed gradient is clipped (and, with fp16, unscaled once): not a partial sum.
                if accelerator.sync_gradients and self.config.clip_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), self.config.clip_grad_norm)
                optimizer.step()  # Accelerate skips both until the step's last batch
                optimizer.zero_grad(set_to_none=True)
            reports.append(pooled)
        if not accelerator.optimizer_step_was_skipped:
            self.position["updates"] += 1
        self.position["step"] += 1
        self.bar.update(1)
        return reports

    def due(self, every: int, *, at_end: bool = False) -> bool:
        """Whether the step just taken is one of every ``every`` (0: never); the last step counts with ``at_end``,
        and otherwise not (the end has its own evaluation and checkpoint)."""
        step = self.position["step"]
        if step == self.total_steps:
            return at_end
        return bool(every) and step % every == 0

    def stop_requested(self) -> bool:
        self.stopped_by = self._stop.reason(self.accelerator, self.position["step"], self.config.log_every)
        return self.stopped_by is not None

    def save(self, state: dict, recurrent_state: dict | None = None, extra_tensors: dict | None = None) -> Path:
        """A checkpoint of the run's position and ``state`` (the objective's counters), on every process."""
        train_state = {**self.position, "run_id": self.run_id, "train_seconds": self.train_seconds(),
                       "num_processes": self.world, "threads": self.threads.record(), **state}
        self.last_checkpoint = ckpt.save_checkpoint(self.accelerator, self.output, train_state, recurrent_state or {},
                                                    self.config.keep_checkpoints, extra_tensors=extra_tensors)
        return self.last_checkpoint

    # --- the end ------------------------------------------------------------------------------------------------------
    @property
    def interrupted(self) -> bool:
        """Stopped by a signal or the time budget: the run is meant to be resumed."""
        return self.stopped_by in STOP_REASONS

    def end_of_loop(self, save: Callable[[], Path]) -> None:
        """The last checkpoint (with --save-every or --resume, and always for a stopped run) and the stop line."""
        if self.config.save_every or self.config.resume or self.interrupted:
            save()
        if self.interrupted and self.main:
            print(f"stopped at step {self.position['step']} of {self.total_steps} ({STOP_REASONS[self.stopped_by]}); "
                  f"checkpoint {self.last_checkpoint}; continue with --resume", flush=True)

    def summary(self) -> dict:
        """What every run's summary says about the run itself (the objective adds its own figures): how it ended
        (``stopped_by``, ``ended``: in words, ``exit_code``: what the command exits with), its thread count and
        whether it is bit-reproducible."""
        stopped_by = self.stopped_by or "max_steps"
        why_not = self.threads.not_reproducible_because
        return {
            "num_processes": self.world, "grad_accum_steps": self.config.grad_accum_steps,
            "mixed_precision": self.precision, "mixed_precision_requested": self.config.mixed_precision,
            "seed": self.config.seed, "run_id": self.run_id,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None, "max_steps": self.total_steps,
            "stopped_by": stopped_by, "max_time": self.config.max_time,
            "ended": how_it_ended(stopped_by, self.position["step"], self.total_steps),
            "exit_code": exit_code(stopped_by),
            "threads": self.threads.record(), "bit_reproducible": why_not is None,
            "not_bit_reproducible_because": why_not,
        }

    def finish(self, model, summary: dict, also: Callable[[], None] | None = None) -> dict:
        """The export (``OUTPUT/model``, with ``training_summary.json``) and ``summary.json``, by the main process
        (``also``: what else it writes then); every process then leaves the run together."""
        if self.main:
            from bytezoo import ByteTokenizer, __version__

            summary["bytezoo_version"] = __version__
            ckpt.export_model(self.unwrap(model), ByteTokenizer(), self.output / "model", summary)
            ckpt.write_json(self.output / "summary.json", summary)
            if also is not None:
                also()
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return summary


__all__ = ["NonFiniteLossError", "TrainingRun"]
