"""The byte tokenizer: ids are bytes, any text and any bytes round-trip, offsets point at characters."""
from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoTokenizer

import bytezoo
from bytezoo.zoo import ByteTokenizer


def random_unicode(length: int) -> str:
    """Random code points from every plane (no lone surrogates: those are not text)."""
    points = []
    while len(points) < length:
        point = random.choice([random.randrange(0x20, 0x7F), random.randrange(0x80, 0x800), random.randrange(0x800, 0xD800), random.randrange(0x10000, 0x110000)])
        points.append(chr(point))
    return "".join(points)


@pytest.fixture
def tokenizer():
    return ByteTokenizer()


def test_ids_are_utf8_bytes(tokenizer):
    text = random_unicode(40)
    assert tokenizer(text)["input_ids"] == list(text.encode("utf-8"))
    assert tokenizer.vocab_size == 256 and tokenizer.pad_token_id == 256 and len(tokenizer) == 257


@pytest.mark.parametrize("length", [0, 1, 17, 300])
def test_any_text_round_trips(tokenizer, length):
    text = random_unicode(length) + " <pad> literal"  # special-token strings inside text stay text
    ids = tokenizer(text)["input_ids"]
    assert all(0 <= i < 256 for i in ids)
    assert tokenizer.decode(ids) == text


def test_arbitrary_bytes_round_trip(tokenizer):
    data = bytes(random.randrange(256) for _ in range(500))  # mostly invalid UTF-8: data, not an error
    ids = tokenizer.encode_bytes(data)
    assert ids == list(data)
    assert tokenizer.decode_bytes(ids) == data
    assert tokenizer.decode_bytes(torch.tensor(ids + [256])) == data  # padding dropped
    assert isinstance(tokenizer.decode(ids), str)  # invalid sequences become U+FFFD for display


def test_offsets_mapping_points_at_characters(tokenizer):
    texts = ["héllo", random_unicode(9), "a"]
    batch = tokenizer(texts, padding=True, return_offsets_mapping=True)
    for text, ids, offsets, mask in zip(texts, batch["input_ids"], batch["offset_mapping"], batch["attention_mask"]):
        real = [(i, span) for i, span, m in zip(ids, offsets, mask) if m]
        assert len(real) == len(text.encode())
        for char_index, char in enumerate(text):
            spans = [span for _, span in real if span == (char_index, char_index + 1)]
            assert len(spans) == len(char.encode())  # every byte of a character points at it
        assert all(span == (0, 0) for span, m in zip(offsets, mask) if not m)
    single = tokenizer("é", return_offsets_mapping=True, return_tensors="pt")
    assert single["offset_mapping"].tolist() == [[[0, 1], [0, 1]]]


def test_padding_is_left_and_masked(tokenizer):
    batch = tokenizer(["ab", "abcd"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[256, 256, 97, 98], [97, 98, 99, 100]]
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_saved_with_the_model_and_loaded_by_auto_tokenizer(tmp_path):
    bytezoo.create_model("mlstm-256", hidden_size=8).save_pretrained(tmp_path)
    ByteTokenizer().save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, ByteTokenizer)
    text = random_unicode(25)
    assert loaded(text)["input_ids"] == list(text.encode()) and loaded.decode(loaded(text)["input_ids"]) == text


def test_feeds_the_model(tokenizer):
    model = bytezoo.create_model("mlstm-256", hidden_size=8).eval()
    batch = tokenizer(["a short one", "and a longer text"], padding=True, return_tensors="pt")
    with torch.no_grad():
        padded = model(**batch).state[1][:, 0]
        alone = model(tokenizer("a short one", return_tensors="pt").input_ids).state[1][:, 0]
    torch.testing.assert_close(padded, alone, atol=1e-6, rtol=1e-6)
