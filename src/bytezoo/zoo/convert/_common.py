"""What both converters share: the error type, validation of a converted state dict, and the all-or-nothing write of
the output checkpoint (weights, config, tokenizer, ``conversion.json``)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from typing import Any

import fsspec
import torch
from torch import Tensor

from ...errors import ByteZooError
from ..mlstm import MLSTMConfig, MLSTMForCausalLM
from ..tokenization_bytes import NUM_BYTES, ByteTokenizer

CONVERSION_FILE = "conversion.json"


class ConversionError(ByteZooError, ValueError):
    """A source checkpoint that cannot be converted faithfully. The message names the file (and key) and the problem."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(url: str) -> bytes:
    """The whole content of a local path or fsspec URL; a clear error when it cannot be read."""
    from bytezoo.untrusted import network

    with network.remote_errors(url, "cannot read", ConversionError):
        try:
            with network.open_url(url, "rb") as handle:
                return handle.read()
        except FileNotFoundError as error:
            raise ConversionError(f"{url}: no such file") from error
        except IsADirectoryError as error:
            raise ConversionError(f"{url}: is a directory, expected a file") from error


def check_vocab_size(vocab_size: int, where: str) -> None:
    """The converted model reads bytes through :class:`ByteTokenizer`, whose ids run over 0..255."""
    if vocab_size < NUM_BYTES:
        raise ConversionError(
            f"{where}: the embedding has {vocab_size} rows, fewer than the {NUM_BYTES} byte values a byte-level model "
            "reads; this is not a byte-level language model"
        )


def check_finite(state_dict: dict[str, Tensor], where: str) -> None:
    for key, tensor in state_dict.items():
        if not torch.isfinite(tensor).all():
            raise ConversionError(f"{where}: {key} holds NaN or infinite values; the checkpoint is corrupt")


def build_model(config: MLSTMConfig, state_dict: dict[str, Tensor], where: str) -> MLSTMForCausalLM:
    """An :class:`MLSTMForCausalLM` holding exactly ``state_dict`` (float32).

    Every parameter of the model must come from the state dict: a missing, unexpected or mis-shaped tensor is a
    converter bug or a bad source, and raises instead of leaving randomly initialised weights behind.
    """
    model = MLSTMForCausalLM(config)
    expected = {name: tuple(param.shape) for name, param in model.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ConversionError(f"{where}: converted weights do not match the bytezoo model: missing {missing}, "
                              f"unexpected {unexpected}")
    for name, shape in expected.items():
        if tuple(state_dict[name].shape) != shape:
            raise ConversionError(f"{where}: {name} has shape {tuple(state_dict[name].shape)}; the bytezoo model "
                                  f"expects {shape}")
    check_finite(state_dict, where)
    model.load_state_dict({name: tensor.to(torch.float32).contiguous() for name, tensor in state_dict.items()},
                          strict=True)
    return model.eval()


def _local_directory(url: str) -> str:
    """OUT_DIR as a local path. The output is renamed into place at the end, which only a local filesystem does
    atomically; push a converted checkpoint elsewhere with ``bytezoo hub``."""
    fs, path = fsspec.core.url_to_fs(url)
    if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        raise ConversionError(f"{url}: the output directory must be on the local filesystem (upload it afterwards "
                              "with `bytezoo hub push`)")
    return os.path.abspath(path)


def prepare_output(out_dir: str, overwrite: bool) -> str:
    """Check, before any conversion work, that OUT_DIR can be written; returns its local absolute path."""
    path = _local_directory(out_dir)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ConversionError(f"{out_dir}: exists and is not a directory")
        if os.listdir(path) and not overwrite:
            raise ConversionError(f"{out_dir}: exists and is not empty; choose another directory or pass "
                                  "overwrite=True (--overwrite)")
    return path


def write_checkpoint(model: MLSTMForCausalLM, out_dir: str, conversion: dict[str, Any], *,
                     overwrite: bool = False) -> None:
    """Write ``model`` (config.json + model.safetensors), the byte tokenizer and ``conversion.json`` to ``out_dir``.

    Everything is written into a temporary directory beside ``out_dir`` and renamed into place at the end, so a failure
    at any point leaves nothing half-written under ``out_dir``.
    """
    path = prepare_output(out_dir, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.converting-", dir=parent)
    try:
        os.chmod(staging, 0o777 & ~_current_umask())  # mkdtemp makes it private (0700); the result is an ordinary dir
        model.save_pretrained(staging)  # transformers v5 always writes safetensors
        ByteTokenizer().save_pretrained(staging)
        record = {**conversion, "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with open(os.path.join(staging, CONVERSION_FILE), "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2, sort_keys=True)
            handle.write("\n")
        _move_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(staging: str, path: str) -> None:
    if not os.path.exists(path):
        os.rename(staging, path)
        return
    if not os.listdir(path):
        os.rmdir(path)
        os.rename(staging, path)
        return
    # Overwriting: move the old directory aside first, so that at every moment `path` is either the old or the new
    # checkpoint, never a mixture.
    retired = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.replaced-", dir=os.path.dirname(path))
    os.rmdir(retired)
    os.rename(path, retired)
    try:
        os.rename(staging, path)
    except BaseException:
        os.rename(retired, path)
        raise
    shutil.rmtree(retired, ignore_errors=True)
