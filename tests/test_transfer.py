"""Transfer stage: the featurizer's exactness and scikit-learn behaviour, the L1 classifier."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import bytezoo
from zoo_presets import one_preset_per_family
from bytezoo.data.labelled import read_dataset
from bytezoo.transfer import Featurizer, SingleClassError, SparseLogisticClassifier, preprocess_openai
from bytezoo.transfer.featurizer import text_to_bytes
from bytezoo.zoo.recurrent_lm import supported_poolings


def tiny(name: str = "mlstm-256", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return bytezoo.create_model(name, **{"hidden_size": 16, "embedding_size": 8, **overrides}).eval()


def random_texts(count: int, seed: int, max_len: int = 60) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcdefgh ijklmnop.,!é€\n"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len))) for _ in range(count)]


# --- featurizer: exactness ------------------------------------------------------------------------------------------
def tiny_preset(name: str, seed: int):
    torch.manual_seed(seed)
    overrides = {**bytezoo.get_model_info(name).test_overrides, "hidden_size": 16, "num_layers": 2}
    return bytezoo.create_model(name, **overrides).eval()


FAMILY_POOLINGS = [(name, pooling) for name in one_preset_per_family()  # every mode each family offers
                   for pooling in supported_poolings(bytezoo.create_model(name, **bytezoo.get_model_info(name).test_overrides))]


@pytest.mark.parametrize("name, pooling", FAMILY_POOLINGS)
def test_features_do_not_depend_on_batch_or_chunking(name, pooling):
    model = tiny_preset(name, seed=len(pooling))
    texts = random_texts(5, seed=len(pooling), max_len=25) + ["", "x" * 40]
    batched = Featurizer(model, pooling=pooling, preprocess="none", batch_size=4, chunk_size=7).fit().transform(texts)
    alone = Featurizer(model, pooling=pooling, preprocess="none", batch_size=1, chunk_size=10_000).fit()
    one_by_one = np.stack([alone.transform([text])[0] for text in texts])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-6)
    assert batched.dtype == np.float32 and batched.shape == (len(texts), 16)
    empty = texts.index("")
    if pooling == "final_cell" or pooling == "mean":  # nothing read: the zero initial state
        assert not batched[empty].any()


PACKING_POOLINGS = [(name, pooling) for name, pooling in FAMILY_POOLINGS
                    if bytezoo.create_model(name, **bytezoo.get_model_info(name).test_overrides).model.resets_per_position]


def test_some_families_pack_texts_and_some_do_not():
    packing = {name for name, _ in PACKING_POOLINGS}
    assert any(name.startswith("mlstm") for name in packing) and packing != set(one_preset_per_family())  # both layouts covered


@pytest.mark.parametrize("name, pooling", PACKING_POOLINGS)
def test_packed_rows_stay_full_and_features_equal_reading_each_text_alone(name, pooling):
    model = tiny_preset(name, seed=7)
    rng = random.Random(len(name) + len(pooling))
    texts = random_texts(23, seed=rng.randint(0, 999), max_len=17) + ["", "q" * 5, "w" * 10]  # ends on chunk edges too
    rows = []
    hook = model.model.register_forward_pre_hook(lambda module, args, kwargs: rows.append(args[0].shape[0]), with_kwargs=True)
    packed = Featurizer(model, pooling=pooling, preprocess="none", batch_size=3, chunk_size=5).fit().transform(texts)
    hook.remove()
    total = sum(len(t.encode()) for t in texts)
    # Rows end within one text of each other: all but the calls inside the last (longest text) steps read 3 rows.
    assert len(rows) <= -(-(total // 3 + 20) // 5) and rows.count(3) >= len(rows) - -(-20 // 5)
    expected = np.zeros((len(texts), 16), dtype=np.float32)  # an empty text: zeros
    for row, text in enumerate(texts):  # a plain forward over each text alone, not through the featurizer
        if text:
            with torch.no_grad():
                out = model.model(torch.tensor([list(text.encode())]), output_cell_states=pooling == "final_cell")
            outputs = out.cell_states[-1] if pooling == "final_cell" else out.last_hidden_state  # (1, T, H)
            expected[row] = (outputs[0].mean(0) if pooling == "mean" else outputs[0, -1]).numpy()
    np.testing.assert_allclose(packed, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in one_preset_per_family() if (n, "final_cell") not in FAMILY_POOLINGS])
def test_final_cell_features_of_a_model_without_a_cell_are_refused_by_name(name):
    with pytest.raises(ValueError, match=r"pooling .final_cell. reads a per-unit cell state, which \w+ does not have; \w+ offers final_hidden, mean"):
        Featurizer(tiny_preset(name, seed=0), pooling="final_cell").fit()


@pytest.mark.parametrize("name", one_preset_per_family())
def test_every_reader_of_a_texts_feature_agrees_and_the_default_is_the_models(name):
    """The pooling core is the one definition of a text's feature: the classifier head, the featurizer (packed rows or
    sorted batches, whichever the family uses) and the unit traces read the same values in every mode the family
    offers, and the featurizer's default is the classifier's (the family's own, not a fixed final_cell)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    from bytezoo.transfer import unit_trace
    from bytezoo.zoo.recurrent_lm import TextPooling, default_pooling, supported_poolings

    language_model = tiny_preset(name, seed=5)
    texts = random_texts(6, seed=5, max_len=20) + ["", "long text " * 3]
    ids = torch.full((len(texts), 32), 256)
    mask = torch.zeros(len(texts), 32, dtype=torch.long)
    for row, text in enumerate(texts):
        ids[row, : len(text.encode())], mask[row, : len(text.encode())] = torch.tensor(list(text.encode()), dtype=torch.long), 1
    classifier_class = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(language_model.config)]
    assert Featurizer(language_model).fit().pooling_ == classifier_class(language_model.config).config.classifier_pooling \
        == default_pooling(language_model) == TextPooling(language_model).mode
    for pooling in supported_poolings(language_model):
        config = type(language_model.config).from_dict({**language_model.config.to_dict(), "classifier_pooling": pooling})
        head = classifier_class(config).eval()
        head.model.load_state_dict(language_model.model.state_dict())
        with torch.no_grad():
            pooled = head(ids, attention_mask=mask, chunk_size=5, output_pooled=True).pooled.numpy()
        features = Featurizer(language_model, pooling=pooling, preprocess="none", batch_size=3, chunk_size=4).fit().transform(texts)
        np.testing.assert_allclose(features, pooled, rtol=1e-5, atol=1e-5, err_msg=pooling)
        row = len(texts) - 1
        trace = unit_trace(language_model, texts[row], unit=3, pooling=pooling, preprocess="none")
        assert trace.pooling == pooling and trace.values[-1] == pytest.approx(features[row, 3], rel=1e-4, abs=1e-5)


