"""Checkpoints that a crash can never half-write, the final export (swapped in the same way: see
:func:`export_model`), and the one writer of a run's JSON records (:func:`write_json`: ``run.json``,
``train_state.json``, ``summary.json``, ``training_summary.json``).

A checkpoint is a directory ``OUTPUT/checkpoints/step-NNNNNNNN/`` holding Accelerate's ``save_state`` (model,
optimizer, loss scaler, RNG states), one ``streams-rankR.safetensors`` per process (its streams' state, one tensor
per named part, batch = dim 1) and ``train_state.json`` (step, updates, data position, counters, and the sha256 of every
other file). Everything is first written to a hidden ``.tmp-step-…`` directory and renamed into place only when
complete, so a checkpoint directory that exists is whole: resume takes the newest ``step-*`` directory and never sees a
partial one. A checkpoint damaged afterwards (a flipped bit, a truncated file) fails its sha256s: ``--resume`` then
falls back to the newest checkpoint that passes, and says so (:func:`find_resumable`). A write that runs out of room (a
full disk, a quota, a file-size limit) is one line that names the checkpoint and the previous one, which is intact.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bytezoo.errors import ByteZooError, room_to_write
from bytezoo.hub.local import sha256_of_file  # the checksum the hub gives every file it ships
from bytezoo.untrusted import jsonio

TRAIN_STATE = "train_state.json"


class ResumeError(ByteZooError, ValueError):
    """A checkpoint that cannot be resumed from as it is (incomplete, or saved by a process layout that cannot share
    it): names the checkpoint."""


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, document: dict) -> None:
    """Writes one of a run's JSON records (``run.json``, ``train_state.json``, ``summary.json``,
    ``training_summary.json``) atomically: every record a run writes passes through here."""
    write_text_atomic(path, jsonio.dumps(document, indent=2))


def checkpoint_dirs(output_dir: str | Path, run_id: str | None = None) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first; with ``run_id``, only that run's."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if (p / TRAIN_STATE).is_file()]
    if run_id is not None:
        found = [p for p in found if _run_id_of(p) == run_id]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def checkpoint_to_resume(output_dir: str | Path, resume: str, run_id: str | None) -> Path | None:
    """What ``--resume`` names: ``"latest"`` is the newest sound checkpoint of run ``run_id`` (``None``: of any run,
    for a folder from before run identities), None if there is none; anything else is that checkpoint's path."""
    return find_resumable(output_dir, resume, run_id)[0]


def find_resumable(output_dir: str | Path, resume: str,
                   run_id: str | None) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The checkpoint ``--resume`` continues from, and the newer ones passed over as damaged (each with what is
    wrong). A checkpoint named by its path must be sound itself."""
    if resume != "latest":
        problem = damage(Path(resume))
        if problem is not None:
            raise ResumeError(f"cannot resume from {resume}: {problem}; resume from another checkpoint (--resume "
                              f"with no path takes the newest sound one), or start anew")
        return Path(resume), []
    damaged = []
    for candidate in reversed(checkpoint_dirs(output_dir, run_id)):
        problem = damage(candidate)
        if problem is None:
            return candidate, damaged
        damaged.append((candidate, problem))
    if damaged:
        raise ResumeError(f"cannot resume the run in {output_dir}: every checkpoint is damaged ("
                          + "; ".join(f"{path.name}: {problem}" for path, problem in damaged)
                          + "): start the run anew with --overwrite, or in another --output")
    return None, []


def damage(checkpoint: Path) -> str | None:
    """What is wrong with ``checkpoint``, in words, or None when every file it lists matches its sha256 (a
    checkpoint from before the sha256s were written is taken as it is)."""
    try:
        files = json.loads((checkpoint / TRAIN_STATE).read_text()).get("files")
    except FileNotFoundError:
        return f"{TRAIN_STATE} is missing: an incomplete checkpoint"
    except (OSError, ValueError, AttributeError) as error:
        return f"{TRAIN_STATE} is unreadable ({type(error).__name__})"
    for name, expected in (files or {}).items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_of_file(path)[0] != expected:
            return f"{name} does not match its sha256 (changed or truncated since it was written)"
    return None


def read_train_state(checkpoint: Path) -> dict:
    """A checkpoint's ``train_state.json`` (its step, counters, thread count, files)."""
    return json.loads((Path(checkpoint) / TRAIN_STATE).read_text())


