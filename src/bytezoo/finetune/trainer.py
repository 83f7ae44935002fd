"""Fine-tuning a zoo model for sequence classification, under Accelerate: the body of a pretrained causal LM and a new
head on its pooled state (``*ForSequenceClassification``), trained end to end on a labelled dataset.

One process, ``accelerate launch`` and ``torchrun`` run the same code, on the runtime ``bytezoo pretrain`` uses
(:mod:`bytezoo.training`). The loop reads top to bottom:
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
import functools
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bytezoo.training.launch import accelerate_state_of_its_own
from bytezoo.training.runtime import TrainingRun
from bytezoo.training.schedules import SCHEDULES, Schedule, warmup_steps
from bytezoo.transfer.metrics import batch_statistics, metrics, primary_metric, statistics_size

from .data import FinetuneError, Split, Task, collate, epoch_batches, load_task
from .outputs import FINETUNE_RUN

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
    adapt_threads: bool = False  # follow the load with the CPU thread count (gives up bitwise reproducibility)

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
    :data:`bytezoo.training.run_folder.CHANGEABLE_ON_RESUME` names (how long it runs, how it reports)."""
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
            head_overrides = {k: v for k, v in config.model_config.items() if k in classifier_keys}
            for key, value in {**head_overrides, **labels}.items():
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
                                f"task has {task.num_labels} ({task.label_names}); start from its language model "
                                "instead")
        model.config.update(labels)
        return model, f"{config.model}: a classifier, every weight loaded (fine-tuned further)"
    body = len(model.model.state_dict())
    fresh = sorted(info.get("missing_keys") or [])
    unused = ", ".join(sorted(info.get("unexpected_keys") or [])) or "nothing"
    return model, (f"{config.model}: {body} body weights loaded; head {', '.join(fresh)} initialised fresh for "
                   f"{task.num_labels} label(s); not used: {unused}")


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
    total = (accelerator.reduce(stats.to(accelerator.device), reduction="sum") if accelerator.num_processes > 1
             else stats)
    return metrics(task, total.cpu().numpy())


# --- the run ----------------------------------------------------------------------------------------------------------
def run(config: FinetuneConfig) -> dict:
    """Fine-tune as ``config`` says; return the run's summary (also saved beside the exported model)."""
    with accelerate_state_of_its_own():
        return _run(config.resolved())


def load_data_and_model(run: TrainingRun, config: FinetuneConfig):
    """The task, its splits (``train`` cut to ``train_rows``) and the model, checked before anything is trained or
    written: ``(task, train, dev, test, model)``."""
    with run.accelerator.main_process_first():  # a hub URL is pulled into the shared cache once
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
    if run.main:
        print(f"model {loaded}", flush=True)
        print(f"task {task.problem_type}: {task.num_labels} label(s) {task.label_names}; train {len(train):,} texts"
              + (f", dev {len(dev):,}" if dev else "") + (f", test {len(test):,}" if test else ""), flush=True)
    return task, train, dev, test, model, loaded


def head_and_body_optimizer(model, config: FinetuneConfig) -> tuple[torch.optim.Optimizer, list[float]]:
    """AdamW with one rate for the head and one for the body; returns it and the two peak rates."""
    body = model.model
    body_names = {id(p) for p in body.parameters()}
    head = [p for p in model.parameters() if id(p) not in body_names]
    body_lr = config.lr if config.body_lr is None else config.body_lr
    optimizer = torch.optim.AdamW([{"params": head, "lr": config.lr},
                                   {"params": list(body.parameters()), "lr": body_lr}],
                                  lr=config.lr, weight_decay=config.weight_decay)
    return optimizer, [config.lr, body_lr]


