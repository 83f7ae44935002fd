"""Convert the parameters released with Radford et al. 2017 (github.com/openai/generating-reviews-discovering-sentiment,
``model/0.npy`` … ``model/14.npy``) into a bytezoo mLSTM checkpoint.

Their model (``encoder.py`` there), per step, with weight norm over the input axis (``tf.nn.l2_normalize(w, dim=0)``)::

    m = (x @ wmx) * (h @ wmh);  z = x @ wx + m @ wh + b;  i, f, o, u = split(z, 4)
    c = sigmoid(f) * c + sigmoid(i) * tanh(u);  h = sigmoid(o) * tanh(c);  logits = h @ w_out + b_out

bytezoo's mLSTM uses the same math layout (``x @ W``), the same gate order and the same weight-norm convention (each
column divided by its L2 norm over the input axis, times a gain), so every array maps onto one parameter unchanged,
except the output weight, which ``nn.Linear`` stores transposed.
"""
from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import fsspec
import numpy as np
import torch
from torch import Tensor

from ..mlstm import MLSTMConfig, MLSTMForCausalLM
from ._common import ConversionError, build_model, check_vocab_size, prepare_output, sha256_hex, write_checkpoint

NUM_FILES = 15
WH_BLOCKS = (2, 3, 4, 5)  # wh [H, 4H] is released as four [H, H] blocks, one per gate, concatenated along columns


@dataclass(frozen=True)
class _Array:
    """What one released file holds: its name in their code and its shape in terms of V (vocab), E (embedding) and
    H (hidden) size."""

    name: str
    shape: tuple[str, ...]


# GUIDE §4 / their encoder.py: index -> meaning and shape.
RELEASED_ARRAYS: dict[int, _Array] = {
    0: _Array("embedding", ("V", "E")),
    1: _Array("wx", ("E", "4H")),
    2: _Array("wh[:, 0H:1H] (input gate block)", ("H", "H")),
    3: _Array("wh[:, 1H:2H] (forget gate block)", ("H", "H")),
    4: _Array("wh[:, 2H:3H] (output gate block)", ("H", "H")),
    5: _Array("wh[:, 3H:4H] (update block)", ("H", "H")),
    6: _Array("wmx", ("E", "H")),
    7: _Array("wmh", ("H", "H")),
    8: _Array("b", ("4H",)),
    9: _Array("gx", ("4H",)),
    10: _Array("gh", ("4H",)),
    11: _Array("gmx", ("H",)),
    12: _Array("gmh", ("H",)),
    13: _Array("output w", ("H", "V")),
    14: _Array("output b", ("V",)),
}


def _list_npy_files(src_dir: str) -> tuple[fsspec.AbstractFileSystem, str, dict[str, str]]:
    """``{file name: full path}`` of the ``.npy`` files directly inside ``src_dir``."""
    fs, root = fsspec.core.url_to_fs(src_dir)
    if not fs.isdir(root):
        raise ConversionError(f"{src_dir}: not a directory (expected the folder holding 0.npy … 14.npy)")
    entries = fs.ls(root, detail=False)
    files = {posixpath.basename(entry.rstrip("/")): entry for entry in entries}
    return fs, root, {name: path for name, path in files.items() if name.endswith(".npy")}


def _load_npy(fs: fsspec.AbstractFileSystem, path: str, name: str, src_dir: str) -> tuple[np.ndarray, str]:
    """One array (never unpickling: ``allow_pickle=False``) and the sha256 of its file."""
    with fs.open(path, "rb") as handle:
        data = handle.read()
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:  # truncated, not a .npy file at all, or an object array (which needs pickle)
        if "allow_pickle" in str(error):
            raise ConversionError(f"{src_dir}/{name}: not a plain numeric .npy array: it holds pickled Python "
                                  "objects, which are never loaded") from error
        raise ConversionError(f"{src_dir}/{name}: cannot be read as a .npy array "
                              f"({type(error).__name__}: {error})") from error
    if not np.issubdtype(array.dtype, np.floating):
        raise ConversionError(f"{src_dir}/{name}: holds {array.dtype} values; expected floating-point parameters")
    return array, sha256_hex(data)


