"""A run's identity: what an output folder holds, so that two runs never share one.

``OUTPUT/run.json`` records the run's id and its *fingerprint*: every setting that decides what the run computes
(model, data, batch layout, schedule, seed, precision). A new run refuses a folder that holds another run, naming the
differences, unless ``--overwrite`` (which removes only what bytezoo wrote there) or ``--resume`` (which requires
the same fingerprint, apart from the settings in :data:`CHANGEABLE_ON_RESUME`). Checkpoints carry the run id, and
rotation only ever removes the current run's.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

from bytezoo.errors import ByteZooError
from bytezoo.untrusted import jsonio

from . import checkpoint as ckpt

IDENTITY_FILE = "run.json"
FORMAT_VERSION = 1
# What `bytezoo pretrain` writes into its output folder: all that --overwrite removes (nothing else is touched).
OUTPUT_ARTIFACTS = ("checkpoints", "model", ".tmp-model", ".old-model", "metrics.jsonl", "tensorboard", "curves.png",
                    "summary.json", "corpus", "corpus-val", IDENTITY_FILE)  # .tmp-/.old-model: an export's (checkpoint.py)
# Settings a resumed run may change: how long it runs and how it reports, never what a step computes. The number of
# processes may change at the same global batch (global_batch_size stays in the fingerprint): the streams are global
# and their states are dealt again.
CHANGEABLE_ON_RESUME = ("max_steps", "epochs", "max_time", "save_every", "eval_every", "keep_checkpoints", "log_every",
                        "progress", "val_data", "num_processes", "batch_size")
# Model config keys that choose how the model runs, not what it is.
RUNTIME_MODEL_KEYS = ("kernel",)


class RunFolderError(ByteZooError, ValueError):
    """The output folder holds another run, or a resume that does not match the run it would continue."""


def fingerprint(config, *, num_processes: int, global_batch_size: int) -> dict:
    """The settings that decide what the run computes, as JSON values."""
    model_config = {k: v for k, v in sorted(config.model_config.items()) if k not in RUNTIME_MODEL_KEYS}
    return {
        "model": config.model, "model_config": model_config, "data": list(config.data),
        "text_field": config.text_field, "seq_len": config.seq_len,
        "batch_size": config.batch_size, "num_processes": num_processes, "grad_accum_steps": config.grad_accum_steps,
        "global_batch_size": global_batch_size, "shard_bytes": config.shard_bytes, "seed": config.seed,
        "recipe": config.recipe, "lr": config.lr, "lr_scaling": config.lr_scaling,
        "base_batch_size": config.base_batch_size, "lr_cap": config.lr_cap, "schedule": config.schedule,
        "warmup": config.warmup, "clip_grad_norm": config.clip_grad_norm, "mixed_precision": config.mixed_precision,
    }


def read_identity(output: Path) -> dict | None:
    path = output / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        identity = json.loads(path.read_text())
        identity["fingerprint"], identity["run_id"]  # noqa: B018  (both must be there)
    except (ValueError, KeyError, TypeError) as error:
        raise RunFolderError(f"{path}: not a bytezoo run identity ({error}); move it away or pass --overwrite") from None
    if identity.get("format_version") != FORMAT_VERSION:
        raise RunFolderError(f"{path}: run identity format {identity.get('format_version')!r}, this bytezoo reads "
                             f"{FORMAT_VERSION}; resume with the bytezoo that started the run, or pass --overwrite")
    return identity


# Fingerprint keys added after runs were already being written, with the value those runs had without naming it, so
# that a run started before the key existed still resumes (a fine-tuning run from before --grad-accum accumulated 1).
ADDED_LATER = {"grad_accum_steps": 1}


def differences(saved: dict, now: dict) -> dict[str, tuple]:
    now = jsonio.public(now)  # as run.json holds it: data URLs redacted
    saved = {**{key: value for key, value in ADDED_LATER.items() if key in now}, **saved}
    return {key: (saved.get(key), now.get(key)) for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)}


def _describe(changed: dict[str, tuple]) -> str:
    return "; ".join(f"{key}: {old!r} then, {new!r} now" for key, (old, new) in changed.items())


def earlier_artifacts(output: Path) -> list[str]:
    """What an earlier bytezoo run left in ``output`` (besides a run identity, and the packed copies of raw sources,
    which are keyed by those sources and repacked when they differ)."""
    caches = (IDENTITY_FILE, "corpus", "corpus-val")
    return [name for name in OUTPUT_ARTIFACTS if name not in caches and (output / name).exists()]


def check_output_folder(output: Path, now: dict, *, resume: bool, overwrite: bool) -> dict | None:
    """Decides, before anything is written, whether this run may use ``output``; returns the identity to continue
    (on resume) or None (a new run). Every process calls it and reaches the same answer from the same files."""
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in the output folder and --overwrite replaces it: choose one")
    identity = read_identity(output)
    if resume:
        if identity is None:
            return None  # a folder from before run identities, or a run stopped before its first write
        changed = {k: v for k, v in differences(identity["fingerprint"], now).items() if k not in CHANGEABLE_ON_RESUME}
        if changed:
            raise RunFolderError(
                f"cannot resume the run in {output}: {_describe(changed)}. Resume with the settings it started with "
                f"(only {', '.join(CHANGEABLE_ON_RESUME)} may change), or start a new run in another --output")
        return identity
    if overwrite:
        return None
    if identity is not None:
        changed = differences(identity["fingerprint"], now)
        what = f"with other settings ({_describe(changed)})" if changed else "with the same settings"
        raise RunFolderError(
            f"{output} holds another run, started {identity.get('created', '?')} {what}: pass --resume to continue it, "
            f"--overwrite to replace it (removes only what bytezoo wrote there), or choose another --output")
    found = earlier_artifacts(output)
    if found:
        raise RunFolderError(f"{output} holds the output of an earlier bytezoo run ({', '.join(found)}): pass --resume "
                             f"to continue it, --overwrite to replace it, or choose another --output")
    return None


def clear_output_folder(output: Path) -> None:
    """--overwrite: removes what bytezoo wrote into ``output`` and nothing else."""
    for name in OUTPUT_ARTIFACTS:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def write_identity(output: Path, now: dict, continued: dict | None) -> dict:
    """Writes ``run.json`` (atomically): the continued run's id, or a new one."""
    from bytezoo import __version__

    identity = {
        "format_version": FORMAT_VERSION,
        "run_id": continued["run_id"] if continued else uuid.uuid4().hex,
        "created": continued["created"] if continued else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bytezoo_version": __version__,
        "fingerprint": now,
    }
    ckpt.write_text_atomic(output / IDENTITY_FILE, jsonio.dumps(identity, indent=2))
    return identity


__all__ = ["CHANGEABLE_ON_RESUME", "OUTPUT_ARTIFACTS", "RunFolderError", "check_output_folder", "clear_output_folder",
           "fingerprint", "read_identity", "write_identity"]
