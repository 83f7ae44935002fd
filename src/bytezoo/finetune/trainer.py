"""Fine-tuning a zoo model for sequence classification, under Accelerate: the body of a pretrained causal LM and a new
head on its pooled state (``*ForSequenceClassification``), trained end to end on a labelled dataset.

One process, ``accelerate launch`` and ``torchrun`` run the same code, with the launcher conventions of
``bytezoo pretrain`` (``bytezoo.pretrain.trainer``). The loop reads top to bottom:
Accelerator -> seed -> output folder (one run) -> data (checked before a model exists) -> model (body loaded, head
fresh) -> AdamW with a head and a body rate -> prepare -> resume ->
[rates -> (micro-batch -> forward -> backward) x grad_accum_steps -> clip -> step -> log -> dev evaluation, early
stopping -> checkpoint] -> checkpoint -> test evaluation -> export of the best model.

A step is one optimizer step over one global batch: ``batch_size`` texts on each process in each of
``grad_accum_steps`` micro-batches, whose gradients Accelerate adds up (``accelerator.accumulate``, as ``bytezoo
pretrain --grad-accum`` does), so the effective batch is ``batch_size x processes x grad_accum_steps`` texts. Every
count of the run (``--max-steps``, epochs, the rate schedule, warmup and the frozen body, logging, evaluation,
``--save-every``, the stop checks) is in these steps, so a checkpoint lies on an optimizer-step boundary. The global
batches of an epoch are a pure function of the seed and the epoch (:func:`bytezoo.finetune.data.epoch_batches`), so a
run resumed from a checkpoint (Accelerate's state with the RNGs, the data position, the early-stopping state and the
best weights) ends bitwise where the uninterrupted run ends. ``--max-time``, SIGTERM and Ctrl-C stop it at the next
step with a checkpoint and an export (a second Ctrl-C aborts at once); a stop does not evaluate out of schedule, so
``--resume`` continues exactly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, GradientAccumulationPlugin, set_seed
from tqdm.auto import tqdm

from bytezoo.pretrain import checkpoint as ckpt
from bytezoo.pretrain import run_identity
from bytezoo.pretrain.schedules import SCHEDULES, Schedule, warmup_steps
from bytezoo.threads import ensure_threads
from bytezoo.untrusted import jsonio
from bytezoo.pretrain.trainer import (
    MetricsLog,
    NonFiniteLossError,
    StopRequest,
    accelerate_state_of_its_own,
    check_launch,
    join_launched_group,
)
from bytezoo.transfer.metrics import batch_statistics, metrics, primary_metric, statistics_size

from .data import FinetuneError, Split, Task, collate, epoch_batches, load_task

BEST_WEIGHTS = "best-model.safetensors"  # in a checkpoint: the weights of the best dev evaluation so far


@dataclass
class FinetuneConfig:
    """Options of ``bytezoo finetune`` (``bytezoo finetune --help`` explains each)."""

    train: str
    output: str
    model: str  # a checkpoint (causal LM or classifier; directory or hub URL) or a zoo preset (random weights)
    dev: str | None = None
    test: str | None = None
    text_col: str | None = None
    label_cols: list[str] | None = None
    problem_type: str | None = None  # None: single-label (one label column) or multi-label (several)
    num_labels: int | None = None  # checked against the data when given
    model_config: dict = field(default_factory=dict)  # e.g. classifier_pooling, classifier_dropout
    max_bytes: int | None = None  # keep each text's first N bytes
    train_rows: list[int] | None = None  # train on these rows of --train only (a training_subset draw); None = all
    batch_size: int = 32  # per process and micro-batch
    grad_accum_steps: int = 1  # micro-batches per optimizer step (the name and meaning of bytezoo pretrain's)
    epochs: float | None = None  # used when max_steps is None; default 3
    max_steps: int | None = None
    max_time: float | None = None
    lr: float = 5e-4  # the head's peak rate
    body_lr: float | None = None  # the body's peak rate; default: lr
    weight_decay: float = 0.0
    schedule: str = "linear"
    warmup: float = 0.0  # steps, or a fraction of the run if < 1
    freeze_body: float = 0.0  # steps (or a fraction of the run if < 1) in which only the head trains
    clip_grad_norm: float = 1.0
    mixed_precision: str = "no"
    eval_every: int = 0  # steps between dev evaluations; 0 = once per epoch
    patience: int = 3  # dev evaluations without improvement before stopping; 0 = never stop early
    eval_batch_size: int | None = None  # default: 2 x batch_size
    chunk_size: int = 256  # bytes per forward call of the body (bounds memory; never changes the result)
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: str | None = None  # "latest" or a checkpoint directory
    overwrite: bool = False
    seed: int = 0
    progress: bool = True

    def resolved(self) -> FinetuneConfig:
        config = dataclasses.replace(self, label_cols=list(self.label_cols) if self.label_cols else None,
                                     model_config=dict(self.model_config or {}))
        problems = []
        for name in ("batch_size", "chunk_size", "log_every"):
            if getattr(config, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(config, name)})")
        for name in ("max_steps", "num_labels", "max_bytes", "eval_batch_size"):
            value = getattr(config, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
        for name in ("eval_every", "patience", "save_every", "weight_decay", "warmup", "freeze_body"):
            if getattr(config, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(config, name)})")
        if config.epochs is not None and not config.epochs > 0:
            problems.append(f"--epochs must be > 0 (got {config.epochs})")
        if config.max_time is not None and not config.max_time > 0:
            problems.append(f"--max-time must be > 0 seconds (got {config.max_time})")
        for name in ("lr", "body_lr"):
            value = getattr(config, name)
            if value is not None and not value >= 0:
                problems.append(f"--{name.replace('_', '-')} must be >= 0 (got {value})")
        if config.schedule not in SCHEDULES:
            problems.append(f"--schedule must be one of {SCHEDULES} (got {config.schedule!r})")
        if config.mixed_precision not in ("no", "fp16", "bf16"):
            problems.append(f"--mixed-precision must be no, fp16 or bf16 (got {config.mixed_precision!r})")
        if config.resume and config.overwrite:
            problems.append("--resume continues the run in the output folder and --overwrite replaces it: choose one")
        if config.grad_accum_steps < 1:  # the CLI spells it --grad-accum (or --gradient-accumulation-steps)
            problems.append(f"--grad-accum must be >= 1 micro-batch per optimizer step (got {config.grad_accum_steps})")
        if problems:
            raise FinetuneError("; ".join(problems))
        return config


def fingerprint(config: FinetuneConfig, num_processes: int) -> dict:
    """What decides what the run computes (``OUTPUT/run.json``): a resume must match it, apart from the settings
    :data:`bytezoo.pretrain.run_identity.CHANGEABLE_ON_RESUME` names (how long it runs, how it reports)."""
    return {
        "command": "finetune", "model": config.model, "model_config": dict(sorted(config.model_config.items())),
        "train": config.train, "dev": config.dev, "text_col": config.text_col, "label_cols": config.label_cols,
        "problem_type": config.problem_type, "max_bytes": config.max_bytes, "batch_size": config.batch_size,
        "num_processes": num_processes, "grad_accum_steps": config.grad_accum_steps,
        "global_batch_size": config.batch_size * num_processes * config.grad_accum_steps, "lr": config.lr,
        "body_lr": config.body_lr, "weight_decay": config.weight_decay, "schedule": config.schedule,
        "warmup": config.warmup, "freeze_body": config.freeze_body, "clip_grad_norm": config.clip_grad_norm,
        "mixed_precision": config.mixed_precision, "patience": config.patience, "chunk_size": config.chunk_size,
        "seed": config.seed, "train_rows": _rows_digest(config.train_rows),
    }


def _rows_digest(rows) -> str | None:
    """sha256 of a training subset's row indices (``None``: every row), so a resume refuses another subset."""
    if rows is None:
        return None
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()


