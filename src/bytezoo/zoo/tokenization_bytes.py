"""Byte-level tokenizer: token id = byte value (0–255) of the UTF-8 encoding; special tokens, if any, come after 255.

Only transformers is imported here, so a saved tokenizer also loads with ``trust_remote_code`` where bytezoo is not
installed.
"""
from __future__ import annotations

from transformers import AddedToken, BatchEncoding, PreTrainedTokenizer

NUM_BYTES = 256


def _byte_token(value: int) -> str:
    """The token string of a byte: the Latin-1 character with that code, so 256 distinct one-character tokens."""
    return chr(value)


def _char_offsets(text: str) -> list[tuple[int, int]]:
    """For each UTF-8 byte of ``text``, the ``(start, end)`` character span it belongs to."""
    offsets = []
    for index, char in enumerate(text):
        offsets.extend([(index, index + 1)] * len(char.encode("utf-8", "surrogateescape")))
    return offsets


class ByteTokenizer(PreTrainedTokenizer):
    """Maps text to the bytes of its UTF-8 encoding, one token per byte, and back.

    * ``decode(encode(text)) == text`` for any Unicode text; :meth:`encode_bytes` / :meth:`decode_bytes` round-trip
      arbitrary bytes, valid UTF-8 or not.
    * The only special token is ``<pad>`` (id 256), used to pad batches and never fed to a model: padded positions
      are masked by ``attention_mask``. Text is never split on special-token strings, so a literal ``"<pad>"`` in a
      review stays five bytes.
    * ``return_offsets_mapping=True`` gives each byte the character span it encodes.
    * Padding is on the left by default, as decoder-only generation expects (a recurrent model gives the same final
      state with either side, since padding holds the state).

    Example:

    ```python
    >>> from bytezoo.zoo import ByteTokenizer
    >>> tok = ByteTokenizer()
    >>> tok("héllo")["input_ids"]
    [104, 195, 169, 108, 108, 111]
    >>> tok.decode([104, 195, 169])
    'hé'
    ```"""

    _auto_class = "AutoTokenizer"  # saved with its code: loads with trust_remote_code where bytezoo is absent

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, pad_token: str | AddedToken = "<pad>", errors: str = "replace", **kwargs):
        self.errors = errors  # how decode() treats byte sequences that are not valid UTF-8
        pad_token = AddedToken(pad_token, special=True, normalized=False) if isinstance(pad_token, str) else pad_token
        self._added_tokens_decoder = {NUM_BYTES: pad_token}
        kwargs.setdefault("padding_side", "left")
        kwargs.setdefault("split_special_tokens", True)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(pad_token=pad_token, errors=errors, **kwargs)

    @property
    def vocab_size(self) -> int:
        return NUM_BYTES

    def get_vocab(self) -> dict[str, int]:
        vocab = {_byte_token(value): value for value in range(NUM_BYTES)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [_byte_token(value) for value in text.encode("utf-8", "surrogateescape")]

    def _convert_token_to_id(self, token: str) -> int:
        if len(token) != 1 or ord(token) >= NUM_BYTES:
            raise KeyError(f"{token!r} is not a byte token")
        return ord(token)

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= index < NUM_BYTES:
            raise IndexError(f"token id {index} is not a byte (0–255) nor a special token")
        return _byte_token(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        data = bytearray()
        text = []
        for token in tokens:
            if token in self.added_tokens_encoder:  # a special token: flush the bytes before it
                text.append(bytes(data).decode("utf-8", self.errors))
                data.clear()
                text.append(token)
            else:
                data.append(ord(token))
        text.append(bytes(data).decode("utf-8", self.errors))
        return "".join(text)

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of raw bytes (any bytes: invalid UTF-8 is data, not an error)."""
        return list(bytes(data))

    def decode_bytes(self, ids) -> bytes:
        """The bytes behind ``ids``, special tokens dropped: the exact inverse of :meth:`encode_bytes`."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return bytes(int(i) for i in ids if 0 <= int(i) < NUM_BYTES)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary is the 256 byte values: nothing to write

    def _encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        return_offsets = kwargs.pop("return_offsets_mapping", False)
        encoding = super()._encode_plus(text, text_pair, **kwargs)
        if not return_offsets:
            return encoding
        if text_pair is not None or kwargs.get("is_split_into_words"):
            raise NotImplementedError("return_offsets_mapping is supported for plain texts (a str or a list of str)")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if not all(isinstance(item, str) for item in texts):
            raise TypeError("return_offsets_mapping needs str inputs")
        tensor_type = kwargs.get("return_tensors")
        batched = not single or tensor_type is not None  # tensors of a single text carry a batch axis
        ids_rows = encoding["input_ids"]
        ids_rows = ids_rows.tolist() if hasattr(ids_rows, "tolist") else ids_rows
        if not batched:
            ids_rows = [ids_rows]
        rows = []
        for item, ids in zip(texts, ids_rows):
            pad_count = sum(1 for i in ids if i == self.pad_token_id)
            offsets = _char_offsets(item)[: len(ids) - pad_count]  # truncation keeps the first bytes
            padding = [(0, 0)] * pad_count
            rows.append(padding + offsets if self.padding_side == "left" else offsets + padding)
        encoding["offset_mapping"] = rows if batched else rows[0]
        tensor_type = kwargs.get("return_tensors")
        if tensor_type is not None:
            encoding.convert_to_tensors(tensor_type)
        return encoding


__all__ = ["ByteTokenizer"]
