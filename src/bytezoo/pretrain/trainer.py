"""The pretraining loop: byte-level language modelling with truncated backprop, under Accelerate.

One process, ``accelerate launch`` or ``torchrun`` run the same code. The loop reads top to bottom:
Accelerator -> seed -> data (validated before anything else) -> model, Adam -> prepare -> resume ->
[window -> forward with the carried state -> fp32 loss -> backward -> clip -> lr -> step] -> eval -> save -> export.

A run ends after ``max_steps`` (or ``epochs``), or earlier and just as cleanly (final checkpoint, export, summary)
when its wall-clock budget ``max_time`` is spent or the process receives SIGTERM (a scheduler's preemption notice);
``--resume`` then continues it.
"""
from __future__ import annotations

import contextlib

import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import GradientAccumulationPlugin, set_seed
from tqdm.auto import tqdm

from bytezoo.errors import ByteZooError, InvalidArgumentError
from bytezoo.untrusted import jsonio
from bytezoo.threads import ensure_threads

from . import checkpoint as ckpt
from . import run_identity
from .compression import held_out_compression
from .data import ByteStreams, DataError, StreamLayout
from .evaluation import LN2, evaluate_windows, token_loss, validation_layout, validation_windows
from .schedules import RECIPES, SCALING_RULES, SCHEDULES, Schedule, scaled_lr, warmup_steps


class NonFiniteLossError(ByteZooError, RuntimeError):
    """The loss became NaN or infinite (in fp32 or bf16, where no loss scaler can skip the step)."""


class PretrainConfigError(InvalidArgumentError):
    """An option of the run that cannot be used (out of range, unknown, no such model): names it."""


class LaunchError(ByteZooError, RuntimeError):
    """The launcher started several processes, but this one would train alone."""