def data_digest(split: Split) -> str:
    """sha256 of a split's bytes and labels: a resume refuses training data that changed under the same path."""
    digest = hashlib.sha256()
    for item in split.encoded:
        digest.update(len(item).to_bytes(8, "little"))
        digest.update(item)
    digest.update(np.ascontiguousarray(split.labels).tobytes())
    return digest.hexdigest()


# --- the model --------------------------------------------------------------------------------------------------------
@dataclass
class ModelSource:
    kind: str  # "preset", "lm" (a causal LM's checkpoint: a fresh head) or "classifier" (fine-tuned further)
    path: str | None = None
    config: dict | None = None

    @property
    def label_names(self) -> list[str] | None:
        """A classifier checkpoint's class names, unless they are transformers' placeholders (LABEL_0, …)."""
        if self.kind != "classifier":
            return None
        id2label = {int(k): v for k, v in (self.config.get("id2label") or {}).items()}
        names = [id2label.get(i, f"LABEL_{i}") for i in range(len(id2label))]
        return None if names == [f"LABEL_{i}" for i in range(len(names))] else names


def model_source(name: str) -> ModelSource:
    """What ``--model`` names: a zoo preset, or a checkpoint directory / hub URL (pulled and verified)."""
    from bytezoo.hub import resolve
    from bytezoo.hub.errors import HubError
    from bytezoo.zoo import is_model, list_models

    if is_model(name):
        return ModelSource("preset")
    try:
        path = str(resolve(name))
    except (HubError, OSError, ValueError) as error:
        raise FinetuneError(f"--model {name!r}: cannot read it ({error})") from None
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise FinetuneError(f"--model {name!r} is neither a zoo preset ({', '.join(list_models())}) nor a checkpoint "
                            f"(no {config_path})")
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
        architectures = document.get("architectures") or []
    except (ValueError, AttributeError) as error:
        raise FinetuneError(f"{config_path}: not a valid JSON config ({error})") from None
    kind = "classifier" if any(str(a).endswith("ForSequenceClassification") for a in architectures) else "lm"
    return ModelSource(kind, path, document)


