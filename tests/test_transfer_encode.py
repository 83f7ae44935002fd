"""``Featurizer.encode``: sentence-transformers' interface over the features, with transform's numbers."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from bytezoo.errors import InvalidArgumentError
from bytezoo.transfer import Featurizer
from zoo_presets import one_preset_per_family

TEXTS = ["a great film", "dull, slow and far too long", "", "é!", "the plot " * 6]  # the last: several chunks
# Where encode's defaults differ from SentenceTransformer.encode's on purpose, and why.
DEFAULTS_OF_OUR_OWN = {"batch_size": None}  # None: all texts in one transform call, transform's exact numbers


def featurizer(model, **options) -> Featurizer:
    return Featurizer(model, progress=False, **options)  # the pooling: the model's own default


def test_encode_has_sentence_transformers_signature():
    sentence_transformers = pytest.importorskip("sentence_transformers")  # the class only: no model is downloaded
    theirs = inspect.signature(sentence_transformers.SentenceTransformer.encode).parameters
    ours = inspect.signature(Featurizer.encode).parameters
    assert list(ours) == list(theirs), "the same parameters, in the same order (callers pass some by position)"
    for name, parameter in theirs.items():
        assert ours[name].kind == parameter.kind, name
        if parameter.default is not inspect.Parameter.empty:
            assert ours[name].default == DEFAULTS_OF_OUR_OWN.get(name, parameter.default), name


@pytest.mark.parametrize("name", one_preset_per_family())
def test_encode_gives_transforms_numbers(name, tiny_model):
    model = tiny_model(name)
    encoder = featurizer(model, chunk_size=7)
    expected = featurizer(model, chunk_size=7).fit().transform(TEXTS)
    embeddings = encoder.encode(TEXTS)  # loads the model on first use, as a SentenceTransformer is ready to encode
    assert isinstance(embeddings, np.ndarray) and embeddings.dtype == np.float32
    np.testing.assert_array_equal(embeddings, expected)
    np.testing.assert_array_equal(encoder.encode(TEXTS[1]), encoder.transform(TEXTS[1:2])[0])  # one text: a 1-d array
    assert encoder.get_sentence_embedding_dimension() == expected.shape[1]
    grouped = encoder.encode(TEXTS, batch_size=2)  # memory bounded by the group; only rounding may differ
    np.testing.assert_allclose(grouped, expected, rtol=1e-5, atol=1e-6)


def test_encode_conventions(tiny_model):
    encoder = featurizer(tiny_model("mlstm-256"))
    plain = encoder.encode(TEXTS)
    unit = encoder.encode(TEXTS, normalize_embeddings=True)
    norms = np.linalg.norm(unit, axis=1)
    np.testing.assert_allclose(norms[np.linalg.norm(plain, axis=1) > 0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(unit * np.linalg.norm(plain, axis=1, keepdims=True), plain, rtol=1e-5, atol=1e-6)
    assert encoder.encode(TEXTS, truncate_dim=5).shape == (len(TEXTS), 5)
    tensor = encoder.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and torch.equal(tensor, torch.from_numpy(plain))
    rows = encoder.encode(TEXTS, convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == len(TEXTS) and torch.equal(rows[0], torch.from_numpy(plain[0]))
    np.testing.assert_array_equal(encoder.encode(["film"], prompt="query: "), encoder.transform(["query: film"]))
    assert encoder.encode([]).shape == (0, plain.shape[1])
    assert encoder.progress is False  # show_progress_bar did not change the estimator's setting


@pytest.mark.parametrize("options", [{"prompt_name": "query"}, {"output_value": "token_embeddings"}, {"precision": "int8"},
                                     {"pool": {}}, {"chunk_size": 4}, {"task": "classification"}, {"batch_size": 0}])
def test_encode_refuses_what_it_cannot_honour(options, tiny_model):
    with pytest.raises(InvalidArgumentError):
        featurizer(tiny_model("mlstm-256")).encode(TEXTS, **options)
