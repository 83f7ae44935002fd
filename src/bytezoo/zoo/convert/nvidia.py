"""Convert NVIDIA sentiment-discovery (Puri et al. 2018) mLSTM language-model checkpoints into bytezoo checkpoints.

What their code stores (github.com/NVIDIA/sentiment-discovery, read for this converter):

* ``model/model.py`` ``RNNModel``: ``encoder = nn.Embedding(ntoken, ninp)``, ``rnn = RNN.mLSTM(ninp, nhid, nlayers)``,
  ``decoder = nn.Linear(nhid, ntoken)``. Its ``state_dict()`` is *nested*:
  ``{'encoder': {'encoder': <embedding sd>, 'rnn': <rnn sd>}, 'decoder': <linear sd>}``; loaders there also unwrap
  ``{'sd': ...}`` and ``{'encoder': ...}`` (``run_classifier.py``, ``transfer.py``). ``FP16_Module`` (``fp16/fp16.py``)
  delegates ``state_dict`` to the wrapped model, so fp16 runs save the same keys in half precision.
* ``RNN_utils/RNN/RNNBackend.py`` ``stackedRNN``: layers in ``rnns.{l}``; ``RNNCell`` holds ``w_ih`` (4H, in),
  ``w_hh`` (4H, H), ``b_ih``/``b_hh`` (4H) in torch's (out, in) layout; ``w_ho`` only with an output projection.
* ``RNN_utils/RNN/cells.py`` (``model/RNN_utils/RNN/models.py`` imports ``mLSTMRNNCell`` from it; the copy read here
  was the identical ``apex_utils/apex/RNN/cells.py`` of the same repository) ``mLSTMRNNCell`` adds ``w_mih`` (H, in)
  and ``w_mhh`` (H, H); ``mLSTMCell`` computes::

      m = F.linear(x, w_mih) * F.linear(h, w_mhh)
      gates = F.linear(x, w_ih, b_ih) + F.linear(m, w_hh, b_hh)
      ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)      # order i, f, u, o (torch's LSTM order)

  bytezoo orders gates i, f, o, u, so the last two (H-row) blocks of ``w_ih``, ``w_hh`` and the biases swap.
* ``reparameterization/weight_norm.py``: ``apply_weight_norm(model.rnn)`` replaces each >1-d parameter ``w`` by
  ``w_g`` and ``w_v`` registered on the same cell (so keys ``rnns.{l}.w_ih_g`` / ``rnns.{l}.w_ih_v``), with
  ``w = v * (g / _norm(v, dim=0))``; ``_norm(p, 0)`` is the norm over every axis but 0, i.e. per output row of the
  (out, in) weight, over the input axis, and ``g`` has shape (out, 1). Checkpoints saved mid-training keep the pairs;
  ``main.py`` calls ``remove_weight_norm`` before its final save, leaving plain weights.

That norm is bytezoo's convention (per output column of the math-layout ``x @ W`` weight, over the input axis), so
``v.T`` and ``g`` are stored unchanged with ``weight_norm=True``. A checkpoint without weight norm is stored with
``weight_norm=False``; one that mixes both is folded to effective weights (``weight_norm=False``).
"""
from __future__ import annotations

import io
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..mlstm import MLSTMConfig, MLSTMForCausalLM
from ._common import (
    ConversionError,
    build_model,
    check_vocab_size,
    prepare_output,
    read_bytes,
    sha256_hex,
    write_checkpoint,
)

# mLSTMCell's gate chunks are (i, f, u, o); bytezoo's are (i, f, o, u): new block k is old block GATE_BLOCK_ORDER[k].
GATE_BLOCK_ORDER = (0, 1, 3, 2)
RECURRENT_WEIGHTS = ("w_ih", "w_hh", "w_mih", "w_mhh")
BIASES = ("b_ih", "b_hh")
# sentiment-discovery name -> bytezoo MLSTMLayer name (weight, gain)
BYTEZOO_NAMES = {"w_ih": ("w_x", "g_x"), "w_hh": ("w_h", "g_h"), "w_mih": ("w_mx", "g_mx"), "w_mhh": ("w_mh", "g_mh")}
_RNN_KEY = re.compile(r"^(?P<prefix>(?:.+\.)?)rnns\.(?P<layer>\d+)\.(?P<param>[^.]+)$")
_TRANSFORMER_MARKERS = ("self_attn", "embed_tokens", "embed_positions", "encoder_attn", "embed_out")
# what conversion.json cites for the weights and for the code that defines their layout
PAPER = ("Puri, Kirby, Yakovenko, Catanzaro. Large Scale Language Modeling: Converging on 40GB of Text in Four Hours. "
         "arXiv:1808.01371")