def classifier_class(config_class: type) -> type:
    """The family's ``*ForSequenceClassification`` (registered with transformers' Auto class)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    try:
        return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[config_class]
    except KeyError:
        raise FinetuneError(f"{config_class.__name__} has no sequence-classification model in the zoo") from None


def build_model(config: FinetuneConfig, source: ModelSource, task: Task):
    """The classifier: from a causal LM's checkpoint (every body weight loaded, the head fresh), a classifier's (all
    loaded), or a preset (all random). Returns ``(model, report)``, ``report`` one line on what was loaded."""
    from transformers import AutoConfig
    from transformers.utils import logging as transformers_logging

    from bytezoo.zoo import create_model, get_model_info
    from bytezoo.zoo.configuration_utils import ConfigError

    labels = {"id2label": dict(enumerate(task.label_names)),
              "label2id": {name: i for i, name in enumerate(task.label_names)}, "problem_type": task.problem_type}
    try:
        if source.kind == "preset":
            info = get_model_info(config.model)
            classifier_keys = {"classifier_pooling", "classifier_dropout"}
            with torch.device("meta"):  # the preset's config only: nothing is allocated
                language_model = create_model(config.model, **{k: v for k, v in config.model_config.items()
                                                                if k not in classifier_keys})
            model_config = language_model.config
            for key, value in {**{k: v for k, v in config.model_config.items() if k in classifier_keys}, **labels}.items():
                setattr(model_config, key, value)
            model = classifier_class(type(model_config))(model_config)
            return model, f"{config.model}: random weights ({info.description})"
        config_class = type(AutoConfig.for_model(source.config.get("model_type")))
        cls = classifier_class(config_class)
        overrides = dict(config.model_config)
        if source.kind == "lm":
            overrides.update(labels)
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # the one-line report below replaces transformers' load table
        transformers_logging.disable_progress_bar()
        try:
            model, info = cls.from_pretrained(source.path, output_loading_info=True, **overrides)
        finally:
            transformers_logging.set_verbosity(verbosity)
            transformers_logging.enable_progress_bar()
    except (ConfigError, ValueError, KeyError) as error:  # CheckpointError is a ValueError
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FinetuneError(f"--model {config.model}: {message}") from None
    if source.kind == "classifier":
        if model.config.num_labels != task.num_labels:
            raise FinetuneError(f"--model {config.model}: a classifier with {model.config.num_labels} labels, but the "
                                f"task has {task.num_labels} ({task.label_names}); start from its language model instead")
        model.config.update(labels)
        return model, f"{config.model}: a classifier, every weight loaded (fine-tuned further)"
    body = len(model.model.state_dict())
    fresh = sorted(info.get("missing_keys") or [])
    return model, (f"{config.model}: {body} body weights loaded; head {', '.join(fresh)} initialised fresh for "
                   f"{task.num_labels} label(s); not used: {', '.join(sorted(info.get('unexpected_keys') or [])) or 'nothing'}")


# --- evaluation -------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(accelerator, model, task: Task, split: Split, batch_size: int, chunk_size: int) -> dict:
    """Metrics over a whole split: each process reads every ``num_processes``-th text (longest first, in batches),
    the sufficient statistics are summed over processes, so every process gets the same figures."""
    was_training = model.training
    model.eval()
    stats = torch.zeros(statistics_size(task), dtype=torch.float64)
    rows = np.arange(accelerator.process_index, len(split), accelerator.num_processes)
    rows = rows[np.argsort(-split.lengths[rows], kind="stable")]
    with accelerator.autocast():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            ids, mask, labels = (t.to(accelerator.device) for t in collate(split, batch))
            out = model(input_ids=ids, attention_mask=mask, labels=labels, chunk_size=chunk_size)
            stats += batch_statistics(task, out.logits, labels.cpu(), out.loss.item() * len(batch))
    model.train(was_training)
    total = accelerator.reduce(stats.to(accelerator.device), reduction="sum") if accelerator.num_processes > 1 else stats
    return metrics(task, total.cpu().numpy())


# --- the run ----------------------------------------------------------------------------------------------------------
def run(config: FinetuneConfig) -> dict:
    """Fine-tune as ``config`` says; return the run's summary (also saved beside the exported model)."""
    with accelerate_state_of_its_own():
        return _run(config.resolved())


