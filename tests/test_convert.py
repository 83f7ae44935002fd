"""Converters from the original checkpoints (bytezoo.zoo.convert).

The original files are not available here, so each test writes random weights in the original layout, converts them,
loads the result through transformers' Auto classes, and compares logits and states on random bytes with an
independent float64 NumPy implementation of the *original* model's math, written below from the original code:
OpenAI's ``encoder.py`` (TensorFlow) and sentiment-discovery's ``mLSTMCell`` / ``WeightNorm`` (PyTorch).
"""
from __future__ import annotations

import argparse
import json
import os

import fsspec
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import bytezoo  # noqa: F401  (registers the Auto classes)
from bytezoo.cli import main as cli_main
from bytezoo.zoo.convert import ConversionError, convert_nvidia, convert_openai, load_nvidia_state, load_openai_state

REL = 1e-5  # fp32 model vs float64 reference, relative to the reference's scale
VOCAB = 256


# --------------------------------------------------------------------------------------------------------------------
# shared helpers


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def assert_close(actual, expected: np.ndarray, what: str) -> None:
    actual = actual.detach().double().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(np.abs(expected).max(), 1e-3)
    np.testing.assert_allclose(actual, expected, rtol=REL, atol=REL * scale, err_msg=what)


def random_bytes(seed: int, batch: int = 3, steps: int = 19) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(batch, steps))


def run_converted(out_dir, ids: np.ndarray):
    """Load the converted checkpoint the way a user would, and run it on ``ids``."""
    model = AutoModelForCausalLM.from_pretrained(str(out_dir)).eval()
    with torch.no_grad():
        return model, model(torch.from_numpy(ids), output_cell_states=True, output_hidden_states=True)


def assert_checkpoint_files(out_dir, source_format: str) -> dict:
    names = set(os.listdir(out_dir))
    assert {"config.json", "model.safetensors", "conversion.json"} <= names
    assert not {name for name in names if name.endswith((".bin", ".pt", ".pth", ".npy"))}, names
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    assert tokenizer("hé")["input_ids"] == list("hé".encode())
    record = json.loads((out_dir / "conversion.json").read_text())
    assert record["source_format"] == source_format
    assert json.loads((out_dir / "config.json").read_text())["conversion_source"] == source_format.split("-")[0]
    return record


def assert_nothing_written(out_dir) -> None:
    """A failed conversion leaves neither OUT_DIR nor a staging directory beside it."""
    assert not out_dir.exists()
    assert not [name for name in os.listdir(out_dir.parent) if name.startswith(f".{out_dir.name}.")]


# --------------------------------------------------------------------------------------------------------------------
# OpenAI: 15 .npy files, and their model's math (encoder.py of generating-reviews-discovering-sentiment)