def launched_world_size() -> int:
    """How many processes the launcher (torchrun, accelerate launch) says it started: WORLD_SIZE, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def join_launched_group() -> None:
    """Makes a process that a launcher started as one of several join their group, or stops it.

    `torchrun` and `accelerate launch --multi_gpu` set WORLD_SIZE; on a machine without a GPU, Accelerate joins the
    group only with ACCELERATE_USE_CPU=1 and otherwise gives every process a single-process Accelerator: N
    independent runs writing one folder. Without a GPU, the group can only be a CPU (gloo) one, so ask for it.
    """
    if launched_world_size() > 1 and not torch.cuda.is_available() and "ACCELERATE_USE_CPU" not in os.environ:
        os.environ["ACCELERATE_USE_CPU"] = "1"


def check_launch(accelerator) -> None:
    world = launched_world_size()
    if world > 1 and accelerator.num_processes != world:
        raise LaunchError(
            f"the launcher started {world} processes (WORLD_SIZE={world}) but this one would train alone "
            f"(Accelerate sees {accelerator.num_processes}, device {accelerator.device}): on CPUs set ACCELERATE_USE_CPU=1 "
            f"(not ACCELERATE_USE_CPU={os.environ.get('ACCELERATE_USE_CPU')!r}); on GPUs give each process a GPU")


@dataclass
class PretrainConfig:
    """Options of ``bytezoo pretrain`` (see ``bytezoo pretrain --help`` for each). ``None`` means: the recipe's value
    if ``recipe`` sets one, else the default noted."""

    data: list[str]
    output: str
    model: str = "mlstm-256"
    model_config: dict = field(default_factory=dict)
    val_data: list[str] = field(default_factory=list)
    text_field: str | None = None
    batch_size: int = 32  # per process
    seq_len: int = 256
    max_steps: int | None = None
    epochs: float | None = None  # used when max_steps is None; default 1
    max_time: float | None = None  # seconds of wall clock for this invocation; then stop cleanly
    recipe: str | None = None
    lr: float | None = None  # default 5e-4
    lr_scaling: str | None = None  # default "none"
    base_batch_size: int | None = None  # default 128
    lr_cap: float | None = None
    schedule: str | None = None  # default "linear"
    warmup: float | None = None  # default 0
    clip_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    mixed_precision: str = "no"
    save_every: int = 0
    eval_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: str | None = None  # "latest" or a checkpoint directory
    overwrite: bool = False  # replace the run an output folder holds (only what bytezoo wrote is removed)
    seed: int = 0
    shard_bytes: int = 1 << 20
    progress: bool = True

    def resolved(self) -> PretrainConfig:
        """A copy with recipe values and defaults filled in, checked for nonsense."""
        if self.recipe is not None and self.recipe not in RECIPES:
            raise PretrainConfigError(f"unknown recipe {self.recipe!r}; choose from {sorted(RECIPES)}")
        defaults = {"lr": 5e-4, "lr_scaling": "none", "base_batch_size": 128, "schedule": "linear", "warmup": 0.0}
        preset = {**defaults, **RECIPES.get(self.recipe, {})}
        config = dataclasses.replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})
        config.data = [config.data] if isinstance(config.data, str) else list(config.data)
        config.val_data = [config.val_data] if isinstance(config.val_data, str) else list(config.val_data or [])
        problems = []
        for name in ("batch_size", "seq_len", "grad_accum_steps", "shard_bytes", "log_every"):
            if getattr(config, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(config, name)})")
        if config.max_steps is not None and config.max_steps < 1:
            problems.append(f"max_steps must be >= 1 (got {config.max_steps})")
        if config.epochs is not None and config.epochs <= 0:
            problems.append(f"epochs must be > 0 (got {config.epochs})")
        if config.max_time is not None and not config.max_time > 0:
            problems.append(f"max_time must be > 0 seconds (got {config.max_time})")
        if not config.lr > 0:
            problems.append(f"lr must be > 0 (got {config.lr})")
        if not config.warmup >= 0:
            problems.append(f"warmup must be >= 0 (got {config.warmup})")
        if config.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES} (got {config.schedule!r})")
        if config.lr_scaling not in SCALING_RULES:
            problems.append(f"lr_scaling must be one of {SCALING_RULES} (got {config.lr_scaling!r})")
        if config.mixed_precision not in ("no", "fp16", "bf16"):
            problems.append(f"mixed_precision must be no, fp16 or bf16 (got {config.mixed_precision!r})")
        if problems:
            raise PretrainConfigError("; ".join(problems))
        return config


def open_corpus(accelerator, sources: list[str], text_field: str | None, pack_into: Path):
    """The packed corpus of ``sources``: ``sources`` itself when it is one packed corpus URL; otherwise the raw sources
    packed once into ``pack_into`` by the main process (reused while the sources are unchanged)."""
    from bytezoo.data.formats import expand_sources
    from bytezoo.data.packed import PackedCorpus, is_packed, pack, packed_from, read_index

    if len(sources) == 1 and is_packed(sources[0]):
        return PackedCorpus.open(sources[0])
    urls = expand_sources(sources)  # the same answer on every process: a missing source fails everywhere at once
    failure = None
    if accelerator.is_main_process:
        try:
            if not (is_packed(str(pack_into)) and packed_from(read_index(str(pack_into)), urls, text_field)):
                pack_into.parent.mkdir(parents=True, exist_ok=True)
                print(f"packing {len(urls)} source(s) into {pack_into} (once; `bytezoo data pack` does it ahead of time)",
                      flush=True)
                pack(urls, str(pack_into), text_field=text_field, overwrite=True, progress=False)
        except Exception as error:  # every process must learn of it, or the others wait at the barrier forever
            failure = error
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(torch.tensor([float(failure is not None)], device=accelerator.device), reduction="sum")
        if failure is None and flag.item() > 0:
            raise DataError(f"the main process could not pack {sources} into {pack_into}: see its error")
    if failure is not None:
        raise failure
    return PackedCorpus.open(str(pack_into))


def check_model_config(config: PretrainConfig) -> None:
    """--model-config keys and value types, checked against the preset's config before anything runs."""
    from bytezoo.zoo import get_model_info, is_model

    if is_model(config.model) and (config_class := get_model_info(config.model).resolved_config_class()):
        from bytezoo.zoo.configuration_utils import check_config_overrides

        check_config_overrides(config_class, config.model_config, where=f"--model-config of {config.model}")
        try:
            config_class(**config.model_config)  # the config's own range checks (sizes >= 1, a known kernel)
        except ValueError as error:
            if isinstance(error, ByteZooError):
                raise
            raise PretrainConfigError(f"--model-config of {config.model}: {error}") from None