class BestOnDev:
    """The best dev evaluation so far (its figures and step, a CPU copy of its weights) and early stopping's count of
    evaluations without improvement: what a checkpoint saves beside the position, and what the export exports."""

    def __init__(self, task: Task, patience: int, state: dict | None = None, weights: dict | None = None):
        self.metric, self.higher_is_better = primary_metric(task)
        self.patience, self.weights = patience, weights
        self.state = state or {"metric": None, "step": None, "evaluations_since": 0, "dev": None}

    def record(self, figures: dict, step: int, model, write) -> bool:
        """Keeps ``model``'s weights if ``figures`` are the best yet, writes a line; True when early stopping says
        stop."""
        value, best = figures[self.metric], self.state
        improved = best["metric"] is None or (value > best["metric"] if self.higher_is_better
                                              else value < best["metric"])
        if improved:
            best.update(metric=value, step=step, evaluations_since=0, dev=figures)
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            best["evaluations_since"] += 1
        write(f"step {step}: dev {self.metric} {value:.4f}"
              + (" (best)" if improved else f" (best {best['metric']:.4f} at step {best['step']})"))
        return bool(self.patience) and best["evaluations_since"] >= self.patience


def resume_best(run: TrainingRun, position: dict, task: Task, plan: StepPlan, train_digest: str) -> BestOnDev:
    """With --resume: the checkpoint's position (into ``position``), early-stopping state and best weights, checked
    against this run's data and batch."""
    patience = run.config.patience
    saved, _ = run.resume(position, plan.total_steps)
    if saved is None:
        return BestOnDev(task, patience)
    accumulate = run.config.grad_accum_steps
    if saved.get("train_digest") != train_digest:  # a run from before data identities were recorded in run.json
        raise FinetuneError(f"cannot resume from {run.resumed_from}: the training data ({run.config.train}) changed "
                            f"since it was saved (sha256 {str(saved.get('train_digest'))[:12]}... then, "
                            f"{train_digest[:12]}... now). Put the data back as it was, start the run again with "
                            f"--overwrite, or start a new run in another --output")
    if saved.get("global_batch_size") != plan.global_batch or saved.get("grad_accum_steps", 1) != accumulate:
        raise FinetuneError(f"cannot resume from {run.resumed_from}: it was saved with a global batch of "
                            f"{saved.get('global_batch_size')} texts in {saved.get('grad_accum_steps', 1)} "
                            f"micro-batch(es), and this run has {plan.global_batch} in {accumulate}")
    run.restore_position(saved)
    if not (run.resumed_from / BEST_WEIGHTS).is_file():
        return BestOnDev(task, patience, saved["best"])
    from safetensors.torch import load_file

    return BestOnDev(task, patience, saved["best"], load_file(str(run.resumed_from / BEST_WEIGHTS), device="cpu"))


