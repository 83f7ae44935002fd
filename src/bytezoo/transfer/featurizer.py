"""Features of texts from any zoo model, in any of its pooling modes (the final cell state, the papers' choice; the
final hidden state; the mean output: :data:`bytezoo.zoo.recurrent_lm.POOLINGS`), as a scikit-learn transformer.

>>> from bytezoo.transfer import Featurizer
>>> features = Featurizer("outputs/demo/model").fit_transform(["great film", "dull film"])  # doctest: +SKIP
>>> features.shape                                                                          # doctest: +SKIP
(2, 4096)

How the work is laid out, and why it is exact:

* **Packed streams** (families whose resets cost nothing per position: ``resets_per_position``, the mLSTM and the
  Transformer). ``batch_size`` rows read texts back to back, each text starting from the initial state (a
  ``reset_mask`` at its first byte), so every row stays busy until the last few texts: the recurrence's products run
  at the full batch all the time instead of shrinking as short texts finish (at H=4096 the weights are streamed
  from memory once per step whatever the batch, so a shrinking batch wastes most of the time). Texts are dealt
  longest first to the row with the fewest bytes so far, so the rows end within one text of each other. A text's
  feature is read from the per-position values (the cell state, or the output) by the pooling core
  (:class:`~bytezoo.zoo.recurrent_lm.TextPooling`), which keeps sums only for the texts a chunk reads.
* **Sorted batches** (families that split the time axis at every reset, the LSTM and GRU): texts sorted by length
  (longest first) are cut into batches of ``batch_size``; finished texts drop out at chunk ends (the rows still
  running are a prefix of the batch), and a final-state feature is read from each row's final state.
* Either way the rows are read in chunks of at most ``chunk_size`` steps with the recurrent state carried from
  chunk to chunk, so memory stays bounded whatever the length (a 1 MB review costs as much memory as a 1 kB one).
  Shorter rows are padded on the right and masked; the model *holds* the state at masked positions and restarts it
  at a reset, so a text's features never depend on what else is in its batch or its row.
* ``preprocess="openai"`` reproduces the original encoder exactly (``html.unescape``, newlines to spaces, ``strip``,
  then ``"\\n "`` before and ``" "`` after, UTF-8 bytes), read from a zero state; with the original weights converted
  by ``bytezoo convert openai`` the final-cell features are the original encoder's.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from typing import Any, Iterable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from bytezoo.errors import InvalidArgumentError

from .config import DTYPES, PREPROCESSORS  # the allowed values, shared with the command line
FEATURE_CACHE_FORMAT = 1  # bump when the meaning of cached features changes


def preprocess_openai(text: str) -> bytes:
    """The original encoder's ``preprocess``, on the text pretraining reads (:func:`bytezoo.data.text.model_text`:
    HTML entities unescaped, every kind of line break a space), stripped, ``"\\n "`` before and ``" "`` after, as
    UTF-8 (lone surrogates from undecodable input bytes go back to those bytes)."""
    from bytezoo.data.text import openai_bytes

    return openai_bytes(text)


def text_to_bytes(text: str | bytes, preprocess: str) -> bytes:
    """One text as the bytes the model reads. ``bytes`` input is taken as already encoded (preprocess still applies)."""
    if isinstance(text, (bytes, bytearray)):
        if preprocess == "none":
            return bytes(text)
        text = bytes(text).decode("utf-8", errors="surrogateescape")
    if preprocess == "openai":
        return preprocess_openai(text)
    return text.encode("utf-8", errors="surrogateescape")


def load_language_model(model: Any):
    """A zoo causal LM (with ``.model`` and ``.lm_head``) from a checkpoint directory, a hub/fsspec URL, or a model
    object (a causal LM, or a bare recurrent body, which is returned as it is)."""
    if isinstance(model, (str, os.PathLike)):
        import bytezoo

        return bytezoo.from_pretrained(str(model))
    if hasattr(model, "model") and hasattr(getattr(model, "model"), "initial_state"):
        return model
    if hasattr(model, "initial_state"):
        return model
    raise TypeError(
        f"model must be a checkpoint directory, a hub URL, or a bytezoo model object; got {type(model).__name__}"
    )


def recurrent_body(language_model):
    """The recurrent body (``MLSTMModel`` / ``ByteLSTMModel``) of a causal LM, or the body itself."""
    body = getattr(language_model, "model", language_model)
    if not hasattr(body, "initial_state"):
        raise TypeError(f"{type(language_model).__name__} is not a bytezoo recurrent model (no initial_state)")
    return body


def model_fingerprint(model) -> str:
    """sha256 over the model's config and every weight: the model half of the feature-cache key."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        described = config.to_dict()
        described.pop("kernel", None)  # a runtime choice, not part of what the model computes
        described.pop("transformers_version", None)
        digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    digest.update(weights_fingerprint(model).encode())
    return digest.hexdigest()