def _run(config: FinetuneConfig) -> dict:
    output = Path(config.output)
    join_launched_group()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if config.freeze_body else []
    # The plugin, not gradient_accumulation_steps=: Accelerate lets ACCELERATE_GRADIENT_ACCUMULATION_STEPS override the
    # latter, and the loop below reads exactly grad_accum_steps micro-batches per step, so the two must agree.
    accumulation = GradientAccumulationPlugin(num_steps=config.grad_accum_steps)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, step_scheduler_with_optimizer=False,
                              gradient_accumulation_plugin=accumulation,
                              kwargs_handlers=handlers)  # a frozen body takes no part in the first backward passes
    if config.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        warnings.warn("fp16 on CPU: Accelerate trains in fp32 (no autocast, no loss scaling); use bf16 on CPU", stacklevel=2)
    check_launch(accelerator)
    precision = "no" if config.mixed_precision == "fp16" and accelerator.device.type == "cpu" else config.mixed_precision
    set_seed(config.seed)
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    B, accumulate = config.batch_size, config.grad_accum_steps

    # --- the output folder: one run only (checked by every process before anything is written) --------------------
    now = fingerprint(config, world)
    continued = run_identity.check_output_folder(output, now, resume=bool(config.resume), overwrite=config.overwrite)
    accelerator.wait_for_everyone()
    if main and config.overwrite:
        run_identity.clear_output_folder(output)

    # --- data and model, checked before anything is trained or written ---------------------------------------------
    with accelerator.main_process_first():  # a hub URL is pulled into the shared cache once
        source = model_source(config.model)
    task, splits = load_task(config.train, config.dev, config.test, text_col=config.text_col,
                             label_cols=config.label_cols, problem_type=config.problem_type,
                             num_labels=config.num_labels, label_names=source.label_names, max_bytes=config.max_bytes)
    train, dev, test = splits["train"], splits.get("dev"), splits.get("test")
    if config.train_rows is not None:  # a subset of the labels (bytezoo.finetune.compare: the same draws as transfer)
        rows = np.asarray(config.train_rows, dtype=np.int64)
        if rows.size == 0 or rows.min() < 0 or rows.max() >= len(train):
            raise FinetuneError(f"train_rows: {rows.size} row indices, which must lie in 0..{len(train) - 1}")
        train = Split(train.name, train.source, [train.encoded[i] for i in rows], train.labels[rows])
    model, loaded = build_model(config, source, task)
    if main:
        print(f"model {loaded}", flush=True)
        print(f"task {task.problem_type}: {task.num_labels} label(s) {task.label_names}; train {len(train):,} texts"
              + (f", dev {len(dev):,}" if dev else "") + (f", test {len(test):,}" if test else ""), flush=True)
    global_batch = B * world * accumulate  # texts per optimizer step
    steps_per_epoch = -(-len(train) // global_batch)
    total_steps = config.max_steps or math.ceil((config.epochs or 3.0) * steps_per_epoch)
    eval_every = config.eval_every or steps_per_epoch
    freeze_steps = warmup_steps(config.freeze_body, total_steps)
    schedule = Schedule(1.0, total_steps, config.schedule, warmup_steps(config.warmup, total_steps))
    train_digest = data_digest(train)

    if main:
        output.mkdir(parents=True, exist_ok=True)
        run_identity.write_identity(output, now, continued)
    accelerator.wait_for_everyone()
    run_id = run_identity.read_identity(output)["run_id"]

    # --- optimizer: one rate for the head, one for the body ---------------------------------------------------------
    body = model.model
    body_names = {id(p) for p in body.parameters()}
    head = [p for p in model.parameters() if id(p) not in body_names]
    body_lr = config.lr if config.body_lr is None else config.body_lr
    peaks = [config.lr, body_lr]
    optimizer = torch.optim.AdamW([{"params": head, "lr": config.lr}, {"params": list(body.parameters()), "lr": body_lr}],
                                  lr=config.lr, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    body = unwrapped.model

    # --- resume -----------------------------------------------------------------------------------------------------
    position = {"step": 0, "updates": 0, "epoch": 0, "batch": 0, "train_seconds": 0.0, "texts_seen": 0}
    best = {"metric": None, "step": None, "evaluations_since": 0, "dev": None}
    best_weights = None  # CPU copy of the best dev evaluation's weights
    resumed_from = None
    if config.resume:
        resumed_from = ckpt.checkpoint_to_resume(output, config.resume, run_id if continued else None)
        if resumed_from is not None:
            saved, _ = ckpt.load_checkpoint(accelerator, resumed_from)
            if (saved.get("train_digest") != train_digest or saved.get("global_batch_size") != global_batch
                    or saved.get("grad_accum_steps", 1) != accumulate):  # checkpoints from before --grad-accum: 1
                raise FinetuneError(f"cannot resume from {resumed_from}: the training data (sha256 {train_digest[:12]}), "
                                    f"the global batch ({global_batch}) or --grad-accum ({accumulate}) differ from "
                                    f"the checkpoint's")
            position = {key: saved[key] for key in position}
            best = saved["best"]
            if (resumed_from / BEST_WEIGHTS).is_file():
                from safetensors.torch import load_file

                best_weights = load_file(str(resumed_from / BEST_WEIGHTS), device="cpu")
        elif main:
            print(f"--resume: no checkpoint in {output / 'checkpoints'}; starting from scratch", flush=True)

    metric_name, higher_is_better = primary_metric(task)
    eval_batch = config.eval_batch_size or 2 * B
    metrics_log = MetricsLog(output, main, position["step"] if resumed_from else None)

    def save() -> Path:
        state = {**position, "run_id": run_id, "train_seconds": time.perf_counter() - run_start, "best": best,
                 "num_processes": world, "global_batch_size": global_batch, "grad_accum_steps": accumulate,
                 "train_digest": train_digest}
        extra = {BEST_WEIGHTS: best_weights} if best_weights is not None else None
        return ckpt.save_checkpoint(accelerator, output, state, {}, config.keep_checkpoints, extra_tensors=extra)

    def evaluate_dev() -> bool:
        """Evaluates on dev, keeps the best weights; True when early stopping says stop."""
        nonlocal best_weights
        figures = evaluate(accelerator, unwrapped, task, dev, eval_batch, config.chunk_size)
        metrics_log.write({"step": position["step"], "epoch": position["step"] / steps_per_epoch,
                           **{f"dev_{k}": v for k, v in figures.items()}})
        value = figures[metric_name]
        improved = best["metric"] is None or (value > best["metric"] if higher_is_better else value < best["metric"])
        if improved:
            best.update(metric=value, step=position["step"], evaluations_since=0, dev=figures)
            best_weights = {k: v.detach().to("cpu", copy=True) for k, v in unwrapped.state_dict().items()}
        else:
            best["evaluations_since"] += 1
        bar.write(f"step {position['step']}: dev {metric_name} {value:.4f}"
                  + (" (best)" if improved else f" (best {best['metric']:.4f} at step {best['step']})"))
        return bool(config.patience) and best["evaluations_since"] >= config.patience

    # --- the loop ---------------------------------------------------------------------------------------------------
    batches = epoch_batches(train.lengths, global_batch, config.seed, position["epoch"])
    bar = tqdm(total=total_steps, initial=position["step"], disable=not (main and config.progress), unit="step",
               dynamic_ncols=True, mininterval=0.5, desc="finetune")
    if not (main and config.progress):
        bar.write = lambda text: print(text, flush=True) if main else None
    interval = {"loss": 0.0, "steps": 0, "texts": 0, "bytes": 0, "start": time.perf_counter()}
    run_start = time.perf_counter() - position["train_seconds"]
    stopped_by = None
    frozen = None
    model.train()
    with StopRequest(config.max_time) as stop:
        while position["step"] < total_steps:
            ensure_threads(accelerator.device)  # threads that hold up beside other processes, re-measured as it runs
            if position["batch"] == len(batches):  # the next epoch: a new order
                position["epoch"], position["batch"] = position["epoch"] + 1, 0
                batches = epoch_batches(train.lengths, global_batch, config.seed, position["epoch"])
            step_rows = batches[position["batch"]]  # the step's global batch
            position["batch"] += 1
            if frozen != (position["step"] < freeze_steps):  # the frozen-body warmup: only the head trains
                frozen = position["step"] < freeze_steps
                body.requires_grad_(not frozen)
            factor = schedule.multiplier(position["updates"])
            for group, peak in zip(optimizer.param_groups, peaks):
                group["lr"] = peak * factor
            step_loss = 0.0
            for micro in range(accumulate):
                # Micro-batch k is the global batch's k-th slice of B x processes texts, dealt to the processes as a
                # step without accumulation deals its batch. Every slice holds B texts, so the mean of the slices'
                # mean losses (accelerator.backward divides by grad_accum_steps) is the mean over the global batch.
                first = (micro * world + rank) * B
                rows = step_rows[first : first + B]
                ids, mask, labels = (t.to(accelerator.device) for t in collate(train, rows))
                # accumulate(): no gradient all-reduce and no optimizer step until the last micro-batch of the step
                with accelerator.accumulate(model):
                    out = model(input_ids=ids, attention_mask=mask, labels=labels, chunk_size=config.chunk_size)
                    accelerator.backward(out.loss)
                    loss = accelerator.reduce(out.loss.detach().float(), reduction="mean") if world > 1 else out.loss.detach()
                    if config.mixed_precision != "fp16" and not torch.isfinite(loss):
                        raise NonFiniteLossError(f"the loss is {loss.item()} at step {position['step'] + 1}; stopping "
                                                 "before the update. Lower --lr / --body-lr, or check the data.")
                    # Only the summed gradient is clipped (and, with fp16, unscaled once): not a partial sum.
                    if accelerator.sync_gradients and config.clip_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
                    optimizer.step()  # Accelerate skips both until the step's last micro-batch
                    optimizer.zero_grad(set_to_none=True)
                step_loss += loss.item()
                interval["bytes"] += int(mask.sum()) * world
            if not accelerator.optimizer_step_was_skipped:
                position["updates"] += 1
            position["step"] += 1
            position["texts_seen"] += global_batch
            interval["loss"] += step_loss / accumulate
            interval["steps"] += 1
            interval["texts"] += global_batch
            bar.update(1)

            if position["step"] % config.log_every == 0 or position["step"] == total_steps:
                seconds = time.perf_counter() - interval["start"]
                record = {"step": position["step"], "epoch": position["step"] / steps_per_epoch,
                          "loss": interval["loss"] / interval["steps"], "lr": config.lr * factor,
                          "body_lr": 0.0 if frozen else body_lr * factor, "texts_per_second": interval["texts"] / seconds,
                          "bytes_per_second": interval["bytes"] / seconds}
                metrics_log.write(record)
                bar.set_postfix_str(f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['texts_per_second']:,.0f} texts/s")
                interval = {"loss": 0.0, "steps": 0, "texts": 0, "bytes": 0, "start": time.perf_counter()}
            if dev is not None and (position["step"] % eval_every == 0 or position["step"] == total_steps):
                if evaluate_dev():
                    stopped_by = "early_stopping"
                    break
            if config.save_every and position["step"] % config.save_every == 0 and position["step"] < total_steps:
                save()
            stopped_by = stop.reason(accelerator, position["step"], config.log_every)
            if stopped_by is not None:
                break

    bar.close()
    train_seconds = time.perf_counter() - run_start
    interrupted = stopped_by in ("sigterm", "interrupt", "max_time")
    last_checkpoint = save() if (config.save_every or config.resume or interrupted) else None
    if interrupted and main:
        why = {"sigterm": "SIGTERM", "interrupt": "Ctrl-C", "max_time": "--max-time spent"}[stopped_by]
        print(f"stopped at step {position['step']} of {total_steps} ({why}); checkpoint {last_checkpoint}; "
              f"continue with --resume", flush=True)

    # --- the end: the best model (on dev), its test figures, the export ---------------------------------------------
    if best_weights is not None:
        unwrapped.load_state_dict(best_weights)
    test_figures = None
    if test is not None and not interrupted:
        test_figures = evaluate(accelerator, unwrapped, task, test, eval_batch, config.chunk_size)
        metrics_log.write({"step": position["step"], **{f"test_{k}": v for k, v in test_figures.items()}})
    metrics_log.close()
    summary = {
        "model": config.model, "model_loaded": loaded, "model_config": config.model_config,
        "train": config.train, "dev": config.dev, "test": config.test, "problem_type": task.problem_type,
        "labels": task.label_names, "num_labels": task.num_labels, "train_texts": len(train),
        "train_subset": config.train_rows is not None,
        "steps": position["step"], "updates": position["updates"], "epochs": position["step"] / steps_per_epoch,
        "steps_per_epoch": steps_per_epoch, "texts_seen": position["texts_seen"],
        "train_seconds": train_seconds, "seconds_per_epoch": train_seconds / max(position["step"] / steps_per_epoch, 1e-9),
        "metric": metric_name, "best_step": best["step"], "best_dev": best["dev"], "test_metrics": test_figures,
        "exported": "best on dev" if best_weights is not None else "last",
        "batch_size": B, "grad_accum_steps": accumulate, "global_batch_size": global_batch, "num_processes": world,
        "lr": config.lr,
        "body_lr": body_lr, "weight_decay": config.weight_decay, "schedule": config.schedule,
        "warmup_steps": schedule.warmup_steps, "freeze_body_steps": freeze_steps, "patience": config.patience,
        "mixed_precision": precision, "mixed_precision_requested": config.mixed_precision,
        "classifier_pooling": unwrapped.config.classifier_pooling, "seed": config.seed, "run_id": run_id,
        "resumed_from": str(resumed_from) if resumed_from else None, "max_steps": total_steps,
        "stopped_by": stopped_by or "max_steps", "max_time": config.max_time,
    }
    if main:
        from bytezoo import ByteTokenizer, __version__

        summary["bytezoo_version"] = __version__
        ckpt.export_model(unwrapped, ByteTokenizer(), output / "model", summary)
        ckpt.write_text_atomic(output / "summary.json", jsonio.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


__all__ = ["FinetuneConfig", "FinetuneError", "build_model", "evaluate", "fingerprint", "model_source", "run"]
