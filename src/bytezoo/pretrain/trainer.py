"""The pretraining objective: byte-level language modelling with truncated backprop, on the shared runtime
(:mod:`bytezoo.training`).

One process, ``accelerate launch`` or ``torchrun`` run the same code. The loop reads top to bottom:
Accelerator -> seed -> data (validated before anything else) -> model, Adam -> prepare -> resume ->
[window -> forward with the carried state -> fp32 loss -> backward -> clip -> lr -> step] -> eval -> save -> export.

What is pretraining's own lives here: the options, the packed corpora and their streams, the carried recurrent state,
the loss (next-byte NLL in fp32), validation bits per character and the curves. The runtime does the rest.

A run ends after ``max_steps`` (or ``epochs``), or earlier and just as cleanly (final checkpoint, export, summary)
when its wall-clock budget ``max_time`` is spent or the process receives SIGTERM (a scheduler's preemption notice);
``--resume`` then continues it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bytezoo.errors import ByteZooError, InvalidArgumentError
from bytezoo.training import run_folder
from bytezoo.training.checkpoint import ResumeError
# LaunchError: part of this API (hence the noqa)
from bytezoo.training.launch import LaunchError, accelerate_state_of_its_own  # noqa: F401
from bytezoo.training.runtime import NonFiniteLossError, TrainingRun
from bytezoo.training.schedules import Schedule, warmup_steps
from bytezoo.training.stop import StopRequest  # noqa: F401  (part of this module's API: tests replace its clock)

from bytezoo.data.packed import source_identities

from .compression import held_out_compression
from .data import ByteStreams, DataError, StreamLayout
from .evaluation import LN2, evaluate_windows, token_loss, validation_layout, validation_windows
from .schedules import RECIPES, SCALING_RULES, SCHEDULES, scaled_lr



class PretrainConfigError(InvalidArgumentError):
    """An option of the run that cannot be used (out of range, unknown, no such model): names it."""


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
    adapt_threads: bool = False  # follow the load with the CPU thread count (gives up bitwise reproducibility)

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


def open_corpus(accelerator, sources: list[str], text_field: str | None, pack_into: Path,
                check: Callable[[list[dict]], None] | None = None):
    """The packed corpus of ``sources``: ``sources`` itself when it is one packed corpus URL; otherwise the raw sources
    packed once into ``pack_into`` by the main process (reused while the sources are unchanged). A new pack is
    written beside it and takes its place only once ``check`` (given each source's identity) accepts it, so a
    resume refused for changed data leaves the run's corpus as it was."""
    import shutil

    from bytezoo.data.formats import expand_sources
    from bytezoo.data.packed import PackedCorpus, is_packed, pack, packed_from, read_index, source_identities

    if len(sources) == 1 and is_packed(sources[0]):
        return PackedCorpus.open(sources[0])
    urls = expand_sources(sources)  # the same answer on every process: a missing source fails everywhere at once
    failure, staging = None, pack_into.with_name(f".tmp-{pack_into.name}")
    if accelerator.is_main_process:
        try:
            if not (is_packed(str(pack_into)) and packed_from(read_index(str(pack_into)), urls, text_field)):
                pack_into.parent.mkdir(parents=True, exist_ok=True)
                print(f"packing {len(urls)} source(s) into {pack_into} "
                      "(once; `bytezoo data pack` does it ahead of time)", flush=True)
                index = pack(urls, str(staging), text_field=text_field, overwrite=True, progress=False)
                if check is not None:
                    check(source_identities(index))
                shutil.rmtree(pack_into, ignore_errors=True)
                os.replace(staging, pack_into)
        except Exception as error:  # every process must learn of it, or the others wait at the barrier forever
            shutil.rmtree(staging, ignore_errors=True)
            failure = error
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(torch.tensor([float(failure is not None)], device=accelerator.device),
                                  reduction="sum")
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
        raise PretrainConfigError(f"--model {name!r} is neither a zoo preset ({', '.join(list_models())}) "
                                  "nor a checkpoint path")
    try:
        return from_pretrained(name, **overrides)  # a directory, or a hub URL (verified and cached)
    except (OSError, ValueError) as error:
        raise PretrainConfigError(f"--model {name!r} is neither a zoo preset ({', '.join(list_models())}) "
                         f"nor a loadable checkpoint: {error}") from error


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


def fingerprint(config: PretrainConfig, *, num_processes: int, global_batch_size: int) -> dict:
    """The settings that decide what the run computes, as JSON values (``OUTPUT/run.json``; see
    :mod:`bytezoo.training.run_folder`)."""
    model_config = {k: v for k, v in sorted(config.model_config.items()) if k not in run_folder.RUNTIME_MODEL_KEYS}
    return {
        "model": config.model, "model_config": model_config, "data": list(config.data),
        "text_field": config.text_field, "seq_len": config.seq_len,
        "batch_size": config.batch_size, "num_processes": num_processes, "grad_accum_steps": config.grad_accum_steps,
        "global_batch_size": global_batch_size, "shard_bytes": config.shard_bytes, "seed": config.seed,
        "recipe": config.recipe, "lr": config.lr, "lr_scaling": config.lr_scaling,
        "base_batch_size": config.base_batch_size, "lr_cap": config.lr_cap, "schedule": config.schedule,
        "warmup": config.warmup, "clip_grad_norm": config.clip_grad_norm, "mixed_precision": config.mixed_precision,
    }


@dataclass
class Corpora:
    """The run's data, checked before a model exists: the training corpus and how its streams are laid out, this
    process's windows of an epoch, and (with --val-data) a fresh pass over the validation windows and the bytes the
    compressors read (the same bytes)."""

    train: object  # PackedCorpus
    layout: StreamLayout
    steps_per_epoch: int
    train_windows: Callable[[int, int], ByteStreams]  # (epoch, start_window) -> this process's windows
    make_val_windows: functools.partial | None = None
    held_out: tuple | None = None  # (validation corpus, its layout)


def open_data(run: TrainingRun, config: PretrainConfig) -> Corpora:
    """Packed corpora (raw sources are packed once into OUTPUT/corpus*), laid out as this run's streams."""
    T, B, rank, world = config.seq_len, config.batch_size, run.rank, run.world
    train = open_corpus(run.accelerator, config.data, config.text_field, run.output / "corpus", check=run.check_data)
    layout = StreamLayout.plan(train.total_bytes, B * world, config.shard_bytes)
    steps_per_epoch = layout.windows(T) // config.grad_accum_steps
    if steps_per_epoch == 0:
        raise DataError(f"the corpus ({train.total_bytes:,} bytes) is too small for {B * world} streams of "
                        f"{T + 1}-byte windows x {config.grad_accum_steps} accumulation steps: lower --batch-size "
                        "or --seq-len")
    windows = functools.partial(ByteStreams, train, layout, first_stream=rank * B, batch_size=B, seq_len=T,
                                seed=config.seed)
    data = Corpora(train, layout, steps_per_epoch, lambda epoch, start: windows(epoch=epoch, start_window=start))
    if config.val_data:
        val_corpus = open_corpus(run.accelerator, config.val_data, config.text_field, run.output / "corpus-val")
        val_batch, val_layout = validation_layout(val_corpus.total_bytes, B, world, T, config.shard_bytes)
        data.held_out = (val_corpus, val_layout)
        data.make_val_windows = functools.partial(validation_windows, val_corpus, val_layout, rank=rank,
                                                  streams=val_batch, seq_len=T, seed=config.seed)
    return data


def resume_streams(run: TrainingRun, position: dict, total_steps: int, body, data: Corpora,
                   config: PretrainConfig) -> tuple | None:
    """With --resume: the checkpoint's position (into ``position``) and this process's streams' state, checked
    against this run's streams; None (zero state) for a new run."""
    saved, named_state = run.resume(position, total_steps)
    if saved is None:
        return None
    if sorted(named_state) != sorted(body.state_names):
        raise ResumeError(f"cannot resume from {run.resumed_from}: its streams hold the state parts "
                          f"{sorted(named_state)}, this model's are {list(body.state_names)}")
    expected = {"num_streams": (config.batch_size * run.world, "streams"),
                "seq_len": (config.seq_len, "bytes per window"),
                "corpus_bytes": (data.train.total_bytes, "corpus bytes")}
    differ = [f"{saved.get(key)!r} {words} then, {now!r} now"
              for key, (now, words) in expected.items() if saved.get(key) != now]
    if differ:
        raise run_folder.OutputFolderError(
            f"cannot resume from {run.resumed_from}: it was saved with {'; '.join(differ)}. Resume with the data and "
            f"settings it was saved with, start the run again with --overwrite, or start a new run in another --output")
    run.restore_position(saved)
    return tuple(named_state[name] for name in body.state_names)


class TrainingStreams:
    """This process's training windows, one epoch after another (each epoch a new file order and stream permutation,
    every state reset), and the recurrent state carried from each window to the next (parts named by the body's
    ``state_names``, dim 1 = streams; detached between windows; None: zero)."""

    def __init__(self, data: Corpora, position: dict, body, state: tuple | None, grad_accum_steps: int, device):
        self.data, self.position, self.body, self.state = data, position, body, state
        self.grad_accum_steps, self.device = grad_accum_steps, device
        self.windows = data.train_windows(position["epoch"], position["window"])

    def step(self):
        """The step's windows, advancing the position."""
        for _ in range(self.grad_accum_steps):
            if len(self.windows) == 0:  # the next epoch
                self.position["epoch"], self.position["window"] = self.position["epoch"] + 1, 0
                self.windows = self.data.train_windows(self.position["epoch"], 0)
            self.position["window"] += 1
            yield next(self.windows)

    def forward(self, model, window) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's loss to backpropagate, and (summed NLL, counted targets) to pool; carries the state on."""
        input_ids, targets, reset = (t.to(self.device) for t in (window.input_ids, window.targets, window.reset_mask))
        out = model(input_ids=input_ids, state=self.state, reset_mask=reset, use_cache=True)  # logits (B, T, 256)
        nll, count = token_loss(out.logits, targets)
        self.state = tuple(part.detach() for part in out.state)
        # Divide by every position, counted or not, so that P processes x B/P streams average to 1 x B.
        return nll / targets.numel(), torch.stack([nll.detach(), count.float()])

    def named_state(self, batch_size: int) -> dict[str, torch.Tensor]:
        parts = self.state if self.state is not None else self.body.initial_state(batch_size)
        return dict(zip(self.body.state_names, parts))


def log_interval(run: TrainingRun, metrics, interval: dict, lr: float, chars_per_step: int) -> float:
    """One metrics record for the steps since the last; returns their training BPC."""
    seconds = time.perf_counter() - interval["start"]
    loss = interval["nll"] / max(interval["count"], 1.0)
    position = run.position
    record = {"step": position["step"], "updates": position["updates"], "epoch": position["epoch"],
              "characters_seen": position["characters_seen"], "loss": loss, "bpc": loss / LN2, "lr": lr,
              "chars_per_second": interval["steps"] * chars_per_step / seconds}
    metrics.write(record)
    run.bar.set_postfix_str(f"{record['chars_per_second']:,.0f} char/s  loss {loss:.3f}  bpc {loss / LN2:.3f}  "
                            f"lr {lr:.2e}")
    interval.update(nll=0.0, count=0.0, start=time.perf_counter(), steps=0)
    return loss / LN2


def final_validation(run: TrainingRun, model, data: Corpora, metrics, seq_len: int) -> tuple[float | None, dict | None]:
    """Validation BPC at the end (None without --val-data), and the compressors on exactly its bytes."""
    if not data.make_val_windows:
        return None, None
    validation = evaluate_windows(run.unwrap(model), data.make_val_windows(), accelerator=run.accelerator)
    val_bpc, val_predicted = validation["bits_per_byte"], validation["predicted_bytes"]
    position = run.position
    metrics.write({"step": position["step"], "characters_seen": position["characters_seen"], "val_bpc": val_bpc})
    if not run.main:
        return val_bpc, None
    # once per run, on the main process: the same bytes for every process count
    return val_bpc, held_out_compression(*data.held_out, seq_len, predicted_bytes=val_predicted)


def run(config: PretrainConfig) -> dict:
    """Pretrain as ``config`` says; return the run's summary (also saved beside the exported model)."""
    with accelerate_state_of_its_own():
        return _run(config.resolved())


def _run(config: PretrainConfig) -> dict:
    check_model_config(config)  # a typo in --model-config fails before any data is read
    run = TrainingRun(config, command="pretrain")
    T, B, world = config.seq_len, config.batch_size, run.world
    global_batch = B * world * config.grad_accum_steps
    run.claim_folder(fingerprint(config, num_processes=world, global_batch_size=global_batch))
    data = open_data(run, config)  # validated before a model exists
    total_steps = config.max_steps or math.ceil((config.epochs or 1.0) * data.steps_per_epoch)
    run.write_identity(data=source_identities(data.train.index))

    # --- model, optimizer, schedule, resume --------------------------------------------------------------------------
    model = load_model(config.model, config.model_config)
    peak_lr = scaled_lr(config.lr, global_batch, config.lr_scaling, config.base_batch_size, config.lr_cap)
    schedule = Schedule(peak_lr, total_steps, config.schedule, warmup_steps(config.warmup, total_steps))
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule(0))
    model, optimizer = run.prepare(model, optimizer)  # no scheduler: the rate is set from `updates` each step
    body = run.unwrap(model).model
    position = {"step": 0, "updates": 0, "epoch": 0, "window": 0, "characters_seen": 0, "train_seconds": 0.0}
    streams = TrainingStreams(data, position, body, resume_streams(run, position, total_steps, body, data, config),
                              config.grad_accum_steps, run.accelerator.device)

    def save() -> Path:
        saved = {"num_streams": B * world, "seq_len": T, "corpus_bytes": data.train.total_bytes}
        return run.save(saved, streams.named_state(B))

    # --- the loop ----------------------------------------------------------------------------------------------------
    metrics = run.metrics_log()
    val_bpc, train_bpc, chars_per_step = None, None, global_batch * T
    interval = {"nll": 0.0, "count": 0.0, "start": time.perf_counter(), "steps": 0}
    model.train()
    with run.steps(total_steps, desc="pretrain"):
        while run.running():
            lr = schedule(position["updates"])  # a function of applied updates: a skipped fp16 step does not advance it
            for group in optimizer.param_groups:
                group["lr"] = lr
            forward = functools.partial(streams.forward, model)
            for nll, count in run.optimizer_step(model, optimizer, streams.step(), forward,
                                                 advice="Lower --lr, or check the data."):
                interval["nll"] += nll.item()
                interval["count"] += count.item()
            position["characters_seen"] += chars_per_step
            interval["steps"] += 1
            if run.due(config.log_every, at_end=True):
                train_bpc = log_interval(run, metrics, interval, lr, chars_per_step)
            if data.make_val_windows and run.due(config.eval_every):
                val_bpc = evaluate_windows(run.unwrap(model), data.make_val_windows(),
                                           accelerator=run.accelerator)["bits_per_byte"]
                metrics.write({"step": position["step"], "characters_seen": position["characters_seen"],
                               "val_bpc": val_bpc})
            if run.due(config.save_every):
                save()
            if run.stop_requested():
                break

    # --- the end: checkpoint, final evaluation, export ---------------------------------------------------------------
    run.end_of_loop(save)  # a stopped run is meant to be resumed
    val_bpc, compression = final_validation(run, model, data, metrics, T)
    metrics.close()
    seconds = position["train_seconds"]
    summary = {
        **{key: getattr(config, key) for key in ("model", "model_config", "data", "val_data", "text_field")},
        "corpus_bytes": data.train.total_bytes, "steps": position["step"], "updates": position["updates"],
        "epochs": position["characters_seen"] / max(data.layout.corpus_bytes, 1),
        "characters_seen": position["characters_seen"], "train_bpc": train_bpc, "val_bpc": val_bpc,
        "val_compression": compression, "chars_per_second": position["characters_seen"] / max(seconds, 1e-9),
        "train_seconds": seconds, "seq_len": T, "batch_size": B, "global_batch_size": global_batch, "peak_lr": peak_lr,
        **{key: getattr(config, key) for key in ("lr", "lr_scaling", "lr_cap", "schedule", "recipe")},
        "warmup_steps": schedule.warmup_steps, **run.summary(),
    }
    return run.finish(model, summary, also=lambda: plot_curves(metrics.path, run.output / "curves.png"))


__all__ = ["NonFiniteLossError", "PretrainConfig", "PretrainConfigError", "run"]
