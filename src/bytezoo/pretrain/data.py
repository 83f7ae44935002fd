"""Streaming byte data for truncated backprop: a corpus from any fsspec URL cut into parallel byte streams.

The corpus (plain text, JSON lines or CSV, optionally compressed) is read as one sequence of bytes: a text file
contributes its raw bytes, a JSON-lines or CSV file one record's text field plus ``"\\n"`` per record. Nothing is ever
loaded whole; every pass streams.

Layout (the paper's state persistence). With ``S`` global streams (batch size per process x processes), the corpus is
cut into equal *chunks* dealt round-robin to the streams, one round of ``S`` chunks at a time::

    corpus:  | c0 | c1 | ... | c(S-1) | cS | c(S+1) | ... |  (a tail shorter than one byte per chunk is dropped)
    stream j = chunk perm[j] of round 0, then of round 1, ...   (perm: a seeded permutation of the S slots per epoch)

Each optimizer step takes the next window of ``T + 1`` bytes from every stream (inputs ``[:-1]``, targets ``[1:]``;
consecutive windows overlap by one byte), so the recurrent state carried from the previous window continues the same
text. The state is reset where a chunk or a file begins, and the target that would cross such a boundary is ignored.
Every stream has exactly the same length, so every process runs the same number of steps per epoch: an uneven end of
data cannot leave one process waiting for another. Process ``r`` owns streams ``[r*B, (r+1)*B)``; it reads the whole
corpus and keeps only its own chunks, holding at most ``B`` chunks in memory.
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import fsspec
import numpy as np
import torch
from fsspec.core import url_to_fs
from fsspec.utils import infer_compression

IGNORE_INDEX = -100  # targets the loss skips (a byte predicted across a chunk or file boundary)
READ_BLOCK = 1 << 20  # bytes per read of a plain-text file
TEXT_FIELD_GUESSES = ("text", "sentence", "review", "content", "body")  # tried in order when --text-field is not set
csv.field_size_limit(1 << 30)  # a single review may exceed csv's 128 KiB default


class DataError(ValueError):
    """The data cannot be used: missing, unreadable, empty, wrong field, or too small for the batch."""


def _format_of(url: str) -> str:
    """``"text"``, ``"jsonl"`` or ``"csv"`` from the name, ignoring a compression suffix."""
    name = url.lower()
    if infer_compression(name):
        name = name.rsplit(".", 1)[0]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    return "text"


def expand_sources(patterns: Sequence[str]) -> list[str]:
    """Expand paths, URLs and globs into a sorted list of file URLs; a pattern that matches nothing is an error."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise DataError("no data given: pass --data PATH_OR_URL (repeatable, globs allowed)")
    urls: list[str] = []
    for pattern in patterns:
        try:
            fs, path = url_to_fs(pattern)
            if any(ch in path for ch in "*?["):
                matches = sorted(p for p in fs.glob(path) if fs.isfile(p))
            elif fs.isfile(path):
                matches = [path]
            elif fs.isdir(path):
                matches = sorted(p for p in fs.find(path) if not p.rsplit("/", 1)[-1].startswith("."))
            else:
                matches = []
        except (OSError, ValueError, ImportError) as error:
            raise DataError(f"cannot read {pattern!r}: {type(error).__name__}: {error}") from error
        if not matches:
            raise DataError(f"no data at {pattern!r}: no such file, or the glob matches nothing")
        urls.extend(fs.unstrip_protocol(p) if "://" in pattern else p for p in matches)
    return urls


@dataclass(frozen=True)
class Piece:
    data: bytes
    starts_file: bool  # the first piece of a file: the state resets before its first byte


def _record_text(record: dict, field: str | None, url: str, where: str) -> str:
    if field is None:
        field = next((name for name in TEXT_FIELD_GUESSES if name in record), None)
        if field is None:
            raise DataError(f"{url}: no text field among {sorted(record)}; pass --text-field NAME")
    if field not in record:
        raise DataError(f"{url}: {where} has no field {field!r} (fields: {sorted(record)}); pass --text-field NAME")
    value = record[field]
    return "" if value is None else str(value)