REFERENCE_CODE = ("https://github.com/NVIDIA/sentiment-discovery (model/model.py, RNN_utils/RNN/cells.py, "
                  "reparameterization/weight_norm.py)")
# what conversion.json says of the source's weight norm, by the set of "was this weight normed" answers
_WEIGHT_NORM_NOTES = {
    frozenset({True}): "g/v pairs (norm over the input axis), stored unchanged",
    frozenset({False}): "none (plain weights)",
    frozenset({True, False}): "mixed; folded into effective weights",
}


@dataclass
class _Source:
    """Where the model's tensors live inside the flattened checkpoint."""

    rnn_prefix: str  # e.g. "encoder.rnn." (RNNModel's nested state dict) or "rnn." (a plain nn.Module state dict)
    embedding_key: str
    decoder_prefix: str
    scopes: tuple[str, ...]  # key prefixes that belong to the language model; anything else in the file is ignored
    ignored_keys: list[str] = field(default_factory=list)


def _load_pickle(ckpt_path: str, trust_pickle: bool) -> tuple[Any, str, str]:
    """``(object, sha256, how it was loaded)``: safely with ``weights_only=True``; the full unpickler only on
    request."""
    data = read_bytes(ckpt_path)
    checksum = sha256_hex(data)
    try:
        return (torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), checksum,
                "torch.load(weights_only=True)")
    except pickle.UnpicklingError as error:
        reason = (str(error).split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].strip()
                  or "unsupported content")
        if not trust_pickle:
            what = (
                "it stores Python objects beyond tensors and plain containers"
                if "Unsupported global" in str(error)
                else "it is not a plain tensor checkpoint (or it is corrupt)"
            )
            raise ConversionError(
                f"{ckpt_path}: refused by the safe loader, torch.load(weights_only=True): {what} ({reason}). Loading "
                "such a file runs the full pickle machinery, which can execute arbitrary code. If you trust where the "
                "file comes from, pass --trust-pickle (trust_pickle=True)."
            ) from error
    except Exception as error:  # truncated zip, not a torch file at all, ...
        raise ConversionError(f"{ckpt_path}: not a readable PyTorch checkpoint "
                              f"({type(error).__name__}: {error})") from error
    warnings.warn(f"{ckpt_path}: loaded with the full unpickler (--trust-pickle); it could run code", stacklevel=3)
    try:
        return (torch.load(io.BytesIO(data), map_location="cpu", weights_only=False), checksum,
                "torch.load(weights_only=False) (--trust-pickle)")
    except Exception as error:
        raise ConversionError(f"{ckpt_path}: cannot be unpickled even with --trust-pickle "
                              f"({type(error).__name__}: {error})") from error


def _flatten(tree: Any, prefix: str = "") -> dict[str, Tensor]:
    """Nested dicts of tensors -> ``{"a.b.c": tensor}``. ``module.`` components (DataParallel/DDP wrappers) are
    dropped; non-tensor leaves (arguments, step counters) are skipped."""
    flat: dict[str, Tensor] = {}
    for key, value in tree.items():
        parts = [part for part in str(key).split(".") if part != "module"]
        name = prefix + ".".join(parts)
        if isinstance(value, Tensor):
            flat[name] = value
        elif isinstance(value, Mapping):
            flat.update(_flatten(value, name + "." if name else ""))
    return flat


def _locate(flat: dict[str, Tensor], where: str) -> _Source:
    prefixes = sorted({match["prefix"] for key in flat if (match := _RNN_KEY.match(key))})
    if not prefixes:
        transformer_keys = [key for key in flat if any(marker in key for marker in _TRANSFORMER_MARKERS)]
        if transformer_keys:
            raise ConversionError(
                f"{where}: this is a transformer checkpoint (e.g. key {transformer_keys[0]!r}); only mLSTM language "
                "models convert to bytezoo"
            )
        shown = ", ".join(sorted(flat)[:8]) or "none"
        raise ConversionError(
            f"{where}: no recurrent layers found (expected keys like 'encoder.rnn.rnns.0.w_mih' from "
            f"sentiment-discovery's RNNModel); tensor keys: {shown}"
        )
    if len(prefixes) > 1:
        raise ConversionError(f"{where}: several recurrent stacks found (under {prefixes}); "
                              "expected one language model")
    rnn_prefix = prefixes[0]
    if not (rnn_prefix == "rnn." or rnn_prefix.endswith(".rnn.")):
        raise ConversionError(f"{where}: recurrent layers under {rnn_prefix!r}; "
                              "expected them in RNNModel's 'rnn' module")
    encoder_root = rnn_prefix[: -len("rnn.")]  # "encoder." in RNNModel's nested layout, "" in a plain one
    model_root = encoder_root[: -len("encoder.")] if encoder_root.endswith("encoder.") else encoder_root
    embedding_key = encoder_root + "encoder.weight"
    decoder_prefix = model_root + "decoder."
    scopes = ((rnn_prefix, encoder_root + "encoder.", decoder_prefix)
              + ((encoder_root,) if encoder_root != model_root else ()))
    source = _Source(rnn_prefix, embedding_key, decoder_prefix, scopes)
    source.ignored_keys = sorted(key for key in flat if not key.startswith(scopes))
    return source