def openai_release(hidden: int = 16, embedding: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Random parameters in the released layout: index -> array (GUIDE §4)."""
    rng = np.random.default_rng(seed)
    H, E = hidden, embedding
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    gains = lambda n: rng.uniform(0.5, 2.0, n).astype(np.float32)  # noqa: E731
    return [
        normal(VOCAB, E),  # 0 embedding
        normal(E, 4 * H),  # 1 wx
        normal(H, H), normal(H, H), normal(H, H), normal(H, H),  # 2-5 wh blocks (i, f, o, u)
        normal(E, H),  # 6 wmx
        normal(H, H),  # 7 wmh
        0.5 * normal(4 * H),  # 8 b
        gains(4 * H), gains(4 * H), gains(H), gains(H),  # 9-12 gx, gh, gmx, gmh
        normal(H, VOCAB) / np.sqrt(H),  # 13 output w
        normal(VOCAB),  # 14 output b
    ]


def write_release(arrays: list[np.ndarray], directory) -> None:
    os.makedirs(directory, exist_ok=True)
    for index, array in enumerate(arrays):
        np.save(os.path.join(directory, f"{index}.npy"), array)


def openai_reference(arrays: list[np.ndarray], ids: np.ndarray):
    """Their mlstm() and fc() in float64: ``(logits, every h, every c)``."""
    p = [a.astype(np.float64) for a in arrays]
    embd, wx, wmx, wmh, b = p[0], p[1], p[6], p[7], p[8]
    wh = np.concatenate(p[2:6], axis=1)
    gx, gh, gmx, gmh, out_w, out_b = p[9], p[10], p[11], p[12], p[13], p[14]

    def l2_normalize(w):  # tf.nn.l2_normalize(w, dim=0)
        return w / np.sqrt(np.maximum((w * w).sum(axis=0, keepdims=True), 1e-12))

    wx, wh, wmx, wmh = l2_normalize(wx) * gx, l2_normalize(wh) * gh, l2_normalize(wmx) * gmx, l2_normalize(wmh) * gmh
    batch, steps = ids.shape
    h = np.zeros((batch, wmh.shape[0]))
    c = np.zeros_like(h)
    hs, cs = [], []
    for t in range(steps):
        x = embd[ids[:, t]]
        m = (x @ wmx) * (h @ wmh)
        z = x @ wx + m @ wh + b
        i, f, o, u = np.split(z, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(u)
        h = sigmoid(o) * np.tanh(c)
        hs.append(h)
        cs.append(c)
    hs, cs = np.stack(hs, axis=1), np.stack(cs, axis=1)
    return hs @ out_w + out_b, hs, cs


def assert_matches_openai(out_dir, arrays, seed: int = 1) -> None:
    ids = random_bytes(seed)
    _, out = run_converted(out_dir, ids)
    logits, hs, cs = openai_reference(arrays, ids)
    assert_close(out.logits, logits, "logits")
    assert_close(out.hidden_states[0], hs, "hidden states")
    assert_close(out.cell_states[0], cs, "cell states")
    assert_close(out.state[0][0], hs[:, -1], "final h")
    assert_close(out.state[1][0], cs[:, -1], "final c")


@pytest.mark.parametrize("hidden, embedding", [(16, 8), (12, 5)])
def test_openai_conversion_reproduces_their_model(tmp_path, hidden, embedding):
    arrays = openai_release(hidden, embedding)
    write_release(arrays, tmp_path / "release")
    out_dir = tmp_path / "converted"
    model = convert_openai(str(tmp_path / "release"), str(out_dir))
    assert (model.config.hidden_size, model.config.embedding_size, model.config.num_layers) == (hidden, embedding, 1)
    assert model.config.weight_norm
    record = assert_checkpoint_files(out_dir, "openai-npy")
    assert sorted(record["source_files_sha256"]) == sorted(f"{i}.npy" for i in range(15))
    assert_matches_openai(out_dir, arrays)


def test_openai_conversion_from_an_fsspec_url(tmp_path):
    arrays = openai_release(seed=3)
    fs = fsspec.filesystem("memory")
    try:
        for index, array in enumerate(arrays):
            with fs.open(f"/release/{index}.npy", "wb") as handle:
                np.save(handle, array)
        fs.pipe("/release/README.md", b"extra non-.npy files are fine")
        config, state_dict = load_openai_state("memory://release")
        assert config.hidden_size == 16 and state_dict["model.layers.0.w_h"].shape == (16, 64)
        convert_openai("memory://release", str(tmp_path / "out"))
    finally:
        fs.rm("/release", recursive=True)
    assert_matches_openai(tmp_path / "out", arrays)


def test_openai_cli(tmp_path, capsys):
    arrays = openai_release(seed=4)
    write_release(arrays, tmp_path / "release")
    assert cli_main(["convert", "openai", str(tmp_path / "release"), str(tmp_path / "out")]) == 0
    assert "1 layer(s) of 16 units" in capsys.readouterr().out
    assert_matches_openai(tmp_path / "out", arrays)
    # a second conversion into the same (now non-empty) directory is refused unless asked to overwrite
    capsys.readouterr()  # the check's model loading above
    assert cli_main(["convert", "openai", str(tmp_path / "release"), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "not empty" in error and len(error.splitlines()) == 1 and error.startswith("bytezoo convert openai: error:")
    arrays = openai_release(seed=5)
    write_release(arrays, tmp_path / "release")
    assert cli_main(["convert", "openai", str(tmp_path / "release"), str(tmp_path / "out"), "--overwrite"]) == 0
    assert_matches_openai(tmp_path / "out", arrays)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".out.")]


def _remove(index):
    def corrupt(directory, arrays):
        os.remove(directory / f"{index}.npy")
    return corrupt


def _reshape(index, shape):
    def corrupt(directory, arrays):
        np.save(directory / f"{index}.npy", np.zeros(shape, np.float32))
    return corrupt


def _extra_file(directory, arrays):
    np.save(directory / "15.npy", np.zeros(3, np.float32))


def _pickled(directory, arrays):
    np.save(directory / "8.npy", np.array([{"not": "numbers"}], dtype=object), allow_pickle=True)


def _truncated(directory, arrays):
    data = (directory / "7.npy").read_bytes()
    (directory / "7.npy").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_remove(14), r"expected exactly the 15 files.*found 14 .npy files \(missing 14.npy\)"),
        (_extra_file, r"unexpected 15.npy"),
        (_reshape(7, (16, 17)), r"7.npy \(wmh\): expected shape \[H, H\] = \[16, 16\].*got \[16, 17\]"),
        (_reshape(3, (16, 8)), r"3.npy \(wh\[:, 1H:2H\].*expected shape \[H, H\]"),
        (_reshape(13, (16, 255)), r"13.npy \(output w\): expected shape \[H, V\] = \[16, 256\]"),
        (_reshape(1, (8, 30)), r"1.npy: wx must be \[E, 4H\]"),
        (_reshape(0, (100, 8)), r"0.npy: the embedding has 100 rows"),
        (_pickled, r"8.npy: not a plain numeric .npy array"),
        (_truncated, r"7.npy: cannot be read as a .npy array"),
    ],
    ids=["missing", "extra", "shape-wmh", "shape-wh-block", "shape-output", "wx-not-4H", "small-vocab", "pickle", "truncated"],
)
def test_openai_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, corrupt, message):
    arrays = openai_release()
    write_release(arrays, tmp_path / "release")
    corrupt(tmp_path / "release", arrays)
    out_dir = tmp_path / "out"
    with pytest.raises(ConversionError, match=message):
        convert_openai(str(tmp_path / "release"), str(out_dir))
    assert_nothing_written(out_dir)


def test_openai_output_must_be_local(tmp_path):
    write_release(openai_release(), tmp_path / "release")
    with pytest.raises(ConversionError, match="local filesystem"):
        convert_openai(str(tmp_path / "release"), "memory://converted")


def test_openai_missing_directory(tmp_path):
    with pytest.raises(ConversionError, match="not a directory"):
        convert_openai(str(tmp_path / "nowhere"), str(tmp_path / "out"))


# --------------------------------------------------------------------------------------------------------------------
# NVIDIA sentiment-discovery: RNNModel state dicts, and mLSTMCell's math


def nvidia_params(hidden=16, embedding=8, layers=2, weight_norm="all", seed=0, dtype=np.float32) -> dict:
    """Random parameters in sentiment-discovery's torch layout ((out, in) weights; gate rows i, f, u, o).

    ``weight_norm``: "all" (w_g/w_v pairs, g of shape (out, 1)), "none" (plain weights, as after remove_weight_norm)
    or "mixed" (some of each).
    """
    rng = np.random.default_rng(seed)
    H = hidden
    normal = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    cast = lambda a: a.astype(dtype)  # noqa: E731
    params = {"embedding": cast(normal(VOCAB, embedding)), "layers": []}
    for layer in range(layers):
        n_in = embedding if layer == 0 else H
        cell = {}
        shapes = {"w_ih": (4 * H, n_in), "w_hh": (4 * H, H), "w_mih": (H, n_in), "w_mhh": (H, H)}
        for position, (name, shape) in enumerate(shapes.items()):
            normed = weight_norm == "all" or (weight_norm == "mixed" and position % 2 == 1)
            if normed:
                cell[name + "_v"] = cast(normal(*shape))
                cell[name + "_g"] = cast(rng.uniform(0.5, 2.0, (shape[0], 1)))
            else:
                cell[name] = cast(normal(*shape) / np.sqrt(shape[1]))
        cell["b_ih"], cell["b_hh"] = cast(0.5 * normal(4 * H)), cast(0.5 * normal(4 * H))
        params["layers"].append(cell)
    params["decoder_weight"] = cast(normal(VOCAB, H) / np.sqrt(H))
    params["decoder_bias"] = cast(normal(VOCAB))
    return params


def to_float16(params: dict) -> dict:
    half = {key: value.astype(np.float16) for key, value in params.items() if key != "layers"}
    half["layers"] = [{name: value.astype(np.float16) for name, value in cell.items()} for cell in params["layers"]]
    return half


def rnn_model_state_dict(params, torch_dtype=None) -> dict:
    """What ``RNNModel.state_dict()`` returns: {'encoder': {'encoder': ..., 'rnn': ...}, 'decoder': ...}."""
    t = lambda a: torch.from_numpy(np.array(a)) if torch_dtype is None else torch.from_numpy(np.array(a)).to(torch_dtype)  # noqa: E731
    rnn = {f"rnns.{layer}.{name}": t(value) for layer, cell in enumerate(params["layers"]) for name, value in cell.items()}
    return {
        "encoder": {"encoder": {"weight": t(params["embedding"])}, "rnn": rnn},
        "decoder": {"weight": t(params["decoder_weight"]), "bias": t(params["decoder_bias"])},
    }


def nvidia_reference(params, ids: np.ndarray):
    """RNNModel.forward in float64: embedding, stackedRNN of mLSTMCell, decoder. Returns
    ``(logits, [every h per layer], [every c per layer])``."""

    def weight(cell, name):  # WeightNorm.compute_weight: v * (g / _norm(v, dim=0)), the norm per output row
        if name in cell:
            return cell[name].astype(np.float64)
        v, g = cell[name + "_v"].astype(np.float64), cell[name + "_g"].astype(np.float64)
        return v * (g / np.sqrt((v * v).sum(axis=1, keepdims=True)))

    inputs = params["embedding"].astype(np.float64)[ids]  # (B, T, E)
    all_h, all_c = [], []
    for cell in params["layers"]:
        w_ih, w_hh, w_mih, w_mhh = (weight(cell, name) for name in ("w_ih", "w_hh", "w_mih", "w_mhh"))
        b_ih, b_hh = cell["b_ih"].astype(np.float64), cell["b_hh"].astype(np.float64)
        h = np.zeros((ids.shape[0], w_mhh.shape[0]))
        c = np.zeros_like(h)
        hs, cs = [], []
        for t in range(ids.shape[1]):
            x = inputs[:, t]
            m = (x @ w_mih.T) * (h @ w_mhh.T)
            gates = x @ w_ih.T + b_ih + m @ w_hh.T + b_hh
            ingate, forgetgate, cellgate, outgate = np.split(gates, 4, axis=1)
            c = sigmoid(forgetgate) * c + sigmoid(ingate) * np.tanh(cellgate)
            h = sigmoid(outgate) * np.tanh(c)
            hs.append(h)
            cs.append(c)
        inputs = np.stack(hs, axis=1)
        all_h.append(inputs)
        all_c.append(np.stack(cs, axis=1))
    logits = inputs @ params["decoder_weight"].astype(np.float64).T + params["decoder_bias"].astype(np.float64)
    return logits, all_h, all_c


def assert_matches_nvidia(out_dir, params, seed: int = 2) -> None:
    ids = random_bytes(seed)
    _, out = run_converted(out_dir, ids)
    logits, all_h, all_c = nvidia_reference(params, ids)
    assert_close(out.logits, logits, "logits")
    for layer, (hs, cs) in enumerate(zip(all_h, all_c)):
        assert_close(out.hidden_states[layer], hs, f"layer {layer} hidden states")
        assert_close(out.cell_states[layer], cs, f"layer {layer} cell states")
        assert_close(out.state[0][layer], hs[:, -1], f"layer {layer} final h")
        assert_close(out.state[1][layer], cs[:, -1], f"layer {layer} final c")


def _nested(params, dtype):
    return rnn_model_state_dict(params, dtype)


def _under_sd(params, dtype):  # run_classifier.py unwraps {'sd': ...}
    return {"sd": rnn_model_state_dict(params, dtype), "epoch": 3}


def _flat_ddp(params, dtype):  # a plain nn.Module state dict of a DDP-wrapped model: flat keys, 'module.' prefixes
    nested = rnn_model_state_dict(params, dtype)
    flat = {f"module.encoder.{key}": value for key, value in nested["encoder"]["encoder"].items()}
    flat |= {f"module.rnn.{key}": value for key, value in nested["encoder"]["rnn"].items()}
    flat |= {f"module.decoder.{key}": value for key, value in nested["decoder"].items()}
    return flat


@pytest.mark.parametrize(
    "layout, layers, weight_norm, dtype, hidden",
    [
        (_nested, 2, "all", None, 16),
        (_under_sd, 1, "none", torch.float16, 16),
        (_flat_ddp, 2, "mixed", None, 12),
        (_nested, 3, "all", torch.float16, 8),
    ],
    ids=["nested-weightnorm-2layers", "sd-fp16-plain", "ddp-flat-mixed", "nested-fp16-weightnorm-3layers"],
)
def test_nvidia_conversion_reproduces_their_model(tmp_path, layout, layers, weight_norm, dtype, hidden):
    params = nvidia_params(hidden=hidden, layers=layers, weight_norm=weight_norm, seed=layers)
    if dtype is torch.float16:  # the reference sees exactly the half-precision values the file holds
        params = to_float16(params)
    torch.save(layout(params, dtype), tmp_path / "lm.pt")
    out_dir = tmp_path / "converted"
    model = convert_nvidia(str(tmp_path / "lm.pt"), str(out_dir))
    assert (model.config.num_layers, model.config.hidden_size, model.config.embedding_size) == (layers, hidden, 8)
    assert model.config.weight_norm == (weight_norm == "all")
    record = assert_checkpoint_files(out_dir, "nvidia-sentiment-discovery")
    assert record["loaded_with"] == "torch.load(weights_only=True)"
    assert_matches_nvidia(out_dir, params)


def test_nvidia_gate_order_matters(tmp_path):
    """Guard against a test that cannot fail: the same weights read in bytezoo's gate order without the swap give
    different outputs, so the comparison above does check the reordering."""
    params = nvidia_params(layers=1, weight_norm="none")
    config, state_dict = load_nvidia_state_from(tmp_path, params)
    ids = random_bytes(7)
    logits, _, _ = nvidia_reference(params, ids)
    model = bytezoo.zoo.MLSTMForCausalLM(config).eval()
    unswapped = dict(state_dict)
    unswapped["model.layers.0.w_x"] = torch.from_numpy(params["layers"][0]["w_ih"].T.copy())
    unswapped["model.layers.0.w_h"] = torch.from_numpy(params["layers"][0]["w_hh"].T.copy())
    unswapped["model.layers.0.bias"] = torch.from_numpy(params["layers"][0]["b_ih"] + params["layers"][0]["b_hh"])
    model.load_state_dict(state_dict)
    with torch.no_grad():
        assert_close(model(torch.from_numpy(ids)).logits, logits, "converted")
        model.load_state_dict(unswapped)
        wrong = model(torch.from_numpy(ids)).logits.double().numpy()
    assert np.abs(wrong - logits).max() > 1e-2


def load_nvidia_state_from(tmp_path, params):
    torch.save(rnn_model_state_dict(params), tmp_path / "lm.pt")
    return load_nvidia_state(str(tmp_path / "lm.pt"))


def test_nvidia_tensors_outside_the_language_model_are_ignored_and_recorded(tmp_path):
    """A classifier checkpoint that also carries the full language model: the LM converts, the rest is listed."""
    params = nvidia_params(layers=1)
    checkpoint = {"sd": rnn_model_state_dict(params), "classifier": {"weight": torch.zeros(1, 16), "bias": torch.zeros(1)}}
    torch.save(checkpoint, tmp_path / "lm.pt")
    with pytest.warns(UserWarning, match="ignoring 2 tensors outside the language model"):
        convert_nvidia(str(tmp_path / "lm.pt"), str(tmp_path / "out"))
    record = assert_checkpoint_files(tmp_path / "out", "nvidia-sentiment-discovery")
    assert record["ignored_keys"] == ["classifier.bias", "classifier.weight"]
    assert_matches_nvidia(tmp_path / "out", params)


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it with the full unpickler creates a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_nvidia_pickle_needing_full_unpickler_is_refused_without_trust(tmp_path, capsys):
    params = nvidia_params(layers=1)
    checkpoint = {"sd": rnn_model_state_dict(params), "args": argparse.Namespace(model="mLSTM", nhid=16)}
    torch.save(checkpoint, tmp_path / "lm.pt")
    out_dir = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"weights_only=True.*argparse\.Namespace.*--trust-pickle"):
        convert_nvidia(str(tmp_path / "lm.pt"), str(out_dir))
    assert_nothing_written(out_dir)
    assert cli_main(["convert", "nvidia", str(tmp_path / "lm.pt"), str(out_dir)]) == 2
    error = capsys.readouterr().err.strip()
    assert "--trust-pickle" in error and len(error.splitlines()) == 1
    assert_nothing_written(out_dir)
    with pytest.warns(UserWarning, match="full unpickler"):
        assert cli_main(["convert", "nvidia", str(tmp_path / "lm.pt"), str(out_dir), "--trust-pickle"]) == 0
    record = assert_checkpoint_files(out_dir, "nvidia-sentiment-discovery")
    assert "trust-pickle" in record["loaded_with"]
    assert_matches_nvidia(out_dir, params)


def test_nvidia_code_in_a_pickle_never_runs_without_trust(tmp_path):
    marker = tmp_path / "code-ran"
    checkpoint = {"sd": rnn_model_state_dict(nvidia_params(layers=1)), "payload": _RunsCodeWhenUnpickled(str(marker))}
    torch.save(checkpoint, tmp_path / "lm.pt")
    with pytest.raises(ConversionError, match="--trust-pickle"):
        convert_nvidia(str(tmp_path / "lm.pt"), str(tmp_path / "out"))
    assert not marker.exists()


def _drop(key):
    def corrupt(sd):
        del sd["encoder"]["rnn"][key]
    return corrupt


def _replace(key, shape):
    def corrupt(sd):
        sd["encoder"]["rnn"][key] = torch.zeros(shape)
    return corrupt


def _add(key):
    def corrupt(sd):
        sd["encoder"]["rnn"][key] = torch.zeros(3)
    return corrupt


def _lstm(sd):  # the same RNNModel with rnn_type='LSTM': no multiplicative weights
    for key in [key for key in sd["encoder"]["rnn"] if "w_m" in key]:
        del sd["encoder"]["rnn"][key]


def _transformer(sd):  # TransformerDecoderModel's keys
    sd.clear()
    sd["encoder.embed_tokens.weight"] = torch.zeros(VOCAB, 8)
    sd["encoder.layers.0.self_attn.in_proj_weight"] = torch.zeros(24, 8)


def _featurizer(sd):  # RNNFeaturizer / classifier checkpoints carry no decoder
    del sd["decoder"]


def _no_decoder_bias(sd):
    del sd["decoder"]["bias"]


def _layer_gap(sd):
    for key in [key for key in sd["encoder"]["rnn"] if key.startswith("rnns.1.")]:
        sd["encoder"]["rnn"][key.replace("rnns.1.", "rnns.2.")] = sd["encoder"]["rnn"].pop(key)


def _projection(sd):
    sd["encoder"]["rnn"]["rnns.0.w_ho"] = torch.zeros(16, 16)


def _one_bias(sd):
    del sd["encoder"]["rnn"]["rnns.0.b_hh"]


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_drop("rnns.1.w_mhh_g"), r"missing key 'encoder\.rnn\.rnns\.1\.w_mhh_g'"),
        (_drop("rnns.0.w_ih_v"), r"missing key 'encoder\.rnn\.rnns\.0\.w_ih_v'"),
        (_replace("rnns.1.w_mih_v", (16, 8)), r"encoder\.rnn\.rnns\.1\.w_mih_v .*shape \[16, 8\]; expected \[16, 16\]"),
        (_replace("rnns.0.w_hh_g", (60, 1)), r"encoder\.rnn\.rnns\.0\.w_hh_g has shape \[60, 1\]; expected \[64, 1\]"),
        (_add("rnns.0.running_mean"), r"unexpected keys in layer 0: \['encoder\.rnn\.rnns\.0\.running_mean'\]"),
        (_lstm, r"an LSTM checkpoint, not an mLSTM"),
        (_transformer, r"transformer checkpoint"),
        (_featurizer, r"missing key 'decoder\.weight'.*featurizer"),
        (_no_decoder_bias, r"missing key 'decoder\.bias'"),
        (_layer_gap, r"layers \[0, 2\].*not numbered"),
        (_projection, r"w_ho: an output projection"),
        (_one_bias, r"missing key 'encoder\.rnn\.rnns\.0\.b_hh'"),
    ],
    ids=["missing-gain", "missing-direction", "shape", "gain-shape", "unexpected", "lstm", "transformer", "featurizer",
         "no-decoder-bias", "layer-gap", "projection", "one-bias"],
)
def test_nvidia_bad_checkpoint_is_one_clear_error_and_writes_nothing(tmp_path, corrupt, message):
    sd = rnn_model_state_dict(nvidia_params(layers=2))
    corrupt(sd)
    torch.save(sd, tmp_path / "lm.pt")
    out_dir = tmp_path / "out"
    with pytest.raises(ConversionError, match=message) as caught:
        convert_nvidia(str(tmp_path / "lm.pt"), str(out_dir))
    assert str(tmp_path / "lm.pt") in str(caught.value)  # the error names the file
    assert_nothing_written(out_dir)


@pytest.mark.parametrize(
    "content, message",
    [(b"definitely not a checkpoint", r"refused by the safe loader"), (None, r"not a readable PyTorch checkpoint")],
    ids=["garbage", "truncated"],
)
def test_nvidia_unreadable_file(tmp_path, content, message):
    if content is None:
        torch.save(rnn_model_state_dict(nvidia_params(layers=1)), tmp_path / "whole.pt")
        content = (tmp_path / "whole.pt").read_bytes()[:300]
    (tmp_path / "lm.pt").write_bytes(content)
    with pytest.raises(ConversionError, match=message):
        convert_nvidia(str(tmp_path / "lm.pt"), str(tmp_path / "out"))
    assert_nothing_written(tmp_path / "out")
    with pytest.raises(ConversionError, match="no such file"):
        convert_nvidia(str(tmp_path / "missing.pt"), str(tmp_path / "out"))