def read_pieces(url: str, text_field: str | None = None) -> Iterator[Piece]:
    """Stream one file's bytes. Text is raw bytes (invalid UTF-8 included); a record is its text field + ``"\\n"``."""
    kind = _format_of(url)
    try:
        opened = fsspec.open(url, "rb", compression="infer")
        raw = opened.open()
    except (OSError, ValueError, ImportError) as error:
        raise DataError(f"cannot open {url}: {type(error).__name__}: {error}") from error
    first = True
    with raw:
        if kind == "text":
            while block := raw.read(READ_BLOCK):
                yield Piece(block, first)
                first = False
            return
        # surrogateescape round-trips bytes that are not UTF-8: they come back unchanged by encode() below
        lines = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        if kind == "jsonl":
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{url}: line {number} is not JSON: {error}") from error
                if not isinstance(record, dict):
                    raise DataError(f"{url}: line {number} is not a JSON object")
                text = _record_text(record, text_field, url, f"line {number}")
                yield Piece(text.encode("utf-8", "surrogateescape") + b"\n", first)
                first = False
        else:
            delimiter = "\t" if url.lower().replace(".gz", "").endswith(".tsv") else ","
            for number, record in enumerate(csv.DictReader(lines, delimiter=delimiter), 2):
                text = _record_text(record, text_field, url, f"row {number}")
                yield Piece(text.encode("utf-8", "surrogateescape") + b"\n", first)
                first = False


def corpus_size(urls: Sequence[str], text_field: str | None = None) -> int:
    """Bytes the corpus yields (a streaming pass, except for uncompressed text whose size the filesystem knows).

    This pass also validates every file before training starts: unreadable URLs, missing fields and bad records
    raise :class:`DataError` here rather than hours into a run."""
    total = 0
    for url in urls:
        if _format_of(url) == "text" and not infer_compression(url):
            try:
                fs, path = url_to_fs(url)
                size = fs.size(path)
            except (OSError, ValueError) as error:
                raise DataError(f"cannot read {url}: {type(error).__name__}: {error}") from error
            if size is not None:
                total += int(size)
                continue
        total += sum(len(piece.data) for piece in read_pieces(url, text_field))
    return total


