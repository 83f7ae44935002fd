"""The output-folder policy of every bytezoo command that writes a folder, and a training run's identity in it.

**What a used folder means.** A command's output folder holds one run. A folder is *used* when it holds a run
identity (``run.json``, what training runs write) or anything a bytezoo command of the same kind writes there (its
:class:`FolderUse`; ``bytezoo transfer`` adds the names its earlier report lists). Into a used folder:

- a new run is refused before anything is written, in one line naming what the folder holds (and, for a training run,
  how its settings differ) and the choices: ``--resume`` (where the command can continue a run), ``--overwrite``, or
  another ``--output``;
- ``--overwrite`` removes what bytezoo wrote there (the names of :class:`FolderUse`, and those an earlier report
  lists) and nothing else: a user's own files stay;
- ``--resume`` continues the run only with the same fingerprint (every setting that decides what the run computes),
  apart from :data:`CHANGEABLE_ON_RESUME` (how long it runs and how it reports); a change is refused naming each
  setting;
- ``--resume`` with ``--overwrite`` is refused.

**A training run's identity.** ``OUTPUT/run.json`` records the run's id, its fingerprint, the identity of its training
data (each source's sha256 and size) and its CPU thread count. Checkpoints carry the run id, and rotation only ever
removes the current run's. ``--resume`` on training data that changed since the run started is refused in one line
naming the source, what changed and the choices (:func:`check_data`).
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bytezoo.errors import ByteZooError
from bytezoo.untrusted import jsonio

IDENTITY_FILE = "run.json"
FORMAT_VERSION = 1
# What a training run (bytezoo pretrain or bytezoo finetune) writes into its folder: all that --overwrite removes.
# .tmp-/.old-model: an export's staging and aside folders (bytezoo.training.checkpoint).
RUN_OUTPUTS = ("checkpoints", "model", ".tmp-model", ".old-model", "metrics.jsonl", "tensorboard", "curves.png",
               "summary.json", "corpus", "corpus-val", ".tmp-corpus", ".tmp-corpus-val", IDENTITY_FILE)
# The packed copies of raw sources: keyed by those sources and repacked when they differ, so they alone do not make
# a folder used.
CACHES = ("corpus", "corpus-val", ".tmp-corpus", ".tmp-corpus-val")
# Settings a resumed run may change: how long it runs and how it reports, never what a step computes. The number of
# processes may change at the same global batch (global_batch_size stays in the fingerprint): the streams are global
# and their states are dealt again.
CHANGEABLE_ON_RESUME = ("max_steps", "epochs", "max_time", "save_every", "eval_every", "keep_checkpoints", "log_every",
                        "progress", "val_data", "num_processes", "batch_size")
# Model config keys that choose how the model runs, not what it is.
RUNTIME_MODEL_KEYS = ("kernel",)
# Fingerprint keys added after runs were already being written, with the value those runs had without naming it, so
# that a run started before the key existed still resumes (a fine-tuning run from before --grad-accum accumulated 1).
ADDED_LATER = {"grad_accum_steps": 1}
SHOWN_NAMES = 6  # a refusal names this many of the files it found, then counts the rest


class OutputFolderError(ByteZooError, ValueError):
    """The output folder holds another run (or an earlier run's output), or a resume that does not match the run it
    would continue: names what it holds and the choices."""




class DataChangedError(OutputFolderError):
    """``--resume`` of a run whose training data changed since it started: names the source, what changed, and the
    choices."""


@dataclass(frozen=True)
class FolderUse:
    """What one kind of command writes into its output folder.

    ``label`` names an earlier run in messages ("bytezoo", "bytezoo transfer"); ``outputs`` is every name it writes
    (files or folders), all that ``--overwrite`` removes; ``caches`` are names that alone do not make a folder used;
    ``can_resume``: whether ``--resume`` may continue the run there."""

    label: str
    outputs: tuple[str, ...]
    caches: tuple[str, ...] = ()
    can_resume: bool = False


TRAINING_RUN = FolderUse("bytezoo", RUN_OUTPUTS, caches=CACHES, can_resume=True)


def _filesystem(output):
    import fsspec

    return fsspec.core.url_to_fs(str(output).rstrip("/"))


def earlier_outputs(output, use: FolderUse, listed: tuple[str, ...] = ()) -> list[str]:
    """What an earlier run left in ``output``: the names of ``use`` and ``listed`` that exist there (not the caches,
    not a run identity, which the policy reads itself)."""
    fs, root = _filesystem(output)
    if not fs.isdir(root):
        return []
    names = [n for n in dict.fromkeys((*use.outputs, *listed)) if n not in use.caches and n != IDENTITY_FILE]
    return [name for name in names if fs.exists(f"{root}/{name}")]


def check_output_folder(output, use: FolderUse, *, resume: bool = False, overwrite: bool = False,
                        now: dict | None = None, listed: tuple[str, ...] = ()) -> dict | None:
    """Decides, before anything is written, whether this run may use ``output``; returns the identity to continue
    (on resume) or None (a new run). ``now`` is the run's fingerprint (training runs). Every process calls it and
    reaches the same answer from the same files."""
    if resume and overwrite:
        raise OutputFolderError("--resume continues the run in the output folder and --overwrite replaces it: "
                                "choose one")
    identity = read_identity(Path(output)) if now is not None else None
    if resume and use.can_resume:
        if identity is None:
            return None  # a folder from before run identities, or a run stopped before its first write
        changed = {k: v for k, v in differences(identity["fingerprint"], now).items() if k not in CHANGEABLE_ON_RESUME}
        if changed:
            raise OutputFolderError(
                f"cannot resume the run in {output}: {_describe(changed)}. Resume with the settings it started with "
                f"(only {', '.join(CHANGEABLE_ON_RESUME)} may change), or start a new run in another --output")
        return identity
    if overwrite:
        return None
    choices = ("pass --resume to continue it, " if use.can_resume else "pass ") + \
        "--overwrite to replace it (removes only what bytezoo wrote there), or choose another --output"
    if identity is not None:
        changed = differences(identity["fingerprint"], now)
        what = f"with other settings ({_describe(changed)})" if changed else "with the same settings"
        raise OutputFolderError(f"{output} holds another run, started {identity.get('created', '?')} {what}: {choices}")
    found = earlier_outputs(output, use, listed)
    if found:
        more = len(found) - SHOWN_NAMES
        shown = ", ".join(found[:SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")
        raise OutputFolderError(f"{output} holds the output of an earlier {use.label} run ({shown}): {choices}")
    return None


def clear_output_folder(output, use: FolderUse, listed: tuple[str, ...] = ()) -> list[str]:
    """--overwrite: removes what bytezoo wrote into ``output`` (the names of ``use`` and ``listed``) and nothing
    else; returns the names removed."""
    fs, root = _filesystem(output)
    removed = []
    for name in dict.fromkeys((*use.outputs, *listed)):
        if _is_local(fs):
            path = Path(root) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
        elif fs.exists(f"{root}/{name}"):
            fs.rm(f"{root}/{name}", recursive=True)
        else:
            continue
        removed.append(name)
    return removed


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


# --- a training run's identity ----------------------------------------------------------------------------------------
def read_identity(output: Path) -> dict | None:
    path = Path(output) / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        identity = json.loads(path.read_text())
        identity["fingerprint"], identity["run_id"]  # noqa: B018  (both must be there)
    except (ValueError, KeyError, TypeError) as error:
        raise OutputFolderError(f"{path}: not a bytezoo run identity ({error}); move it away or pass "
                                "--overwrite") from None
    if identity.get("format_version") != FORMAT_VERSION:
        raise OutputFolderError(f"{path}: run identity format {identity.get('format_version')!r}, this bytezoo reads "
                                f"{FORMAT_VERSION}; resume with the bytezoo that started the run, or pass --overwrite")
    return identity


def differences(saved: dict, now: dict) -> dict[str, tuple]:
    now = jsonio.public(now)  # as run.json holds it: data URLs redacted
    saved = {**{key: value for key, value in ADDED_LATER.items() if key in now}, **saved}
    return {key: (saved.get(key), now.get(key)) for key in sorted(set(saved) | set(now))
            if saved.get(key) != now.get(key)}


def _describe(changed: dict[str, tuple]) -> str:
    return "; ".join(f"{key}: {old!r} then, {new!r} now" for key, (old, new) in changed.items())


def write_identity(output: Path, now: dict, continued: dict | None, *, data: list[dict] | None = None,
                   threads: dict | None = None) -> dict:
    """Writes ``run.json`` (atomically): the continued run's id, or a new one; ``data``: each training source's
    identity; ``threads``: the run's CPU thread count (:mod:`bytezoo.training.cpu_threads`)."""
    from bytezoo import __version__

    from .checkpoint import write_json

    identity = {
        "format_version": FORMAT_VERSION,
        "run_id": continued["run_id"] if continued else uuid.uuid4().hex,
        "created": continued["created"] if continued else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bytezoo_version": __version__,
        "fingerprint": now,
        **({"data": data} if data is not None else {}),
        **({"threads": threads} if threads is not None else {}),
    }
    write_json(Path(output) / IDENTITY_FILE, identity)
    return identity


def check_data(output, recorded: list[dict], now: list[dict]) -> None:
    """Refuses a run's data that changed since it started: ``recorded`` and ``now`` list each source's identity
    (``url``, ``sha256``, and ``bytes`` or ``rows``). One line: the first change in words, how many more, the
    choices."""
    changes = data_changes(recorded, now)
    if changes:
        more = f" (and {len(changes) - 1} more change(s))" if len(changes) > 1 else ""
        raise DataChangedError(f"cannot resume the run in {output}: {changes[0]}{more}. Put the data back as it was, "
                               f"start the run again on the new data with --overwrite, or start a new run in "
                               f"another --output")


def data_changes(recorded: list[dict], now: list[dict]) -> list[str]:
    """What changed between two lists of source identities, one sentence per source."""
    before, after = {s["url"]: s for s in recorded}, {s["url"]: s for s in now}
    changes = []
    for url, then in before.items():
        current = after.get(url)
        if current is None:
            changes.append(f"{url}, one of the run's training sources, is not among them now")
        elif current.get("sha256") != then.get("sha256"):
            changes.append(f"{url} changed since the run started ({_size_change(then, current)})")
    changes += [f"{url} was not among the run's training sources" for url in after if url not in before]
    return changes


def _size_change(then: dict, now: dict) -> str:
    unit = "bytes" if "bytes" in then else "rows"
    old, new = then.get(unit), now.get(unit)
    if old != new:
        return f"{old:,} {unit} then, {new:,} now"
    return (f"the same {old:,} {unit} with other content: sha256 {str(then.get('sha256'))[:12]}... then, "
            f"{str(now.get('sha256'))[:12]}... now")


__all__ = ["CHANGEABLE_ON_RESUME", "DataChangedError", "FolderUse", "OutputFolderError", "RUN_OUTPUTS",
           "TRAINING_RUN", "check_data", "check_output_folder", "clear_output_folder", "data_changes",
           "earlier_outputs", "read_identity", "write_identity"]