def load_model(name: str, overrides: dict):
    """A zoo preset (randomly initialised, config fields overridden) or a saved checkpoint to continue from."""
    from bytezoo.zoo import create_model, from_pretrained, is_model, list_models

    if is_model(name):
        return create_model(name, **overrides)
    if "/" not in name and not Path(name).exists():  # not a path, URL or hub id: fail now, not after a hub lookup
        raise PretrainConfigError(f"--model {name!r} is neither a zoo preset ({', '.join(list_models())}) nor a checkpoint path")
    try:
        return from_pretrained(name, **overrides)  # a directory, or a hub URL (verified and cached)
    except (OSError, ValueError) as error:
        raise PretrainConfigError(f"--model {name!r} is neither a zoo preset ({', '.join(list_models())}) "
                         f"nor a loadable checkpoint: {error}") from error


class MetricsLog:
    """``metrics.jsonl`` plus TensorBoard scalars, written by the main process only."""

    def __init__(self, output: Path, enabled: bool, resume_step: int | None):
        self.enabled, self.path = enabled, output / "metrics.jsonl"
        self.tensorboard = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():  # forget what was logged after the checkpoint
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            ckpt.write_text_atomic(self.path, "".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("tensorboard is not installed: metrics go to metrics.jsonl only", stacklevel=2)
        else:
            self.tensorboard = SummaryWriter(str(output / "tensorboard"), purge_step=resume_step)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(jsonio.dumps(record) + "\n")
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tensorboard is not None:
                self.tensorboard.close()


def plot_curves(metrics_path: Path, png_path: Path) -> None:
    """Training and validation BPC, and the learning rate, against characters seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    train = [r for r in records if "bpc" in r]
    val = [r for r in records if "val_bpc" in r]
    figure, (ax_bpc, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 1))
    ax_bpc.plot([r["characters_seen"] for r in train], [r["bpc"] for r in train], label="train", lw=1)
    if val:
        ax_bpc.plot([r["characters_seen"] for r in val], [r["val_bpc"] for r in val], "o-", label="validation")
    ax_bpc.set_ylabel("bits per character")
    ax_bpc.legend()
    ax_bpc.grid(alpha=0.3)
    ax_lr.plot([r["characters_seen"] for r in train], [r["lr"] for r in train], lw=1)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("characters seen")
    ax_lr.grid(alpha=0.3)
    figure.tight_layout()
    staging = png_path.with_name(f".tmp-{png_path.name}")
    figure.savefig(staging, format="png", dpi=110)
    plt.close(figure)
    os.replace(staging, png_path)


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
            flags = torch.tensor([float(signalled), float(interrupted), float(out_of_time)], device=accelerator.device)
            signalled, interrupted, out_of_time = (bool(f > 0) for f in accelerator.reduce(flags, reduction="sum"))
        if signalled:
            return "sigterm"
        if interrupted:
            return "interrupt"
        return "max_time" if out_of_time else None


@contextlib.contextmanager
def accelerate_state_of_its_own():
    """Accelerate's state is a process-wide singleton: reset it after a run (pretraining or fine-tuning), so that a
    later run in the same process chooses its own precision and device."""
    try:
        yield
    finally:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state()
        GradientState._reset_state()


def run(config: PretrainConfig) -> dict:
    """Pretrain as ``config`` says; return the run's summary (also saved beside the exported model)."""
    with accelerate_state_of_its_own():
        return _run(config.resolved())


def _run(config: PretrainConfig) -> dict:
    output = Path(config.output)
    check_model_config(config)  # a typo in --model-config fails before any data is read
    join_launched_group()
    # The plugin, not gradient_accumulation_steps=: Accelerate lets ACCELERATE_GRADIENT_ACCUMULATION_STEPS override the
    # latter, and the loop reads exactly grad_accum_steps windows per step, so the two must agree.
    accelerator = Accelerator(mixed_precision=config.mixed_precision, step_scheduler_with_optimizer=False,
                              gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=config.grad_accum_steps))
    if config.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        warnings.warn("fp16 on CPU: Accelerate trains in fp32 (no autocast, no loss scaling); use bf16 on CPU", stacklevel=2)
    check_launch(accelerator)
    ensure_threads(accelerator.device)  # a thread count that holds up when other processes share the cores
    # What actually runs: Accelerate trains fp16 on a CPU in fp32 (no autocast, no scaler).
    precision = "no" if config.mixed_precision == "fp16" and accelerator.device.type == "cpu" else config.mixed_precision
    set_seed(config.seed)
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes

    # --- the output folder: one run only (checked by every process, before anything is written) --------------------
    T, B = config.seq_len, config.batch_size
    now = run_identity.fingerprint(config, num_processes=world, global_batch_size=B * world * config.grad_accum_steps)
    continued = run_identity.check_output_folder(output, now, resume=bool(config.resume), overwrite=config.overwrite)
    accelerator.wait_for_everyone()  # nobody writes before every process has read the folder as it was
    if main and config.overwrite:
        run_identity.clear_output_folder(output)

    # --- data: packed corpora (raw sources are packed once into OUTPUT/corpus*), validated before a model exists ---
    train_corpus = open_corpus(accelerator, config.data, config.text_field, output / "corpus")
    train_bytes = train_corpus.total_bytes
    layout = StreamLayout.plan(train_bytes, B * world, config.shard_bytes)
    steps_per_epoch = layout.windows(T) // config.grad_accum_steps
    if steps_per_epoch == 0:
        raise DataError(f"the corpus ({train_bytes:,} bytes) is too small for {B * world} streams of {T + 1}-byte "
                        f"windows x {config.grad_accum_steps} accumulation steps: lower --batch-size or --seq-len")
    total_steps = config.max_steps or math.ceil((config.epochs or 1.0) * steps_per_epoch)

    def train_windows(epoch: int, start_window: int) -> ByteStreams:
        return ByteStreams(train_corpus, layout, first_stream=rank * B, batch_size=B, seq_len=T, seed=config.seed,
                           epoch=epoch, start_window=start_window)

    # Without validation data, neither: make_val_windows() gives a fresh pass over the validation windows, held_out is
    # what the compressors read (the same bytes).
    make_val_windows, held_out = None, None
    if config.val_data:
        val_corpus = open_corpus(accelerator, config.val_data, config.text_field, output / "corpus-val")
        val_batch, val_layout = validation_layout(val_corpus.total_bytes, B, world, T, config.shard_bytes)
        held_out = (val_corpus, val_layout)
        make_val_windows = functools.partial(validation_windows, val_corpus, val_layout, rank=rank, streams=val_batch,
                                             seq_len=T, seed=config.seed)

    # The data are usable: from here on the folder holds this run (a data error above left no run.json behind).
    if main:
        output.mkdir(parents=True, exist_ok=True)
        run_identity.write_identity(output, now, continued)
    accelerator.wait_for_everyone()
    run_id = run_identity.read_identity(output)["run_id"]

    # --- model, optimizer, schedule -------------------------------------------------------------------------------
    model = load_model(config.model, config.model_config)
    global_batch = B * world * config.grad_accum_steps
    peak_lr = scaled_lr(config.lr, global_batch, config.lr_scaling, config.base_batch_size, config.lr_cap)
    schedule = Schedule(peak_lr, total_steps, config.schedule, warmup_steps(config.warmup, total_steps))
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule(0))
    model, optimizer = accelerator.prepare(model, optimizer)  # no scheduler: the rate is set from `updates` each step

    # --- resume -----------------------------------------------------------------------------------------------------
    position = {"step": 0, "updates": 0, "epoch": 0, "window": 0, "characters_seen": 0, "train_seconds": 0.0}
    state = None  # the model's state (parts named by body.state_names, dim 1 = streams): carried, detached between windows
    body = accelerator.unwrap_model(model).model
    resumed_from = None
    if config.resume:
        # this run's checkpoints (a folder from before run identities: all of them)
        resumed_from = ckpt.checkpoint_to_resume(output, config.resume, run_id if continued else None)
        if resumed_from is not None:
            saved, named_state = ckpt.load_checkpoint(accelerator, resumed_from)
            if sorted(named_state) != sorted(body.state_names):
                raise ckpt.ResumeError(f"cannot resume from {resumed_from}: its streams hold the state parts {sorted(named_state)}, "
                                 f"this model's are {list(body.state_names)}")
            state = tuple(named_state[name] for name in body.state_names)
            expected = {"num_streams": B * world, "seq_len": T, "corpus_bytes": train_bytes}
            mismatched = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
            if mismatched:
                raise run_identity.RunFolderError(f"cannot resume from {resumed_from}: (saved, now) differ for {mismatched}")
            position = {k: saved[k] for k in position}
        elif main:
            print(f"--resume: no checkpoint in {output / 'checkpoints'}; starting from scratch")

    # --- the loop ---------------------------------------------------------------------------------------------------
    output.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(output, main, position["step"] if resumed_from else None)
    chars_per_step = global_batch * T
    windows = train_windows(position["epoch"], position["window"])
    bar = tqdm(total=total_steps, initial=position["step"], disable=not (main and config.progress), unit="step",
               dynamic_ncols=True, mininterval=0.5, desc="pretrain")
    last_checkpoint, val_bpc, train_bpc = resumed_from, None, None
    interval = {"nll": 0.0, "count": 0.0, "start": time.perf_counter(), "steps": 0}
    run_start = time.perf_counter() - position["train_seconds"]

    def save() -> Path:
        train_state = {**position, "run_id": run_id, "train_seconds": time.perf_counter() - run_start, "num_streams": B * world,
                       "num_processes": world, "seq_len": T, "corpus_bytes": train_bytes}
        parts = state if state is not None else body.initial_state(B)
        return ckpt.save_checkpoint(accelerator, output, train_state, dict(zip(body.state_names, parts)), config.keep_checkpoints)

    model.train()
    stopped_by = None
    with StopRequest(config.max_time) as stop:
        while position["step"] < total_steps:
            ensure_threads(accelerator.device)  # a clock read; every RECHECK_SECONDS a look at the load
            lr = schedule(position["updates"])  # a function of applied updates: a skipped fp16 step does not advance it
            for _ in range(config.grad_accum_steps):
                if len(windows) == 0:  # next epoch: a new file order and stream permutation; every state resets
                    position["epoch"], position["window"] = position["epoch"] + 1, 0
                    windows = train_windows(position["epoch"], 0)
                window = next(windows)
                position["window"] += 1
                input_ids, targets, reset = (t.to(accelerator.device) for t in (window.input_ids, window.targets, window.reset_mask))
                with accelerator.accumulate(model):
                    out = model(input_ids=input_ids, state=state, reset_mask=reset, use_cache=True)  # logits (B, T, 256)
                    nll, count = token_loss(out.logits, targets)
                    # Divide by every position, counted or not, so that P processes x B/P streams average to 1 x B.
                    accelerator.backward(nll / targets.numel())
                    state = tuple(part.detach() for part in out.state)
                    pooled = accelerator.reduce(torch.stack([nll.detach(), count.float()]), reduction="sum")
                    if config.mixed_precision != "fp16" and not torch.isfinite(pooled[0]):
                        raise NonFiniteLossError(
                            f"the loss is {pooled[0].item()} at step {position['step'] + 1}; stopping before the update. "
                            f"Last good checkpoint: {last_checkpoint or 'none'}. Lower --lr, or check the data.")
                    if accelerator.sync_gradients and config.clip_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                interval["nll"] += pooled[0].item()
                interval["count"] += pooled[1].item()
            if not accelerator.optimizer_step_was_skipped:
                position["updates"] += 1
            position["step"] += 1
            position["characters_seen"] += chars_per_step
            interval["steps"] += 1
            bar.update(1)

            if position["step"] % config.log_every == 0 or position["step"] == total_steps:
                seconds = time.perf_counter() - interval["start"]
                loss = interval["nll"] / max(interval["count"], 1.0)
                train_bpc = loss / LN2
                record = {"step": position["step"], "updates": position["updates"], "epoch": position["epoch"],
                          "characters_seen": position["characters_seen"], "loss": loss, "bpc": train_bpc, "lr": lr,
                          "chars_per_second": interval["steps"] * chars_per_step / seconds}
                metrics.write(record)
                bar.set_postfix_str(f"{record['chars_per_second']:,.0f} char/s  loss {loss:.3f}  bpc {train_bpc:.3f}  lr {lr:.2e}")
                interval = {"nll": 0.0, "count": 0.0, "start": time.perf_counter(), "steps": 0}
            if make_val_windows and config.eval_every and position["step"] % config.eval_every == 0 and position["step"] < total_steps:
                val_bpc = evaluate_windows(accelerator.unwrap_model(model), make_val_windows(), accelerator=accelerator)["bits_per_byte"]
                metrics.write({"step": position["step"], "characters_seen": position["characters_seen"], "val_bpc": val_bpc})
            if config.save_every and position["step"] % config.save_every == 0 and position["step"] < total_steps:
                last_checkpoint = save()
            stopped_by = stop.reason(accelerator, position["step"], config.log_every)
            if stopped_by is not None:
                break

    bar.close()
    train_seconds = time.perf_counter() - run_start

    # --- the end: final evaluation, checkpoint, export --------------------------------------------------------------
    compression = None
    if make_val_windows:
        validation = evaluate_windows(accelerator.unwrap_model(model), make_val_windows(), accelerator=accelerator)
        val_bpc, val_predicted = validation["bits_per_byte"], validation["predicted_bytes"]
        metrics.write({"step": position["step"], "characters_seen": position["characters_seen"], "val_bpc": val_bpc})
        if main:  # once per run, on the main process: the same bytes for every process count
            compression = held_out_compression(*held_out, T, predicted_bytes=val_predicted)
    if config.save_every or config.resume or stopped_by is not None:  # a stopped run is meant to be resumed
        last_checkpoint = save()
    if stopped_by is not None and main:
        why = {"sigterm": "SIGTERM", "interrupt": "Ctrl-C", "max_time": "--max-time spent"}[stopped_by]
        print(f"stopped at step {position['step']} of {total_steps} ({why}); checkpoint {last_checkpoint}; "
              f"continue with --resume")
    metrics.close()
    summary = {
        "model": config.model, "model_config": config.model_config, "data": config.data, "val_data": config.val_data,
        "text_field": config.text_field, "corpus_bytes": train_bytes, "steps": position["step"],
        "updates": position["updates"], "epochs": position["characters_seen"] / max(layout.corpus_bytes, 1),
        "characters_seen": position["characters_seen"], "train_bpc": train_bpc, "val_bpc": val_bpc,
        "val_compression": compression,
        "chars_per_second": position["characters_seen"] / max(train_seconds, 1e-9), "train_seconds": train_seconds,
        "seq_len": T, "batch_size": B, "global_batch_size": global_batch, "num_processes": world,
        "grad_accum_steps": config.grad_accum_steps, "mixed_precision": precision,
        "mixed_precision_requested": config.mixed_precision, "run_id": run_id,
        "lr": config.lr, "peak_lr": peak_lr, "lr_scaling": config.lr_scaling, "lr_cap": config.lr_cap,
        "schedule": config.schedule, "warmup_steps": schedule.warmup_steps, "recipe": config.recipe, "seed": config.seed,
        "resumed_from": str(resumed_from) if resumed_from else None,
        "max_steps": total_steps, "stopped_by": stopped_by or "max_steps", "max_time": config.max_time,
    }
    if main:
        from bytezoo import ByteTokenizer, __version__

        summary["bytezoo_version"] = __version__
        ckpt.export_model(accelerator.unwrap_model(model), ByteTokenizer(), output / "model", summary)
        ckpt.write_text_atomic(output / "summary.json", jsonio.dumps(summary, indent=2))
        plot_curves(metrics.path, output / "curves.png")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary
