"""The final export (``bytezoo.training.checkpoint.export_model``, used by pretraining and fine-tuning) replaces a
model folder so that the previous export survives any failure before the new one is in place, no hidden staging or
aside folder is left behind, and what a crash left behind is put right by the next export."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import bytezoo
from bytezoo.training import checkpoint as ckpt
from bytezoo.zoo import ByteTokenizer


def disk_full(directory, *args, **kwargs):
    """A save that fails midway: half a file written, then an error."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / "model.safetensors").write_bytes(b"half a file")
    raise OSError("disk full (simulated)")


def tiny_model(shift: float):
    model = bytezoo.create_model("mlstm-256", hidden_size=8, embedding_size=8)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(shift)  # weights that tell the exports apart
    return model


def assert_only_export(target: Path, shift: float, which: str) -> None:
    """``target`` loads as the export ``which`` (every weight ``shift``), and its folder holds nothing else."""
    loaded = bytezoo.from_pretrained(str(target))
    assert all(torch.all(p == shift) for p in loaded.parameters())
    assert json.loads((target / "training_summary.json").read_text())["which"] == which
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no .tmp-model, no .old-model


@pytest.fixture
def target(tmp_path) -> Path:
    """An output folder holding an earlier export ("old", every weight 1.0)."""
    target = tmp_path / "run" / "model"
    ckpt.export_model(tiny_model(1.0), ByteTokenizer(), target, {"which": "old"})
    assert_only_export(target, 1.0, "old")
    return target


def test_an_export_replaces_the_previous_one(target):
    ckpt.export_model(tiny_model(2.0), ByteTokenizer(), target, {"which": "new"})
    assert_only_export(target, 2.0, "new")


FAILURES = ["model save_pretrained", "tokenizer save_pretrained", "training summary", "moving the old export aside",
            "renaming the new export into place"]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_before_the_new_export_is_in_place_keeps_the_old_one(target, monkeypatch, failure):
    model, tokenizer = tiny_model(2.0), ByteTokenizer()
    staging, _ = ckpt.export_names(target)

    real_replace = os.replace

    def replace_failing(source, destination):
        if (failure == "moving the old export aside" and Path(source) == target) or \
                (failure == "renaming the new export into place" and Path(source) == staging):
            raise OSError("rename failed (simulated)")
        return real_replace(source, destination)

    if failure == "model save_pretrained":
        monkeypatch.setattr(model, "save_pretrained", disk_full)
    elif failure == "tokenizer save_pretrained":
        monkeypatch.setattr(tokenizer, "save_pretrained", disk_full)
    elif failure == "training summary":
        monkeypatch.setattr(ckpt, "write_text_atomic", lambda path, text: disk_full(Path(path).parent))
    else:
        monkeypatch.setattr(os, "replace", replace_failing)
    with pytest.raises(OSError, match="simulated"):
        ckpt.export_model(model, tokenizer, target, {"which": "new"})
    monkeypatch.undo()
    assert_only_export(target, 1.0, "old")


def test_a_crash_between_the_renames_is_recovered_by_the_next_export(target, monkeypatch):
    staging, aside = ckpt.export_names(target)
    # What a crash after moving the old export aside leaves: no model folder, the old one aside, a staging folder.
    os.replace(target, aside)
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"half a file")

    model = tiny_model(2.0)
    monkeypatch.setattr(model, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="simulated"):  # even an export that fails first puts the old one back
        ckpt.export_model(model, ByteTokenizer(), target, {"which": "new"})
    assert_only_export(target, 1.0, "old")

    os.replace(target, aside)
    ckpt.recover_export(target)  # also callable on its own
    assert_only_export(target, 1.0, "old")


def test_an_old_export_left_aside_after_the_swap_is_removed_by_the_next_export(target):
    _, aside = ckpt.export_names(target)
    shutil.copytree(target, aside)  # what a crash after the swap, before the old export's removal, leaves
    ckpt.export_model(tiny_model(3.0), ByteTokenizer(), target, {"which": "new"})
    assert_only_export(target, 3.0, "new")