def weights_fingerprint(model) -> str:
    """sha256 over the weights of the model's body (names, dtypes, shapes and values): what makes its features. A
    causal LM and a classifier with the same body weights share it; any changed weight changes it. Saved beside a
    transfer classifier, so that it is never applied to another model's features unknowingly."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(recurrent_body(model).state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(encoded: Sequence[bytes]) -> str:
    """sha256 over the texts' bytes, each prefixed by its length so that no two lists collide."""
    digest = hashlib.sha256()
    for item in encoded:
        digest.update(len(item).to_bytes(8, "little"))
        digest.update(item)
    return digest.hexdigest()


class Featurizer(TransformerMixin, BaseEstimator):
    """Turns a list of texts into an array of features from a byte-level zoo model.

    Args:
        model: a checkpoint directory, a hub URL (``s3://…/name@latest``), or a model object
            (any zoo causal LM, e.g. ``MLSTMForCausalLM``, or its body). Loaded in :meth:`fit`.
        pooling: the text feature, one of the model's pooling modes (:data:`bytezoo.zoo.recurrent_lm.POOLINGS`:
            ``"final_cell"``, the last layer's cell state after the last byte, the papers' feature, for families with
            a cell; ``"final_hidden"``, its hidden state / output there; ``"mean"``, its outputs averaged over the
            bytes); ``None`` (the default): the model's own (:func:`~bytezoo.zoo.recurrent_lm.default_pooling`).
            Checked against the model in :meth:`fit`.
        preprocess: ``"openai"`` (the original encoder's preprocessing; see the module docstring) or ``"none"``
            (the text's UTF-8 bytes as they are).
        batch_size: rows read in parallel (texts per batch where texts are not packed; see above). 512 by default:
            with packed rows the products stay at this many rows, and bigger products run faster per row (one
            thread, SST sentences: mlstm-256 fp32 1.07x batch 128; both cores, mlstm-4096 bf16 1.38x batch 128 and
            1.12x batch 256; fp32 at H=4096 is as fast at 512 as at 128, where oneDNN's packed weights help:
            benchmarks/results/featurize-4096.md). Memory per chunk grows with it: about
            ``batch_size * chunk_size * 3H`` floats (512 x 32 x 3 x 4096 x 4 bytes = 0.8 GB at H=4096 fp32).
        chunk_size: most steps read per forward call; bounds memory (see ``batch_size``).
            Where texts are not packed, finished texts leave the batch at chunk ends, so a small chunk wastes few
            padded steps: 32 read SST twice as fast as 256 at H=1024, batch 128
            (benchmarks/results/transfer-throughput.json).
        device: torch device to run on (``"cpu"``, ``"cuda"``…).
        dtype: ``"float32"``, or ``"bfloat16"`` (autocast: matrix products in bf16, the state carried in fp32).
        cache_dir: optional directory or fsspec URL of an on-disk feature cache keyed by model, options and data
            hashes; ``None`` disables it.
        progress: show a progress bar (``None``: only on a terminal).

    A model object is used as it is (put in eval mode); it is copied only when it must move to another device or
    dtype, so the caller's model is never changed.

    Learned attributes: ``language_model_`` (the loaded causal LM or body), ``pooling_`` (the mode, resolved and
    checked against the model), ``text_pooling_`` (the :class:`~bytezoo.zoo.recurrent_lm.TextPooling` that reads it),
    ``n_features_out_``, ``model_fingerprint_`` (when caching), ``extraction_stats_`` (texts, bytes, characters,
    seconds of the last :meth:`transform`).

    An empty text (``preprocess="none"``) gets the zero initial state's features (mean pooling: zeros).
    """

    def __init__(
        self,
        model: Any = None,
        *,
        pooling: str | None = None,
        preprocess: str = "openai",
        batch_size: int = 512,
        chunk_size: int = 32,
        device: str = "cpu",
        dtype: str = "float32",
        cache_dir: str | None = None,
        progress: bool | None = None,
    ):
        self.model = model
        self.pooling = pooling
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.device = device
        self.dtype = dtype
        self.cache_dir = cache_dir
        self.progress = progress

    # --- scikit-learn protocol --------------------------------------------------------------------------------------
    def fit(self, X=None, y=None):
        """Validate the options and load the model; the texts are not needed (features are unsupervised)."""
        import torch

        from bytezoo.zoo.recurrent_lm import TextPooling

        if self.model is None:
            raise InvalidArgumentError("Featurizer needs model=: a checkpoint directory, a hub URL, or a model object")
        for name, value, allowed in (("preprocess", self.preprocess, PREPROCESSORS), ("dtype", self.dtype, DTYPES)):
            if value not in allowed:
                raise InvalidArgumentError(f"Featurizer {name}={value!r}; choose one of {allowed}")
        for name in ("batch_size", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"Featurizer {name} must be a positive integer; got {value!r}")
        _check_device(self.device)
        if X is not None:
            _check_texts(X)
        language_model = load_language_model(self.model)
        target = torch.device(self.device)
        if target.type == "cuda" and target.index is None:
            target = torch.device("cuda", torch.cuda.current_device())
        if language_model.device != target or language_model.dtype != torch.float32:
            if not isinstance(self.model, (str, os.PathLike)):
                language_model = copy.deepcopy(language_model)  # never move or cast the caller's model
            language_model = language_model.to(device=target, dtype=torch.float32)
        body = recurrent_body(language_model)
        self.text_pooling_ = TextPooling(body, self.pooling)  # the model's own mode for None; PoolingError otherwise
        self.pooling_ = self.text_pooling_.mode
        self.language_model_ = language_model.eval()
        self.n_features_out_ = int(body.config.hidden_size)
        if self.cache_dir is not None:
            self.model_fingerprint_ = model_fingerprint(language_model)
        return self

    def transform(self, X) -> np.ndarray:
        """Features of each text: (n_texts, hidden_size) float32."""
        check_is_fitted(self, "language_model_")
        texts = _check_texts(X)
        encoded = [text_to_bytes(text, self.preprocess) for text in texts]
        started = time.perf_counter()
        cache_path = self._cache_path(encoded)
        features = _read_cached(cache_path) if cache_path is not None else None
        from_cache = features is not None
        if features is None:
            features = self.transform_bytes(encoded)
            if cache_path is not None:
                _write_cached(cache_path, features)
        seconds = time.perf_counter() - started
        total_bytes = sum(len(item) for item in encoded)
        self.extraction_stats_ = {
            "texts": len(texts),
            "bytes": total_bytes,
            "characters": sum(len(text) for text in texts),
            "seconds": seconds,
            "bytes_per_second": total_bytes / seconds if seconds > 0 else float("inf"),
            "from_cache": from_cache,
        }
        return features

    def encode(self, inputs, prompt_name: str | None = None, prompt: str | None = None, batch_size: int | None = None,
               show_progress_bar: bool | None = None, output_value: str | None = "sentence_embedding",
               precision: str = "float32", convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               device: str | None = None, normalize_embeddings: bool = False, truncate_dim: int | None = None,
               pool: dict | None = None, chunk_size: int | None = None, **kwargs):
        """The features as sentence embeddings, with ``SentenceTransformer.encode``'s signature and conventions, for
        embedding benchmarks (MTEB, SentEval) and tools written for sentence-transformers (docs/embeddings.md).

        ``inputs``: a text (returns a 1-d array of ``hidden_size``) or a list of texts (an ``(n, hidden_size)`` array).
        The numbers are :meth:`transform`'s (its pooling, preprocessing, dtype and cache); the model is loaded on
        first use if :meth:`fit` was not called. ``batch_size``: texts per :meth:`transform` call, which bounds memory
        on a long list (default ``None``: all at once, exactly :meth:`transform`'s result; where sentence-transformers
        defaults to 32, a smaller group only changes float rounding). Long texts are read ``chunk_size`` bytes at a
        time in any case (the Featurizer's own ``chunk_size``), so memory never grows with a text's length.
        ``prompt`` is prepended to every text. ``normalize_embeddings``: unit L2 norm per row; ``truncate_dim``: the
        first units only; ``convert_to_tensor``: a torch tensor; ``convert_to_numpy=False``: a list of 1-d tensors.

        What a byte-level LM has no use for is refused by name rather than ignored: ``prompt_name`` (no named
        prompts), ``output_value`` other than ``"sentence_embedding"``, ``precision`` other than ``"float32"``, a
        ``device`` other than the Featurizer's, multi-process ``pool`` and its ``chunk_size``. Other keyword arguments
        (what sentence-transformers hands to a model's forward, e.g. ``task``) have no meaning here and are refused.
        """
        import torch

        unsupported = {"prompt_name": prompt_name is not None, "pool": pool is not None,
                       "chunk_size": chunk_size is not None, "output_value": output_value != "sentence_embedding",
                       "precision": precision != "float32",
                       "device": device is not None and torch.device(device) != torch.device(self.device)}
        refused = [name for name, given in unsupported.items() if given] + sorted(kwargs)
        if refused:
            raise InvalidArgumentError(
                f"Featurizer.encode: {', '.join(refused)} not supported (a byte-level LM's features: one float32 "
                f"vector per text, on device={self.device!r}, no named prompts, no multi-process pool); drop the "
                "argument")
        whole = isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool)
        if batch_size is not None and (not whole or batch_size < 1):
            raise InvalidArgumentError(
                f"Featurizer.encode batch_size must be a positive integer or None; got {batch_size!r}")
        single = isinstance(inputs, (str, bytes, bytearray))
        texts = _check_texts([inputs] if single else inputs)
        if prompt:
            texts = [prompt + (text if isinstance(text, str) else bytes(text).decode("utf-8", "surrogateescape"))
                     for text in texts]
        if not hasattr(self, "language_model_"):
            self.fit()
        group = batch_size or max(len(texts), 1)
        progress, self.progress = self.progress, show_progress_bar  # transform's bar; the estimator's setting restored
        try:
            parts = [self.transform(texts[start : start + group]) for start in range(0, len(texts), group)]
        finally:
            self.progress = progress
        embeddings = np.concatenate(parts) if parts else np.zeros((0, self.n_features_out_), dtype=np.float32)
        if truncate_dim is not None:
            embeddings = embeddings[:, :truncate_dim]
        if normalize_embeddings:
            norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
            embeddings = embeddings / np.where(norms > 0, norms, 1.0)
        if convert_to_tensor:
            result = torch.from_numpy(np.ascontiguousarray(embeddings))
        elif not convert_to_numpy:
            result = list(torch.from_numpy(np.ascontiguousarray(embeddings)))
        else:
            result = embeddings
        return result[0] if single else result

    def get_sentence_embedding_dimension(self) -> int:
        """The embedding width ``encode`` returns (sentence-transformers' name for it): the model's hidden size."""
        if not hasattr(self, "n_features_out_"):
            self.fit()
        return self.n_features_out_

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"{self.pooling_}_{unit}" for unit in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags

    # --- the work ---------------------------------------------------------------------------------------------------
    def transform_bytes(self, encoded: Sequence[bytes]) -> np.ndarray:
        """Features of already-encoded byte strings (no preprocessing, no cache)."""
        import torch
        from tqdm.auto import tqdm

        from bytezoo.threads import ensure_threads

        check_is_fitted(self, "language_model_")
        body = recurrent_body(self.language_model_)
        ensure_threads(body.device, coarse=True)  # a thread count that holds up beside other processes
        hidden = self.n_features_out_
        features = np.zeros((len(encoded), hidden), dtype=np.float32)
        if not encoded:
            return features
        lengths = np.fromiter((len(item) for item in encoded), dtype=np.int64, count=len(encoded))
        order = np.argsort(-lengths, kind="stable")  # longest first: running rows are always a prefix of a batch
        autocast = torch.autocast(body.device.type, dtype=torch.bfloat16) if self.dtype == "bfloat16" else _no_context()
        bar = tqdm(total=int(lengths.sum()), unit="B", unit_scale=True, desc="features",
                   disable=_disable_bar(self.progress))
        with bar, torch.inference_mode(), autocast:
            if getattr(body, "resets_per_position", False):
                self._packed_features(encoded, lengths, body, features, bar)
                return features
            for start in range(0, len(order), self.batch_size):
                ensure_threads(body.device, coarse=True)
                rows = order[start : start + self.batch_size]
                pooled = self._batch_features([encoded[row] for row in rows], body)  # (B, H)
                features[rows] = pooled.float().cpu().numpy()
                bar.update(int(lengths[rows].sum()))
        return features

    def _packed_features(self, encoded: Sequence[bytes], lengths: np.ndarray, body, features: np.ndarray, bar) -> None:
        """Fill ``features`` (n, H) reading the texts back to back in ``batch_size`` rows (see the module docstring).
        Each chunk's positions are given to the texts they belong to, and the pooling core sums them: only the texts
        the chunk reads have a row of sums, and a finished text's feature is written out at once."""
        import heapq

        import torch

        from bytezoo.threads import ensure_threads
        from bytezoo.zoo.recurrent_lm import select_streams

        device, hidden, pooling = body.device, self.n_features_out_, self.text_pooling_
        texts = np.argsort(-lengths, kind="stable")
        # empty texts keep zero features (the pooling core's for a text without bytes)
        texts = texts[lengths[texts] > 0]
        if len(texts) == 0:
            return
        rows = min(self.batch_size, len(texts))
        # Longest first, each text to the row with the fewest bytes so far (LPT scheduling): rows end within one
        # text's length of each other.
        start = np.zeros(len(encoded), dtype=np.int64)  # a text's first position in its row
        row_of = np.zeros(len(encoded), dtype=np.int64)
        heap = [(0, row) for row in range(rows)]
        for text in texts:
            filled, row = heapq.heappop(heap)
            start[text], row_of[text] = filled, row
            heapq.heappush(heap, (filled + int(lengths[text]), row))
        row_length = np.zeros(rows, dtype=np.int64)
        for filled, row in heap:
            row_length[row] = filled
        # Rows renumbered longest first, so the rows still running at any step are a prefix (finished rows drop out).
        longest_first = np.argsort(-row_length, kind="stable")
        new_number = np.empty(rows, dtype=np.int64)
        new_number[longest_first] = np.arange(rows)
        row_of[texts] = new_number[row_of[texts]]
        row_length = row_length[longest_first]
        width = int(row_length[0])
        ids = np.zeros((rows, width), dtype=np.uint8)  # (R, L) every row's bytes, texts back to back
        for text in texts:
            ids[row_of[text], start[text] : start[text] + lengths[text]] = np.frombuffer(encoded[text], dtype=np.uint8)
        # Who owns a position: the texts sorted by (row, start); a position belongs to the last text starting at or
        # before it in its row (rows are full up to their length).
        by_place = texts[np.lexsort((start[texts], row_of[texts]))]
        place = row_of[by_place] * width + start[by_place]  # (n,) sorted
        end = start + lengths  # a text's end (exclusive) in its row
        carried = np.zeros(0, dtype=np.int64)  # texts read on into the next chunk: at most one per row
        carry = pooling.new_carry(0, hidden, device)
        state = body.initial_state(rows)
        for chunk_start in range(0, width, self.chunk_size):
            ensure_threads(device, coarse=True)  # long extractions see the load change: a clock read per chunk
            chunk_end = min(chunk_start + self.chunk_size, width)
            running = int((row_length > chunk_start).sum())  # a prefix: rows are sorted longest first
            state = select_streams(state, slice(0, running))
            positions = np.arange(chunk_start, chunk_end)
            real = positions[None, :] < row_length[:running, None]  # (R', T)
            flat = np.arange(running)[:, None] * width + positions[None, :]  # (R', T): places in the packed rows
            owner = by_place[np.searchsorted(place, flat, "right") - 1]
            chunk_texts = np.unique(owner[real])  # sorted; includes every carried text
            local = np.where(real, np.searchsorted(chunk_texts, owner), len(chunk_texts))  # (R', T); padding: spare
            resets = real & (start[owner] == positions[None, :])  # (R', T) a text's first byte
            out = body(
                torch.from_numpy(ids[:running, chunk_start:chunk_end]).long().to(device),
                state=state,
                attention_mask=None if real.all() else torch.from_numpy(real).long().to(device),
                reset_mask=torch.from_numpy(resets).to(device) if resets.any() else None,
                use_cache=True,
                return_dict=True,
                **pooling.forward_options(),
            )
            state = out.state
            sums = pooling.new_carry(len(chunk_texts), hidden, device)
            if len(carried):  # the sums of texts begun in earlier chunks
                at = torch.from_numpy(np.searchsorted(chunk_texts, carried)).to(device)
                sums = tuple(part.index_copy(0, at, earlier[:-1]) for part, earlier in zip(sums, carry))
            sums = pooling.read(sums, out, torch.from_numpy(local).to(device))
            finished = end[chunk_texts] <= chunk_end
            if finished.any():
                done = torch.from_numpy(np.flatnonzero(finished)).to(device)
                features[chunk_texts[finished]] = pooling.features(_take(sums, done)).cpu().numpy()
            carried = chunk_texts[~finished]
            carry = _take(sums, torch.from_numpy(np.flatnonzero(~finished)).to(device))
            bar.update(int(real.sum()))

    def _batch_features(self, batch: list[bytes], body):
        """(B, H) features of one batch of byte strings sorted longest first, text r in row r; any zoo family (the
        pooling core reads the state through its named parts, never by position)."""
        import torch

        from bytezoo.zoo.recurrent_lm import select_streams

        device, pooling = body.device, self.text_pooling_
        lengths = torch.tensor([len(item) for item in batch])  # (B,), non-increasing
        carry = pooling.new_carry(len(batch), self.n_features_out_, device)  # an empty text: zeros
        state = body.initial_state(len(batch))
        longest = int(lengths[0])
        for chunk_start in range(0, longest, self.chunk_size):
            running = int((lengths > chunk_start).sum())  # rows with bytes left: a prefix, since sorted longest first
            state = select_streams(state, slice(0, running))  # finished rows drop out: their sums stay in the carry
            chunk_len = min(self.chunk_size, longest - chunk_start)
            ids = torch.zeros(running, chunk_len, dtype=torch.long)  # (B', T)
            mask = torch.zeros(running, chunk_len, dtype=torch.long)  # (B', T): 1 = real byte, 0 = padding
            for row in range(running):
                piece = batch[row][chunk_start : chunk_start + chunk_len]
                ids[row, : len(piece)] = torch.frombuffer(bytearray(piece), dtype=torch.uint8)
                mask[row, : len(piece)] = 1
            mask = mask.to(device) if not bool(mask.all()) else None
            out = body(ids.to(device), state=state, attention_mask=mask, use_cache=True, return_dict=True,
                       **pooling.forward_options(rows=True))
            state = out.state
            carry = pooling.read_rows(carry, out, mask)  # rows 0..B'-1: the running prefix
        return pooling.features(carry)  # (B, H)

    # --- cache ------------------------------------------------------------------------------------------------------
    def _cache_path(self, encoded: Sequence[bytes]) -> str | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(
            json.dumps(
                {
                    "format": FEATURE_CACHE_FORMAT,
                    "model": self.model_fingerprint_,
                    "data": data_fingerprint(encoded),
                    "pooling": self.pooling_,
                    "dtype": self.dtype,
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        return f"{str(self.cache_dir).rstrip('/')}/features-{key[:32]}.safetensors"


def _take(carry, index):
    """The pooling core's sums of the texts at rows ``index`` of ``carry``, with a fresh spare row (padding's) last."""
    import torch

    return tuple(torch.cat([part.index_select(0, index), part.new_zeros((1, *part.shape[1:]))]) for part in carry)


class _no_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _disable_bar(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


def _check_device(device) -> None:
    """A device torch can name and, for a GPU, one this machine has."""
    import torch

    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidArgumentError(
            f"device={device!r} is not a torch device ({error}); e.g. cpu, cuda, cuda:1") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device={device!r}, but torch sees no CUDA GPU here; use device='cpu'")
    if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
        raise InvalidArgumentError(
            f"device={device!r}, but torch sees {torch.cuda.device_count()} CUDA GPU(s) here (cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}); check CUDA_VISIBLE_DEVICES"
        )


def _check_texts(X) -> list:
    """The texts as a list; a bare string is rejected (it would be read as a list of characters)."""
    if isinstance(X, (str, bytes)):
        raise TypeError("Featurizer expects a list of texts, not a single string; wrap it: [text]")
    if hasattr(X, "ndim") and getattr(X, "ndim") > 1:
        shape = tuple(X.shape)
        if len(shape) == 2 and shape[1] == 1:
            X = np.asarray(X).ravel()
        else:
            raise ValueError(f"Featurizer expects a 1-d list of texts; got an array of shape {shape}")
    texts = list(X) if isinstance(X, Iterable) else None
    if texts is None:
        raise TypeError(f"Featurizer expects a list of texts; got {type(X).__name__}")
    for row, text in enumerate(texts):
        if not isinstance(text, (str, bytes, bytearray)):
            raise TypeError(f"text {row} is {type(text).__name__} ({text!r:.40}), not a string")
    return texts


def _read_cached(path: str) -> np.ndarray | None:
    import fsspec
    from safetensors.numpy import load

    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        return None
    with fs.open(fs_path, "rb") as handle:
        try:
            return load(handle.read())["features"]
        except Exception:  # a damaged cache entry is recomputed, never trusted
            return None


def _write_cached(path: str, features: np.ndarray) -> None:
    """Write to a temporary name, then move into place, so readers never see a partial entry."""
    import fsspec
    from safetensors.numpy import save

    fs, fs_path = fsspec.core.url_to_fs(path)
    fs.makedirs(fs_path.rsplit("/", 1)[0], exist_ok=True)
    temporary = f"{fs_path}.{os.getpid()}.partial"
    with fs.open(temporary, "wb") as handle:
        handle.write(save({"features": np.ascontiguousarray(features)}))
    fs.mv(temporary, fs_path)


__all__ = ["Featurizer", "preprocess_openai", "text_to_bytes", "load_language_model", "recurrent_body",
           "model_fingerprint", "weights_fingerprint", "PREPROCESSORS"]