@dataclass(frozen=True)
class StepPlan:
    """The run counted in optimizer steps, each over one global batch of ``batch_size x processes x
    grad_accum_steps`` texts: every count of the run (``--max-steps``, epochs, the rate schedule, warmup and the
    frozen body, logging, evaluation, ``--save-every``) is in these steps."""

    global_batch: int
    steps_per_epoch: int
    total_steps: int
    freeze_steps: int
    schedule: Schedule  # peak 1: the multiplier of the head's and the body's peak rates

    @classmethod
    def of(cls, config: FinetuneConfig, train_texts: int, world: int) -> StepPlan:
        global_batch = config.batch_size * world * config.grad_accum_steps
        steps_per_epoch = -(-train_texts // global_batch)
        total = config.max_steps or math.ceil((config.epochs or 3.0) * steps_per_epoch)
        return cls(global_batch, steps_per_epoch, total, warmup_steps(config.freeze_body, total),
                   Schedule(1.0, total, config.schedule, warmup_steps(config.warmup, total)))


class GlobalBatches:
    """The global batches of one epoch after another, each a pure function of the seed and the epoch
    (:func:`~bytezoo.finetune.data.epoch_batches`), so a resumed run reads what the uninterrupted run reads; each
    step's micro-batches for this process, and their forward pass."""

    def __init__(self, train: Split, plan: StepPlan, position: dict, run: TrainingRun):
        self.train, self.global_batch, self.seed, self.position = train, plan.global_batch, run.config.seed, position
        self.batch_size, self.rank, self.world = run.config.batch_size, run.rank, run.world
        self.accumulate, self.chunk_size = run.config.grad_accum_steps, run.config.chunk_size
        self.device = run.accelerator.device
        self.batches = epoch_batches(train.lengths, self.global_batch, self.seed, position["epoch"])
        self.bytes_read = 0  # text bytes read by all processes

    def next_step(self) -> list[np.ndarray]:
        """This process's rows of each micro-batch of the next step, advancing the position."""
        if self.position["batch"] == len(self.batches):  # the next epoch: a new order
            self.position["epoch"], self.position["batch"] = self.position["epoch"] + 1, 0
            self.batches = epoch_batches(self.train.lengths, self.global_batch, self.seed, self.position["epoch"])
        step_rows = self.batches[self.position["batch"]]  # the step's global batch
        self.position["batch"] += 1
        # Micro-batch k is the global batch's k-th slice of B x processes texts, dealt to the processes as a step
        # without accumulation deals its batch. Every slice holds B texts, so the mean of the slices' mean losses
        # (accelerator.backward divides by grad_accum_steps) is the mean over the global batch.
        B = self.batch_size
        return [step_rows[(k * self.world + self.rank) * B :][:B] for k in range(self.accumulate)]

    def forward(self, model, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch's mean loss, to backpropagate and (as a 1-element tensor) to pool."""
        ids, mask, labels = (t.to(self.device) for t in collate(self.train, rows))
        out = model(input_ids=ids, attention_mask=mask, labels=labels, chunk_size=self.chunk_size)
        self.bytes_read += int(mask.sum()) * self.world
        return out.loss, out.loss.detach().float().reshape(1)


def _run(config: FinetuneConfig) -> dict:
    from accelerate.utils import DistributedDataParallelKwargs

    # A frozen body takes no part in the first backward passes.
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if config.freeze_body else []
    run = TrainingRun(config, command="finetune", use=FINETUNE_RUN, kwargs_handlers=handlers)
    run.claim_folder(fingerprint(config, run.world))
    task, train, dev, test, model, loaded = load_data_and_model(run, config)
    plan = StepPlan.of(config, len(train), run.world)
    train_digest = data_digest(train)
    run.write_identity(data=[{"url": config.train, "rows": len(train), "sha256": train_digest}])

    optimizer, peaks = head_and_body_optimizer(model, config)
    model, optimizer = run.prepare(model, optimizer)
    unwrapped = run.unwrap(model)
    position = {"step": 0, "updates": 0, "epoch": 0, "batch": 0, "train_seconds": 0.0, "texts_seen": 0}
    best = resume_best(run, position, task, plan, train_digest)
    eval_batch = config.eval_batch_size or 2 * config.batch_size
    metrics_log = run.metrics_log()

    def save() -> Path:
        state = {"best": best.state, "global_batch_size": plan.global_batch,
                 "grad_accum_steps": config.grad_accum_steps, "train_digest": train_digest}
        return run.save(state, extra_tensors={BEST_WEIGHTS: best.weights} if best.weights is not None else None)

    # --- the loop ----------------------------------------------------------------------------------------------------
    batches = GlobalBatches(train, plan, position, run)
    interval = {"loss": 0.0, "steps": 0, "texts": 0, "bytes": 0, "start": time.perf_counter()}
    frozen = None
    model.train()
    with run.steps(plan.total_steps, desc="finetune"):
        while run.running():
            micro_batches = batches.next_step()
            if frozen != (position["step"] < plan.freeze_steps):  # the frozen-body warmup: only the head trains
                frozen = position["step"] < plan.freeze_steps
                unwrapped.model.requires_grad_(not frozen)
            factor = plan.schedule.multiplier(position["updates"])
            for group, peak in zip(optimizer.param_groups, peaks):
                group["lr"] = peak * factor
            losses = run.optimizer_step(model, optimizer, micro_batches, functools.partial(batches.forward, model),
                                        advice="Lower --lr / --body-lr, or check the data.")
            position["texts_seen"] += plan.global_batch
            interval.update(loss=interval["loss"] + sum((loss / run.world).item() for loss in losses) / len(losses),
                            steps=interval["steps"] + 1, texts=interval["texts"] + plan.global_batch)
            if run.due(config.log_every, at_end=True):
                log_interval(run, metrics_log, interval, batches, plan, [peak * factor for peak in peaks], frozen)
            if dev is not None and run.due(config.eval_every or plan.steps_per_epoch, at_end=True):
                figures = evaluate(run.accelerator, unwrapped, task, dev, eval_batch, config.chunk_size)
                metrics_log.write({"step": position["step"], "epoch": position["step"] / plan.steps_per_epoch,
                                   **{f"dev_{k}": v for k, v in figures.items()}})
                if best.record(figures, position["step"], unwrapped, run.bar.write):
                    run.stopped_by = "early_stopping"
                    break
            if run.due(config.save_every):
                save()
            if run.stop_requested():
                break

    # --- the end: checkpoint, the best model (on dev), its test figures, the export ----------------------------------
    run.end_of_loop(save)
    if best.weights is not None:
        unwrapped.load_state_dict(best.weights)
    test_figures = None
    if test is not None and not run.interrupted:
        test_figures = evaluate(run.accelerator, unwrapped, task, test, eval_batch, config.chunk_size)
        metrics_log.write({"step": position["step"], **{f"test_{k}": v for k, v in test_figures.items()}})
    metrics_log.close()
    seconds, epochs = position["train_seconds"], position["step"] / plan.steps_per_epoch
    summary = {
        **{key: getattr(config, key) for key in ("model", "model_config", "train", "dev", "test")},
        "model_loaded": loaded, "problem_type": task.problem_type, "labels": task.label_names,
        "num_labels": task.num_labels, "train_texts": len(train), "train_subset": config.train_rows is not None,
        "steps": position["step"], "updates": position["updates"], "epochs": epochs,
        "steps_per_epoch": plan.steps_per_epoch, "texts_seen": position["texts_seen"], "train_seconds": seconds,
        "seconds_per_epoch": seconds / max(epochs, 1e-9), "metric": best.metric, "best_step": best.state["step"],
        "best_dev": best.state["dev"], "test_metrics": test_figures,
        "exported": "best on dev" if best.weights is not None else "last", "global_batch_size": plan.global_batch,
        **{key: getattr(config, key) for key in ("batch_size", "lr", "weight_decay", "schedule", "patience")},
        "body_lr": peaks[1], "warmup_steps": plan.schedule.warmup_steps, "freeze_body_steps": plan.freeze_steps,
        "classifier_pooling": unwrapped.config.classifier_pooling, **run.summary(),
    }
    return run.finish(model, summary)


def log_interval(run: TrainingRun, metrics_log, interval: dict, batches: GlobalBatches, plan: StepPlan,
                 rates: list[float], frozen: bool) -> None:
    """One metrics record for the steps since the last."""
    seconds = time.perf_counter() - interval["start"]
    step = run.position["step"]
    record = {"step": step, "epoch": step / plan.steps_per_epoch, "loss": interval["loss"] / interval["steps"],
              "lr": rates[0], "body_lr": 0.0 if frozen else rates[1], "texts_per_second": interval["texts"] / seconds,
              "bytes_per_second": (batches.bytes_read - interval["bytes"]) / seconds}
    metrics_log.write(record)
    run.bar.set_postfix_str(f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                            f"{record['texts_per_second']:,.0f} texts/s")
    interval.update(loss=0.0, steps=0, texts=0, bytes=batches.bytes_read, start=time.perf_counter())


__all__ = ["FinetuneConfig", "FinetuneError", "build_model", "evaluate", "fingerprint", "model_source", "run"]