@dataclass(frozen=True)
class StreamLayout:
    """How a corpus of ``corpus_bytes`` is dealt to ``num_streams`` streams (identical on every process)."""

    corpus_bytes: int
    num_streams: int
    rounds: int
    chunk_bytes: int

    @classmethod
    def plan(cls, corpus_bytes: int, num_streams: int, max_chunk_bytes: int) -> StreamLayout:
        rounds = max(1, math.ceil(corpus_bytes / (num_streams * max_chunk_bytes)))
        return cls(corpus_bytes, num_streams, rounds, corpus_bytes // (num_streams * rounds))

    @property
    def stream_bytes(self) -> int:
        return self.rounds * self.chunk_bytes

    def windows(self, seq_len: int) -> int:
        """Windows of ``seq_len + 1`` bytes (stride ``seq_len``) that fit in every stream: the steps of one epoch."""
        return max(0, (self.stream_bytes - 1) // seq_len)


@dataclass
class Window:
    """One step's batch for this process."""

    input_ids: torch.Tensor  # (B, T) int64 bytes
    targets: torch.Tensor  # (B, T) int64 next bytes, IGNORE_INDEX across a boundary
    reset_mask: torch.Tensor  # (B, T) bool, True: zero the state before this position


class ByteStreams:
    """This process's ``batch_size`` streams of one epoch; iterate for :class:`Window` s.

    Args:
        urls: the corpus files, in order (:func:`expand_sources`).
        layout: from :meth:`StreamLayout.plan` over the corpus size.
        first_stream, batch_size: this process owns global streams ``[first_stream, first_stream + batch_size)``.
        seq_len: T; each window holds T + 1 bytes.
        seed, epoch: choose the file order and the stream permutation (the same on every process).
        start_window: skip this many windows without building them (resuming mid-epoch).
    """

    def __init__(self, urls: Sequence[str], layout: StreamLayout, *, first_stream: int, batch_size: int, seq_len: int,
                 text_field: str | None = None, seed: int = 0, epoch: int = 0, start_window: int = 0):
        self.layout, self.seq_len, self.batch_size = layout, seq_len, batch_size
        self.num_windows = layout.windows(seq_len)
        self.window = start_window
        rng = random.Random(f"{seed}/{epoch}")
        self.urls = list(urls)
        if epoch > 0 and len(self.urls) > 1:  # epoch 0 reads files in the given order; later epochs shuffle them
            rng.shuffle(self.urls)
        slot_of_stream = list(range(layout.num_streams))
        if epoch > 0:
            rng.shuffle(slot_of_stream)
        # own stream i takes slot slot_of_stream[first_stream + i] of every round
        self._owner = {slot_of_stream[first_stream + i]: i for i in range(batch_size)}
        self.text_field = text_field
        self._chunks = self._read_chunks()
        self._buffers = [np.zeros(0, np.uint8) for _ in range(batch_size)]
        self._buffer_start = 0  # stream offset of each buffer's first byte (the same for all streams)
        self._resets: list[list[int]] = [[] for _ in range(batch_size)]  # stream offsets where the state resets
        self._next_round = 0

    def __len__(self) -> int:
        return self.num_windows - self.window

    def _read_chunks(self) -> Iterator[tuple[bytes, list[int]]]:
        """The corpus as chunks of ``chunk_bytes``, each with the offsets where a file begins inside it."""
        size, total = self.layout.chunk_bytes, self.layout.rounds * self.layout.num_streams
        pending, file_starts, emitted = bytearray(), [], 0
        for url in self.urls:
            for piece in read_pieces(url, self.text_field):
                if piece.starts_file:
                    file_starts.append(len(pending))
                pending += piece.data
                while len(pending) >= size:
                    yield bytes(pending[:size]), [s for s in file_starts if s < size]
                    emitted += 1
                    if emitted == total:
                        return
                    del pending[:size]
                    file_starts = [s - size for s in file_starts if s >= size]
        raise DataError(f"the corpus ended early ({emitted} of {total} chunks): did the files change since the start?")

    def _read_round(self) -> None:
        """Append the next round's chunk to every owned stream, and note its resets (chunk start, file starts)."""
        offset = self._next_round * self.layout.chunk_bytes
        for slot in range(self.layout.num_streams):
            chunk, file_starts = next(self._chunks)
            stream = self._owner.get(slot)
            if stream is None:
                continue
            self._buffers[stream] = np.concatenate([self._buffers[stream], np.frombuffer(chunk, np.uint8)])
            self._resets[stream].extend(sorted({offset, *(offset + s for s in file_starts)}))
        self._next_round += 1

    def _ensure(self, end: int) -> None:
        """Buffer every stream up to stream offset ``end``, dropping what lies before the current window."""
        start = self.window * self.seq_len
        while True:
            drop = min(start - self._buffer_start, len(self._buffers[0]))
            if drop > 0:  # bytes (or, when resuming, whole rounds) already consumed
                self._buffers = [buffer[drop:] for buffer in self._buffers]
                self._buffer_start += drop
                self._resets = [[r for r in resets if r >= start] for resets in self._resets]
            if self._buffer_start + len(self._buffers[0]) >= end:
                return
            self._read_round()

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        if self.window >= self.num_windows:
            raise StopIteration
        T = self.seq_len
        start = self.window * T
        self._ensure(start + T + 1)
        lo = start - self._buffer_start
        window = np.stack([buffer[lo : lo + T + 1] for buffer in self._buffers]).astype(np.int64)  # (B, T + 1)
        reset = np.zeros((self.batch_size, T + 1), dtype=bool)  # True at offsets where a chunk or a file begins
        for stream, resets in enumerate(self._resets):
            for offset in resets:
                if offset > start + T:
                    break
                reset[stream, offset - start] = True
        targets = window[:, 1:].copy()
        targets[reset[:, 1:]] = IGNORE_INDEX  # never predict the first byte of a new chunk or file from the old one
        self.window += 1
        return Window(torch.from_numpy(window[:, :-1].copy()), torch.from_numpy(targets), torch.from_numpy(reset[:, :-1].copy()))