def _require(flat: dict[str, Tensor], key: str, shape: tuple[int, ...], where: str, what: str) -> Tensor:
    if key not in flat:
        raise ConversionError(f"{where}: missing key {key!r} ({what})")
    tensor = flat[key]
    if tuple(tensor.shape) != shape:
        raise ConversionError(f"{where}: {key} ({what}) has shape {list(tensor.shape)}; expected {list(shape)}")
    if not tensor.is_floating_point():
        raise ConversionError(f"{where}: {key} ({what}) holds {tensor.dtype} values; expected floating point")
    return tensor.detach().to(torch.float64)


def _reorder_gates(tensor: Tensor) -> Tensor:
    """Rows in blocks (i, f, u, o) -> (i, f, o, u); works on (4H, in) weights and (4H,) vectors."""
    blocks = tensor.chunk(4, dim=0)
    return torch.cat([blocks[index] for index in GATE_BLOCK_ORDER], dim=0)


def _check_layer_indices(flat: dict[str, Tensor], source: _Source, where: str) -> int:
    layers = sorted({int(match["layer"]) for key in flat if (match := _RNN_KEY.match(key))})
    if layers != list(range(len(layers))):
        raise ConversionError(f"{where}: recurrent layers {layers} under {source.rnn_prefix!r} are not numbered "
                              f"0..{len(layers) - 1}")
    return len(layers)


def _classify_plain_rnn(flat: dict[str, Tensor], prefix: str) -> str:
    """Name the architecture of a stack without the multiplicative weights, for the error message."""
    w_ih = flat.get(prefix + "w_ih", flat.get(prefix + "w_ih_v"))
    w_hh = flat.get(prefix + "w_hh", flat.get(prefix + "w_hh_v"))
    if w_ih is None or w_hh is None or w_hh.dim() != 2:
        return "a non-multiplicative recurrent"
    gates = w_ih.shape[0] // max(w_hh.shape[1], 1)
    return {4: "an LSTM", 3: "a GRU", 1: "a plain RNN"}.get(gates, "a non-multiplicative recurrent")


def _read_layer(
    flat: dict[str, Tensor], source: _Source, layer: int, input_size: int, hidden_size: int, where: str
) -> tuple[dict[str, dict[str, Tensor]], Tensor]:
    """One layer's four weights (each ``{"w": ...}`` or ``{"g": ..., "v": ...}``, torch layout, gates reordered) and its
    summed bias; every key present, expected and of the right shape."""
    prefix = f"{source.rnn_prefix}rnns.{layer}."
    present = {key[len(prefix):] for key in flat if key.startswith(prefix)}
    if not ({"w_mih", "w_mih_v", "w_mhh", "w_mhh_v"} & present):
        kind = _classify_plain_rnn(flat, prefix)
        raise ConversionError(
            f"{where}: {kind} checkpoint, not an mLSTM: layer {layer} ({prefix}*) has no multiplicative weights "
            "w_mih/w_mhh. Only mLSTM language models convert (bytezoo's nn.LSTM baseline has a different layout)."
        )
    if "w_ho" in present or "w_ho_v" in present:
        raise ConversionError(f"{where}: {prefix}w_ho: an output projection (output_size != hidden_size) has no "
                              "bytezoo equivalent")
    rows = {"w_ih": 4 * hidden_size, "w_hh": 4 * hidden_size, "w_mih": hidden_size, "w_mhh": hidden_size}
    cols = {"w_ih": input_size, "w_hh": hidden_size, "w_mih": input_size, "w_mhh": hidden_size}
    weights: dict[str, dict[str, Tensor]] = {}
    used: set[str] = set()
    for name in RECURRENT_WEIGHTS:
        shape = (rows[name], cols[name])
        if name in present:
            weights[name] = {"w": _require(flat, prefix + name, shape, where, f"layer {layer} {name}")}
            used.add(name)
        else:  # weight-normed: w = v * (g / ||v||) per output row
            v = _require(flat, f"{prefix}{name}_v", shape, where, f"layer {layer} {name}, weight-norm direction")
            g_key = f"{prefix}{name}_g"
            if g_key not in flat:
                raise ConversionError(f"{where}: missing key {g_key!r} (layer {layer} {name}, weight-norm gain "
                                      f"paired with {name}_v)")
            if tuple(flat[g_key].shape) not in ((rows[name], 1), (rows[name],)):
                raise ConversionError(f"{where}: {g_key} has shape {list(flat[g_key].shape)}; "
                                      f"expected [{rows[name]}, 1]")
            g = _require(flat, g_key, tuple(flat[g_key].shape), where, f"layer {layer} {name} gain").reshape(rows[name])
            weights[name] = {"g": g, "v": v}
            used.update({f"{name}_v", f"{name}_g"})
        if name in ("w_ih", "w_hh"):
            weights[name] = {part: _reorder_gates(tensor) for part, tensor in weights[name].items()}
    biases = [name for name in BIASES if name in present]
    if len(biases) == 1:
        other = next(name for name in BIASES if name not in present)
        raise ConversionError(f"{where}: missing key {prefix + other!r} "
                              f"(layer {layer}; {prefix + biases[0]} is present)")
    bias = torch.zeros(4 * hidden_size, dtype=torch.float64)  # a stack built with bias=False has neither
    for name in biases:
        bias = bias + _require(flat, prefix + name, (4 * hidden_size,), where, f"layer {layer} {name}")
        used.add(name)
    unexpected = sorted(present - used)
    if unexpected:
        raise ConversionError(f"{where}: unexpected keys in layer {layer}: {[prefix + name for name in unexpected]}")
    return weights, _reorder_gates(bias)