def _run_id_of(checkpoint: Path) -> str | None:
    try:
        return json.loads((checkpoint / TRAIN_STATE).read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def save_checkpoint(accelerator, output_dir: str | Path, train_state: dict, recurrent_state: dict, keep: int,
                    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Save a checkpoint on every process (a collective: all processes must call it) and return its directory.
    ``recurrent_state`` maps the model's state names to this process's parts (dim 1 = its streams);
    ``extra_tensors`` maps file names to tensors the main process saves beside them (safetensors), inside the same
    all-or-nothing rename."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"step-{train_state['step']:08d}"
    staging = root / f".tmp-{final.name}"
    previous = checkpoint_dirs(output_dir, train_state.get("run_id"))
    intact = (f"{previous[-1].name} is intact" if previous else "no earlier checkpoint was kept") + \
        ": make room, then run again with --resume"
    try:
        with room_to_write(f"checkpoint {final.name} in {root}", staging, intact):
            _save_staged(accelerator, staging, final, train_state, recurrent_state, extra_tensors)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)  # what a failed save wrote, to give the room back
        raise
    if accelerator.is_main_process:
        # Rotation removes only this run's older checkpoints, never another run's.
        for old in checkpoint_dirs(output_dir, train_state.get("run_id"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _save_staged(accelerator, staging: Path, final: Path, train_state: dict, recurrent_state: dict,
                 extra_tensors: dict | None) -> None:
    """Every file into ``staging``, then the sha256s and the train state (the completeness mark), then the rename."""
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # the remains of a save that crashed
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    tensors = {name: (part.float() if part.is_floating_point() else part).detach().cpu().contiguous()
               for name, part in recurrent_state.items()}  # floats as float32; integer parts (positions) exact
    save_file(tensors, str(staging / f"streams-rank{accelerator.process_index}.safetensors"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, tensors in (extra_tensors or {}).items():
            save_file({key: value.detach().cpu().contiguous() for key, value in tensors.items()}, str(staging / name))
        files = {str(path.relative_to(staging)): sha256_of_file(path)[0]
                 for path in sorted(staging.rglob("*")) if path.is_file()}
        write_json(staging / TRAIN_STATE, {**train_state, "files": files})  # the completeness mark
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)


LEGACY_STATE_NAMES = {"h": "hidden", "c": "cell"}  # checkpoints written before the state parts had names


def load_checkpoint(accelerator, checkpoint: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore Accelerate's state from ``checkpoint``; return its train state and this process's recurrent state
    (state name -> part, dim 1 = this process's streams)."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / TRAIN_STATE).is_file():
        raise ResumeError(f"{checkpoint} is not a complete checkpoint (no {TRAIN_STATE}); resume from another, "
                          "or start anew")
    train_state = json.loads((checkpoint / TRAIN_STATE).read_text())
    saved_processes = int(train_state.get("num_processes", 1))
    files = [checkpoint / f"streams-rank{rank}.safetensors" for rank in range(saved_processes)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ResumeError(f"{checkpoint} lacks {', '.join(missing)}: it was saved by {saved_processes} process(es)")
    accelerator.load_state(str(checkpoint))
    # The streams are global: process r of P owns streams [r*S/P, (r+1)*S/P), whatever P the run was saved with, so
    # the saved states are joined in rank order and dealt again. Read on the CPU, then moved: safetensors refuses a
    # device string such as "cpu:0", which is what a process of a multi-process CPU run calls its device.
    parts = [load_file(str(f), device="cpu") for f in files]
    names = sorted(parts[0])
    if not names:  # a run without carried streams (fine-tuning reads whole texts)
        return train_state, {}
    if any(sorted(p) != names for p in parts):
        raise ResumeError(f"{checkpoint}: the streams files hold different state parts: {[sorted(p) for p in parts]}")
    # Every part's dim 1 is the streams; parts whose other dims differ between ranks cannot be joined.
    joined = {LEGACY_STATE_NAMES.get(name, name): torch.cat([p[name] for p in parts], dim=1) for name in names}
    streams = next(iter(joined.values())).shape[1]
    if streams % accelerator.num_processes:
        raise ResumeError(f"{checkpoint} holds {streams} streams, which {accelerator.num_processes} processes "
                          "cannot share")
    per = streams // accelerator.num_processes
    mine = slice(accelerator.process_index * per, (accelerator.process_index + 1) * per)
    return train_state, {name: part[:, mine].contiguous().to(accelerator.device) for name, part in joined.items()}


def export_names(export_dir: str | Path) -> tuple[Path, Path]:
    """The hidden siblings an export of ``export_dir`` passes through: ``(staging, aside)`` — the new export while it
    is written, and the previous one while the new one is renamed into its place."""
    export_dir = Path(export_dir)
    return export_dir.with_name(f".tmp-{export_dir.name}"), export_dir.with_name(f".old-{export_dir.name}")


def recover_export(export_dir: str | Path) -> None:
    """Puts right what an export that crashed left behind. A staging folder is never trusted (it may be half
    written): removed. An aside folder is a whole earlier export (it was moved by one rename): moved back when the
    crash came before the new export took its place, otherwise removed."""
    export_dir = Path(export_dir)
    staging, aside = export_names(export_dir)
    if aside.exists():
        if export_dir.exists():
            shutil.rmtree(aside)
        else:
            os.replace(aside, export_dir)
    shutil.rmtree(staging, ignore_errors=True)


def export_model(model, tokenizer, export_dir: str | Path, summary: dict) -> Path:
    """``save_pretrained`` the model and tokenizer plus ``training_summary.json`` into ``export_dir``, so that a
    reader (or a crash) finds either the previous export or the new one, whole.

    The new export is written into a hidden staging sibling; the previous one is renamed aside, the new one renamed
    into place, and only then is the previous one deleted. A failure before the new one is in place leaves the
    previous one where it was and removes the staging folder; a crash at any point is put right by the next export
    (:func:`recover_export`)."""
    export_dir = Path(export_dir)
    staging, aside = export_names(export_dir)
    recover_export(export_dir)
    from transformers.utils import logging as transformers_logging

    try:
        with room_to_write(f"the export {export_dir}", staging,
                           "the previous export and the checkpoints are intact: make room, then run again with "
                           "--resume"):
            transformers_logging.disable_progress_bar()  # no "Writing model shards" bar under the run's own output
            try:
                model.save_pretrained(staging)
            finally:
                transformers_logging.enable_progress_bar()
            tokenizer.save_pretrained(staging)
            write_json(staging / "training_summary.json", summary)
        if export_dir.exists():
            os.replace(export_dir, aside)
        try:
            os.replace(staging, export_dir)
        except BaseException:
            if aside.exists() and not export_dir.exists():
                os.replace(aside, export_dir)  # the previous export back where it was
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)  # what fails to go now, the next export removes
    return export_dir