def _sizes(arrays: dict[int, np.ndarray], src_dir: str) -> dict[str, int]:
    """V and E from the embedding, H from ``wx``'s columns; every other shape is then checked against these."""
    embedding, wx = arrays[0], arrays[1]
    if embedding.ndim != 2:
        raise ConversionError(f"{src_dir}/0.npy: the embedding must be 2-d [V, E]; got shape {embedding.shape}")
    if wx.ndim != 2 or wx.shape[1] % 4:
        raise ConversionError(f"{src_dir}/1.npy: wx must be [E, 4H] (columns a multiple of 4); got shape {wx.shape}")
    sizes = {"V": embedding.shape[0], "E": embedding.shape[1], "H": wx.shape[1] // 4}
    sizes["4H"] = 4 * sizes["H"]
    check_vocab_size(sizes["V"], f"{src_dir}/0.npy")
    for index, spec in RELEASED_ARRAYS.items():
        expected = tuple(sizes[dim] for dim in spec.shape)
        if arrays[index].shape != expected:
            symbolic = "[" + ", ".join(spec.shape) + "]"
            raise ConversionError(
                f"{src_dir}/{index}.npy ({spec.name}): expected shape {symbolic} = {list(expected)} "
                f"(V={sizes['V']}, E={sizes['E']} from 0.npy, H={sizes['H']} from 1.npy); "
                f"got {list(arrays[index].shape)}"
            )
    return sizes


def load_openai_state(src_dir: str) -> tuple[MLSTMConfig, dict[str, Tensor]]:
    """Read and check the 15 released arrays in ``src_dir`` (a local path or fsspec URL).

    Returns:
        ``(config, state_dict)``: the bytezoo config (sizes read from the shapes) and the :class:`MLSTMForCausalLM`
        state dict (float32).
    """
    config, state_dict, _ = _read_release(src_dir)
    return config, state_dict


def _read_release(src_dir: str) -> tuple[MLSTMConfig, dict[str, Tensor], dict[str, str]]:
    """:func:`load_openai_state`, plus the sha256 of each source file for ``conversion.json``."""
    fs, _, npy_files = _list_npy_files(src_dir)
    wanted = {f"{index}.npy" for index in range(NUM_FILES)}
    missing = sorted(wanted - set(npy_files), key=lambda name: int(name.split(".")[0]))
    unexpected = sorted(set(npy_files) - wanted)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected)}")
        raise ConversionError(
            f"{src_dir}: expected exactly the {NUM_FILES} files 0.npy … 14.npy of the OpenAI release; found "
            f"{len(npy_files)} .npy files ({'; '.join(problems)})"
        )
    arrays, checksums = {}, {}
    for index in range(NUM_FILES):
        name = f"{index}.npy"
        arrays[index], checksums[name] = _load_npy(fs, npy_files[name], name, src_dir)
    sizes = _sizes(arrays, src_dir)

    def tensor(array: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    wh = np.concatenate([arrays[index] for index in WH_BLOCKS], axis=1)  # 4 x [H, H] -> [H, 4H], gates i, f, o, u
    state_dict = {
        "model.embeddings.weight": tensor(arrays[0]),  # (V, E)
        "model.layers.0.w_x": tensor(arrays[1]),  # (E, 4H)
        "model.layers.0.w_h": tensor(wh),  # (H, 4H)
        "model.layers.0.w_mx": tensor(arrays[6]),  # (E, H)
        "model.layers.0.w_mh": tensor(arrays[7]),  # (H, H)
        "model.layers.0.bias": tensor(arrays[8]),  # (4H,)
        "model.layers.0.g_x": tensor(arrays[9]),  # (4H,)
        "model.layers.0.g_h": tensor(arrays[10]),  # (4H,)
        "model.layers.0.g_mx": tensor(arrays[11]),  # (H,)
        "model.layers.0.g_mh": tensor(arrays[12]),  # (H,)
        "lm_head.weight": tensor(arrays[13].T),  # (H, V) -> nn.Linear's (V, H)
        "lm_head.bias": tensor(arrays[14]),  # (V,)
    }
    config = MLSTMConfig(
        vocab_size=sizes["V"],
        embedding_size=sizes["E"],
        hidden_size=sizes["H"],
        num_layers=1,
        weight_norm=True,  # same convention as theirs: the released gains and directions are stored unchanged
        conversion_source="openai",
    )
    return config, state_dict, checksums


def convert_openai(src_dir: str, out_dir: str, *, overwrite: bool = False) -> MLSTMForCausalLM:
    """Convert OpenAI's released ``.npy`` parameters in ``src_dir`` into a bytezoo checkpoint in ``out_dir``.

    ``out_dir`` receives ``config.json``, ``model.safetensors``, the byte tokenizer and ``conversion.json`` (source,
    per-file sha256), all at once: on any error nothing is left there. Returns the converted model.

    Raises:
        ConversionError: wrong file count, unreadable or pickled arrays, shapes that disagree (naming the file).
    """
    prepare_output(out_dir, overwrite)  # fail before reading hundreds of MB if the output is not writable
    config, state_dict, checksums = _read_release(src_dir)
    model = build_model(config, state_dict, src_dir)
    conversion = {
        "source_format": "openai-npy",
        "source": src_dir,
        "source_files_sha256": checksums,
        "paper": "Radford, Jozefowicz, Sutskever. Learning to Generate Reviews and Discovering Sentiment. "
                 "arXiv:1704.01444",
        "reference_code": "https://github.com/openai/generating-reviews-discovering-sentiment (encoder.py)",
        "mapping": "0->embeddings; 1->w_x; concat(2,3,4,5, axis=1)->w_h; 6->w_mx; 7->w_mh; 8->bias; "
                   "9..12->g_x,g_h,g_mx,g_mh; 13.T->lm_head.weight; 14->lm_head.bias (gate order i, f, o, u and "
                   "weight norm unchanged)",
        "hidden_size": config.hidden_size,
        "embedding_size": config.embedding_size,
        "num_layers": config.num_layers,
    }
    write_checkpoint(model, out_dir, conversion, overwrite=overwrite)
    return model


__all__ = ["convert_openai", "load_openai_state", "RELEASED_ARRAYS"]