def _weight_normed(g: Tensor, v: Tensor) -> Tensor:
    """sentiment-discovery's ``v * (g / _norm(v, 0))`` on an (out, in) weight: each row scaled to norm ``g``."""
    return v * (g / v.norm(dim=1)).unsqueeze(1)


def _read(ckpt_path: str, trust_pickle: bool) -> tuple[MLSTMConfig, dict[str, Tensor], dict[str, Any]]:
    """:func:`load_nvidia_state`, plus what ``conversion.json`` records about the source."""
    loaded, checksum, loader = _load_pickle(ckpt_path, trust_pickle)
    if not isinstance(loaded, Mapping):
        raise ConversionError(f"{ckpt_path}: holds a {type(loaded).__name__}, not a state dict")
    flat = _flatten(loaded)
    source = _locate(flat, ckpt_path)
    num_layers = _check_layer_indices(flat, source, ckpt_path)

    if source.embedding_key not in flat:
        raise ConversionError(f"{ckpt_path}: missing key {source.embedding_key!r} "
                              "(the byte embedding, RNNModel.encoder)")
    embedding = flat[source.embedding_key]
    if embedding.dim() != 2:
        raise ConversionError(f"{ckpt_path}: {source.embedding_key} has shape {list(embedding.shape)}; "
                              "expected [vocab, embedding]")
    vocab_size, embedding_size = embedding.shape
    check_vocab_size(vocab_size, f"{ckpt_path}: {source.embedding_key}")
    first_w_hh = flat.get(f"{source.rnn_prefix}rnns.0.w_hh", flat.get(f"{source.rnn_prefix}rnns.0.w_hh_v"))
    if first_w_hh is None or first_w_hh.dim() != 2:
        raise ConversionError(f"{ckpt_path}: missing key {source.rnn_prefix + 'rnns.0.w_hh'!r} "
                              "(layer 0 recurrent gate weight)")
    hidden_size = first_w_hh.shape[1]

    decoder_weight_key, decoder_bias_key = source.decoder_prefix + "weight", source.decoder_prefix + "bias"
    if decoder_weight_key not in flat:
        raise ConversionError(
            f"{ckpt_path}: missing key {decoder_weight_key!r} (the language model's output layer, RNNModel.decoder); "
            "a featurizer or classifier checkpoint holds only the encoder and cannot become a language model"
        )
    decoder_weight = _require(flat, decoder_weight_key, (vocab_size, hidden_size), ckpt_path, "output layer weight")
    decoder_bias = _require(flat, decoder_bias_key, (vocab_size,), ckpt_path, "output layer bias")
    unexpected = sorted(
        key
        for key in flat
        if key.startswith(source.scopes)
        and not _RNN_KEY.match(key)
        and key not in (source.embedding_key, decoder_weight_key, decoder_bias_key)
    )
    if unexpected:
        raise ConversionError(f"{ckpt_path}: unexpected keys in the language model: {unexpected}")

    layers = []
    for layer in range(num_layers):
        input_size = embedding_size if layer == 0 else hidden_size
        layers.append(_read_layer(flat, source, layer, input_size, hidden_size, ckpt_path))
    normed = {"g" in weight for weights, _ in layers for weight in weights.values()}
    weight_norm = normed == {True}

    state_dict: dict[str, Tensor] = {"model.embeddings.weight": embedding.detach().to(torch.float32)}
    for layer, (weights, bias) in enumerate(layers):
        prefix = f"model.layers.{layer}."
        for name, parts in weights.items():
            weight_name, gain_name = BYTEZOO_NAMES[name]
            if weight_norm:  # same convention: the direction transposed to (in, out), the gain per output column
                state_dict[prefix + weight_name] = parts["v"].T.to(torch.float32)
                state_dict[prefix + gain_name] = parts["g"].to(torch.float32)
            else:  # plain weights, or a mixture folded to effective weights (computed in float64)
                effective = parts["w"] if "w" in parts else _weight_normed(parts["g"], parts["v"])
                state_dict[prefix + weight_name] = effective.T.to(torch.float32)  # (out, in) -> (in, out)
        state_dict[prefix + "bias"] = bias.to(torch.float32)  # b_ih + b_hh, summed in float64
    state_dict["lm_head.weight"] = decoder_weight.to(torch.float32)  # nn.Linear (V, H) on both sides
    state_dict["lm_head.bias"] = decoder_bias.to(torch.float32)

    config = MLSTMConfig(
        vocab_size=vocab_size,
        embedding_size=embedding_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        weight_norm=weight_norm,
        conversion_source="nvidia",
    )
    record = {
        "source_format": "nvidia-sentiment-discovery",
        "source": ckpt_path,
        "source_sha256": checksum,
        "loaded_with": loader,
        "source_dtypes": sorted({str(flat[key].dtype).replace("torch.", "")
                                 for key in flat if key.startswith(source.scopes)}),
        "source_weight_norm": _WEIGHT_NORM_NOTES[frozenset(normed)],
        "source_layout": {"rnn": source.rnn_prefix, "embedding": source.embedding_key,
                          "decoder": source.decoder_prefix},
        "ignored_keys": source.ignored_keys,
        "biases": "b_ih + b_hh" if f"{source.rnn_prefix}rnns.0.b_ih" in flat else "none in source (zeros)",
        "gate_order": "source chunks (i, f, u, o) reordered to bytezoo's (i, f, o, u)",
        "paper": PAPER,
        "reference_code": REFERENCE_CODE,
        "hidden_size": hidden_size,
        "embedding_size": embedding_size,
        "num_layers": num_layers,
    }
    if source.ignored_keys:
        warnings.warn(f"{ckpt_path}: ignoring {len(source.ignored_keys)} tensors outside the language model: "
                      f"{source.ignored_keys[:5]}", stacklevel=3)
    return config, state_dict, record