def test_features_equal_a_plain_forward_pass_over_the_preprocessed_bytes():
    model = tiny(num_layers=2)
    texts = ["Great &amp; moving.\nLoved it!  ", "  dull", "é"]
    features = {pooling: Featurizer(model, pooling=pooling).fit().transform(texts) for pooling in ("final_cell", "final_hidden", "mean")}
    for row, text in enumerate(texts):
        ids = torch.tensor([list(preprocess_openai(text))])
        with torch.no_grad():
            out = model.model(ids)
        np.testing.assert_allclose(features["final_cell"][row], out.state[1][-1, 0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(features["final_hidden"][row], out.state[0][-1, 0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(features["mean"][row], out.last_hidden_state[0].mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_openai_preprocessing_reproduces_the_original_encoder():
    # html.unescape, newlines -> spaces, strip, "\n " before and " " after, UTF-8
    assert preprocess_openai("  It&#39;s great &amp; fun\nreally ") == b"\n It's great & fun really "
    assert preprocess_openai("") == b"\n  "
    assert preprocess_openai("café") == "\n café ".encode()
    assert text_to_bytes("a\nb", "none") == b"a\nb"
    raw = b"ok \xff\xfe bytes"  # not UTF-8: read with surrogateescape, the model sees the original bytes
    assert text_to_bytes(raw.decode("utf-8", errors="surrogateescape"), "none") == raw
    assert text_to_bytes(raw, "none") == raw


def test_long_text_is_read_in_bounded_chunks_and_finished_rows_drop_out():
    model = tiny()
    texts = ["y" * 300, "short one", "z" * 140, "mid " * 20]
    seen = []
    hook = model.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(tuple(args[0].shape)), with_kwargs=True)
    chunked = Featurizer(model, preprocess="none", batch_size=8, chunk_size=64).fit().transform(texts)
    hook.remove()
    assert max(steps for _, steps in seen) <= 64 and len(seen) == 5
    assert seen[0][0] == 4 and seen[-1][0] == 1  # rows finished early are no longer computed
    one_pass = Featurizer(model, preprocess="none", batch_size=1, chunk_size=100_000).fit().transform(texts)
    np.testing.assert_allclose(chunked, one_pass, rtol=1e-5, atol=1e-6)


def test_model_from_a_checkpoint_directory_equals_the_model_object(tmp_path):
    model = tiny(seed=3)
    model.save_pretrained(tmp_path / "model")
    texts = random_texts(4, seed=1, max_len=30)
    from_dir = Featurizer(str(tmp_path / "model")).fit().transform(texts)
    from_object = Featurizer(model).fit().transform(texts)
    np.testing.assert_allclose(from_dir, from_object, rtol=1e-6, atol=1e-7)


def test_bfloat16_features_are_close_to_float32_and_the_callers_model_is_untouched():
    model = tiny(seed=4)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    texts = random_texts(4, seed=2, max_len=30)
    full = Featurizer(model).fit().transform(texts)
    low = Featurizer(model, dtype="bfloat16").fit().transform(texts)
    assert np.abs(low - full).max() < 0.1 * max(1.0, np.abs(full).max())
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_feature_cache_hits_and_keys_on_options(tmp_path):
    model = tiny(seed=5)
    texts = random_texts(4, seed=3, max_len=30)
    first = Featurizer(model, cache_dir=str(tmp_path / "cache")).fit()
    computed = first.transform(texts)
    assert not first.extraction_stats_["from_cache"]
    again = Featurizer(model, cache_dir=str(tmp_path / "cache")).fit()
    np.testing.assert_array_equal(again.transform(texts), computed)
    assert again.extraction_stats_["from_cache"]
    other = Featurizer(model, pooling="mean", cache_dir=str(tmp_path / "cache")).fit()
    other.transform(texts)
    assert not other.extraction_stats_["from_cache"]
    for entry in (tmp_path / "cache").iterdir():  # a damaged entry is recomputed, never trusted
        entry.write_bytes(b"garbage")
    np.testing.assert_array_equal(Featurizer(model, cache_dir=str(tmp_path / "cache")).fit().transform(texts), computed)


# --- featurizer: scikit-learn ---------------------------------------------------------------------------------------
def test_featurizer_follows_the_estimator_conventions():
    from sklearn.base import clone
    from sklearn.utils.estimator_checks import check_get_params_invariance, check_no_attributes_set_in_init, check_parameters_default_constructible, check_set_params

    featurizer = Featurizer(tiny(), pooling="mean", batch_size=3)
    for check in (check_no_attributes_set_in_init, check_get_params_invariance, check_set_params, check_parameters_default_constructible):
        check("Featurizer", featurizer)
    assert clone(featurizer).get_params()["pooling"] == "mean"
    fitted = featurizer.fit()
    assert fitted is featurizer
    names = featurizer.get_feature_names_out()
    assert len(names) == 16 and names[0] == "mean_0"
    with pytest.raises(TypeError, match="single string"):
        featurizer.transform("a bare string")
    with pytest.raises(TypeError, match="text 1"):
        featurizer.transform(["fine", 3.5])
    for bad in ({"pooling": "max"}, {"preprocess": "lowercase"}, {"batch_size": 0}, {"model": None}):
        with pytest.raises(ValueError):
            clone(featurizer).set_params(**bad).fit()


def test_featurizer_in_a_pipeline_with_grid_search():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    rng = random.Random(7)
    texts, labels = [], []
    for _ in range(24):
        label = rng.randint(0, 1)
        texts.append(" ".join(rng.choice(["good", "great", "fine"] if label else ["bad", "awful", "poor"]) for _ in range(rng.randint(1, 4))))
        labels.append(label)
    pipeline = Pipeline([("features", Featurizer(tiny(seed=8), preprocess="none")), ("classify", SparseLogisticClassifier(Cs=[0.5, 4.0]))])
    search = GridSearchCV(pipeline, {"features__pooling": ["final_cell", "mean"]}, cv=2).fit(texts, labels)
    assert search.best_params_["features__pooling"] in ("final_cell", "mean")
    assert search.predict(texts[:5]).shape == (5,)


# --- datasets (reading them: tests/test_data_labelled.py) ---------------------------------------------------------
def test_empty_texts_are_featurized(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "", "label": 1}\n{"text": null, "label": 0}\n')
    data = read_dataset(str(tmp_path / "d.jsonl"))
    assert data.texts == ["", ""]
    features = Featurizer(tiny(), preprocess="none").fit().transform(data.texts)
    assert features.shape == (2, 16) and not features.any()


# --- classifier -----------------------------------------------------------------------------------------------------
def synthetic(n: int, hidden: int, seed: int):
    """Random features; each test makes the label from chosen units."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, hidden)), rng


def test_classifier_finds_the_unit_that_carries_the_label():
    X, rng = synthetic(600, 40, seed=1)
    y = np.where(X[:, 23] + 0.3 * rng.normal(size=600) > 0, "pos", "neg")
    clf = SparseLogisticClassifier(top_k=5).fit(X[:400], y[:400], X[400:500], y[400:500])
    assert clf.task_ == "binary" and clf.top_units_[0] == 23
    assert clf.score(X[500:], y[500:]) > 0.8
    assert set(clf.dev_scores_) == {2.0**e for e in range(-8, 1)}
    assert clf.n_nonzero_ < 40  # L1 keeps few units
    proba = clf.predict_proba(X[500:])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert ((proba[:, 1] > 0.5) == (clf.predict(X[500:]) == "pos")).all()
    one = SparseLogisticClassifier().fit(X[:400, [23]], y[:400], X[400:500, [23]], y[400:500])
    assert one.score(X[500:, [23]], y[500:]) > 0.8


def test_a_classifier_without_any_weight_predicts_the_majority_class():
    """An L1 penalty too strong for the features leaves no weight; liblinear also shrinks the intercept, which would
    make the prediction a coin toss: the intercepts become the classes' log-odds instead."""
    X, rng = synthetic(300, 8, seed=4)
    for y in (np.where(rng.random(300) < 0.7, "b", "a"), np.asarray(["x", "y", "z", "z"] * 75)):
        clf = SparseLogisticClassifier(Cs=[1e-6]).fit(X[:200], y[:200])
        assert clf.n_nonzero_ == 0
        values, counts = np.unique(y[:200], return_counts=True)
        assert set(clf.predict(X[200:])) == {values[np.argmax(counts)]}


def test_multiclass_and_multilabel():
    X, rng = synthetic(900, 30, seed=2)
    y = np.select([X[:, 3] > 0.6, X[:, 11] > 0.6], ["positive", "negative"], "neutral")
    clf = SparseLogisticClassifier(Cs=[0.25, 1.0]).fit(X[:600], y[:600], X[600:750], y[600:750])
    assert clf.task_ == "multiclass" and set(clf.top_units_[:2]) == {3, 11}
    assert clf.score(X[750:], y[750:]) > 0.8
    np.testing.assert_allclose(clf.predict_proba(X[750:]).sum(1), 1.0)
    Y = np.stack([X[:, 5] > 0, X[:, 17] > 0.5, np.zeros(900, bool)], axis=1).astype(int)  # the last label never occurs
    multi = SparseLogisticClassifier(Cs=[0.25, 1.0]).fit(X[:600], Y[:600])  # no dev set: C chosen on a split of train
    assert multi.task_ == "multilabel" and set(multi.top_units_[:2]) == {5, 17}
    assert multi.score(X[750:], Y[750:]) > 0.85
    assert not multi.predict(X[750:])[:, 2].any()


def test_a_single_class_is_a_clear_error():
    with pytest.raises(SingleClassError, match="single class"):
        SparseLogisticClassifier().fit(np.ones((5, 3)), ["a"] * 5)


def test_classifier_saves_without_pickle_and_loads(tmp_path):
    X, rng = synthetic(300, 12, seed=3)
    y = (X[:, 4] > 0).astype(int)
    clf = SparseLogisticClassifier(top_k=3).fit(X[:200], y[:200], X[200:], y[200:])
    clf.save(str(tmp_path / "clf"), metadata={"model": "s3://bucket/m"})
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["classifier.json", "classifier.safetensors"]
    metadata = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert metadata["model"] == "s3://bucket/m" and metadata["top_units"][0] == 4
    loaded, meta = SparseLogisticClassifier.load(str(tmp_path / "clf"))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert [str(v) for v in loaded.predict(X)] == [str(v) for v in clf.predict(X)]
    with pytest.raises(ValueError, match="columns"):
        loaded.predict(X[:, :5])
    (tmp_path / "clf" / "classifier.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a bytezoo-transfer-classifier"):
        SparseLogisticClassifier.load(str(tmp_path / "clf"))


def test_classifier_rejects_non_finite_features():
    X = np.ones((4, 3))
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2, column 1"):
        SparseLogisticClassifier().fit(X, [0, 1, 0, 1])


# --- the original OpenAI encoder ------------------------------------------------------------------------------------
def original_openai_features(arrays: list[np.ndarray], texts: list[str], nsteps: int = 8) -> np.ndarray:
    """encoder.py's ``transform`` of generating-reviews-discovering-sentiment, in float64 numpy: texts sorted by
    length, read in windows of ``nsteps`` bytes, left-padded, padded steps masked (``c = ct*m + c*(1-m)``), finished
    texts dropped; the feature is the final cell state."""
    import html

    def preprocess(text):  # their utils.preprocess
        text = html.unescape(text)
        text = text.replace("\n", " ").strip()
        return ("\n " + text + " ").encode()

    p = [a.astype(np.float64) for a in arrays]
    embd, wx, wh, wmx, wmh, b = p[0], p[1], np.concatenate(p[2:6], axis=1), p[6], p[7], p[8]
    normalize = lambda w, g: w / np.sqrt(np.maximum((w * w).sum(axis=0, keepdims=True), 1e-12)) * g  # noqa: E731
    wx, wh, wmx, wmh = normalize(wx, p[9]), normalize(wh, p[10]), normalize(wmx, p[11]), normalize(wmh, p[12])
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    xs = [preprocess(text) for text in texts]
    sorted_idxs = np.argsort([len(x) for x in xs])
    unsort_idxs = np.argsort(sorted_idxs)
    sorted_xs = [xs[i] for i in sorted_idxs]
    smb = np.zeros((2, len(xs), wmh.shape[0]))  # [c, h]
    offset = 0
    for start in range(0, max(len(x) for x in xs), nsteps):
        pieces = [x[start : start + nsteps] for x in sorted_xs]
        ndone = sum(piece == b"" for piece in pieces)
        offset += ndone
        pieces, sorted_xs = pieces[ndone:], sorted_xs[ndone:]
        xmb = np.zeros((len(pieces), nsteps), dtype=np.int64)
        mmb = np.ones((len(pieces), nsteps, 1))
        for row, piece in enumerate(pieces):  # their batch_pad: left padding
            xmb[row, -len(piece):] = list(piece)
            mmb[row, : nsteps - len(piece)] = 0
        c, h = smb[0, offset:], smb[1, offset:]
        for t in range(nsteps):
            x = embd[xmb[:, t]]
            z = x @ wx + ((x @ wmx) * (h @ wmh)) @ wh + b
            i, f, o, u = np.split(z, 4, axis=1)
            ct = sigmoid(f) * c + sigmoid(i) * np.tanh(u)
            ht = sigmoid(o) * np.tanh(ct)
            m = mmb[:, t]
            c, h = ct * m + c * (1 - m), ht * m + h * (1 - m)
        smb[0, offset:], smb[1, offset:] = c, h
    return smb[0, unsort_idxs]


def test_features_of_converted_openai_weights_equal_the_original_encoder(tmp_path):
    from bytezoo.zoo.convert import convert_openai

    rng = np.random.default_rng(0)
    H, E = 12, 6
    arrays = [rng.standard_normal((256, E)), rng.standard_normal((E, 4 * H))]
    arrays += [rng.standard_normal((H, H)) for _ in range(4)] + [rng.standard_normal((E, H)), rng.standard_normal((H, H))]
    arrays += [0.5 * rng.standard_normal(4 * H), *(rng.uniform(0.5, 2.0, n) for n in (4 * H, 4 * H, H, H))]
    arrays += [rng.standard_normal((H, 256)) / np.sqrt(H), rng.standard_normal(256)]
    (tmp_path / "release").mkdir()
    for index, array in enumerate(arrays):
        np.save(tmp_path / "release" / f"{index}.npy", array.astype(np.float32))
    convert_openai(str(tmp_path / "release"), str(tmp_path / "converted"))
    texts = ["Loved it &amp; would go again!", "  meh\n", "An utterly dull, joyless film.", "é", "ok"]
    ours = Featurizer(str(tmp_path / "converted"), batch_size=2, chunk_size=5).fit().transform(texts)
    original = original_openai_features([a.astype(np.float32) for a in arrays], texts)
    np.testing.assert_allclose(ours, original, rtol=1e-4, atol=1e-5)


def test_a_gpu_number_this_machine_lacks_is_named(monkeypatch):
    from bytezoo.errors import InvalidArgumentError
    from bytezoo.transfer.featurizer import _check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _check_device("cuda:0")
    _check_device("cuda")
    with pytest.raises(InvalidArgumentError, match=r"device='cuda:5', but torch sees 1 CUDA GPU\(s\) here \(cuda:0 to cuda:0\)"):
        _check_device("cuda:5")


def test_a_pipeline_saved_where_it_cannot_be_is_one_clear_error_and_saves_locally_in_either_form(tmp_path):
    from bytezoo.errors import ByteZooError
    from bytezoo.transfer import SentimentPipeline

    X, _ = synthetic(60, 16, seed=5)
    y = (X[:, 2] > 0).astype(int)
    model = tiny()
    featurizer = Featurizer(model, progress=False).fit()
    pipe = SentimentPipeline(featurizer, SparseLogisticClassifier().fit(X, y), label_names=["neg", "pos"])
    with pytest.raises(ByteZooError, match="not one: save locally"):
        pipe.save_pretrained("memory://pipelines/p", include_model=True)
    with pytest.raises(ByteZooError, match="model_reference="):
        pipe.save_pretrained(str(tmp_path / "no-reference"), include_model=False)
    assert not (tmp_path / "no-reference").exists()  # refused before anything is written
    pipe.save_pretrained(str(tmp_path / "with-model"))
    model.save_pretrained(tmp_path / "model")
    pipe.save_pretrained(str(tmp_path / "by-reference"), include_model=False, model_reference=str(tmp_path / "model"))
    texts = ["a fine day", "a dull one"]
    for folder in ("with-model", "by-reference"):
        loaded = SentimentPipeline.from_pretrained(str(tmp_path / folder))
        assert loaded(texts) == pipe(texts)