def load_nvidia_state(ckpt_path: str, *, trust_pickle: bool = False) -> tuple[MLSTMConfig, dict[str, Tensor]]:
    """Read and check a sentiment-discovery mLSTM language-model checkpoint (a local path or fsspec URL).

    Returns:
        ``(config, state_dict)``: the bytezoo config (sizes and layer count read from the keys and shapes) and the
        :class:`MLSTMForCausalLM` state dict (float32, gates reordered, biases summed).
    """
    config, state_dict, _ = _read(ckpt_path, trust_pickle)
    return config, state_dict


def convert_nvidia(ckpt_path: str, out_dir: str, *, trust_pickle: bool = False,
                   overwrite: bool = False) -> MLSTMForCausalLM:
    """Convert a sentiment-discovery mLSTM checkpoint into a bytezoo checkpoint (safetensors) in ``out_dir``.

    The file is read with ``torch.load(weights_only=True)``; a file that needs the full unpickler (it can run code)
    is converted only with ``trust_pickle=True``. On any error nothing is left in ``out_dir``.

    Raises:
        ConversionError: a refused pickle, missing/unexpected keys, inconsistent shapes, an LSTM or transformer
            checkpoint (naming the file and key).
    """
    prepare_output(out_dir, overwrite)
    config, state_dict, record = _read(ckpt_path, trust_pickle)
    model = build_model(config, state_dict, ckpt_path)
    write_checkpoint(model, out_dir, record, overwrite=overwrite)
    return model


__all__ = ["convert_nvidia", "load_nvidia_state", "GATE_BLOCK_ORDER"]
