"""Byte streams for truncated backprop: a packed corpus (:mod:`bytezoo.data.packed`) cut into parallel streams, each
process reading only the bytes of its own streams.

Layout (the paper's state persistence). With ``S`` global streams (batch size per process x processes), the corpus is
cut into equal *chunks* dealt round-robin to the streams, one round of ``S`` chunks at a time::

    corpus:  | c0 | c1 | ... | c(S-1) | cS | c(S+1) | ... |  (a tail shorter than one byte per chunk is dropped)
    stream j = chunk perm[j] of round 0, then of round 1, ...   (perm: a seeded permutation of the S slots per epoch)

Each optimizer step takes the next window of ``T + 1`` bytes from every stream (inputs ``[:-1]``, targets ``[1:]``;
consecutive windows overlap by one byte), so the recurrent state carried from the previous window continues the same
text. The state is reset where a chunk or a document (a source file) begins, and the target that would cross such a
boundary is ignored. Every stream has exactly the same length, so every process runs the same number of steps per
epoch: an uneven end of data cannot leave one process waiting for another. Process ``r`` owns streams
``[r*B, (r+1)*B)`` and reads just their chunks, one round ahead in a background thread: about corpus / processes
bytes per process and epoch, and no pass over the corpus at start-up (its size is in the index). Streams are global,
so a run can resume on another number of processes at the same global batch.
"""
from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from bytezoo.data.formats import SourceError, expand_sources  # noqa: F401  (expand_sources: part of this API)
from bytezoo.data.packed import PackedCorpus

IGNORE_INDEX = -100  # targets the loss skips (a byte predicted across a chunk or document boundary)

DataError = SourceError  # the one error type of the data layer: missing, unreadable, empty, wrong field, too small


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

    def window_ranges(self, seq_len: int) -> list[tuple[int, int]]:
        """``(offset, length)`` of every byte one epoch's windows read (inputs and targets), merged and in order.

        Each stream reads its first ``windows * seq_len + 1`` bytes: whole chunks, then a head of its last chunk;
        what lies beyond (the tail of the corpus, the rest of the last chunks) is never read. The offsets are the
        epoch's; epoch 0 (what evaluation reads) keeps the documents in packed order, so there they are corpus offsets.
        """
        covered = self.windows(seq_len) * seq_len + 1 if self.windows(seq_len) else 0
        ranges: list[tuple[int, int]] = []
        for number in range(self.rounds):
            take = min(self.chunk_bytes, covered - number * self.chunk_bytes)
            if take <= 0:
                break
            for slot in range(self.num_streams):
                offset = (number * self.num_streams + slot) * self.chunk_bytes
                if ranges and sum(ranges[-1]) == offset:
                    ranges[-1] = (ranges[-1][0], ranges[-1][1] + take)
                else:
                    ranges.append((offset, take))
        return ranges


@dataclass
class Window:
    """One step's batch for this process."""

    input_ids: torch.Tensor  # (B, T) int64 bytes
    targets: torch.Tensor  # (B, T) int64 next bytes, IGNORE_INDEX across a boundary
    reset_mask: torch.Tensor  # (B, T) bool, True: zero the state before this position


class EpochView:
    """The corpus as one epoch reads it: documents in their packed order (epoch 0) or a seeded permutation of them
    (later epochs), concatenated. ``read`` and ``documents_between`` work in this epoch's offsets."""

    def __init__(self, corpus: PackedCorpus, rng: random.Random | None):
        starts = [int(d) for d in corpus.document_starts]
        ends = starts[1:] + [corpus.total_bytes]
        order = list(range(len(starts)))
        if rng is not None and len(order) > 1:
            rng.shuffle(order)
        self.corpus = corpus
        self.segments: list[tuple[int, int, int]] = []  # (epoch offset, corpus offset, length) per document
        offset = 0
        for doc in order:
            length = ends[doc] - starts[doc]
            self.segments.append((offset, starts[doc], length))
            offset += length
        self._segment_starts = [segment[0] for segment in self.segments]

    def read_many(self, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
        """Epoch bytes ``[offset, offset + length)`` for each range, fetched from the corpus in one batch."""
        corpus_ranges, owners = [], []
        for number, (offset, length) in enumerate(ranges):
            end = offset + length
            index = bisect.bisect_right(self._segment_starts, offset) - 1
            while offset < end:
                seg_start, corpus_start, seg_length = self.segments[index]
                take = min(end, seg_start + seg_length) - offset
                corpus_ranges.append((corpus_start + offset - seg_start, take))
                owners.append(number)
                offset += take
                index += 1
        parts = self.corpus.read_many(corpus_ranges)
        out: list[list[np.ndarray]] = [[] for _ in ranges]
        for owner, part in zip(owners, parts):
            out[owner].append(part)
        return [p[0] if len(p) == 1 else np.concatenate(p) if p else np.zeros(0, np.uint8) for p in out]

    def read(self, offset: int, length: int) -> np.ndarray:
        return self.read_many([(offset, length)])[0]

    def documents_between(self, start: int, end: int) -> list[int]:
        """Epoch offsets in ``[start, end)`` where a document begins."""
        lo, hi = bisect.bisect_left(self._segment_starts, start), bisect.bisect_left(self._segment_starts, end)
        return self._segment_starts[lo:hi]


class ByteStreams:
    """This process's ``batch_size`` streams of one epoch; iterate for :class:`Window` s.

    Args:
        corpus: the packed corpus (:meth:`bytezoo.data.PackedCorpus.open`).
        layout: from :meth:`StreamLayout.plan` over the corpus size.
        first_stream, batch_size: this process owns global streams ``[first_stream, first_stream + batch_size)``.
        seq_len: T; each window holds T + 1 bytes.
        seed, epoch: choose the document order and the stream permutation (the same on every process).
        start_window: skip this many windows without reading them (resuming mid-epoch).
        prefetch: read the next round's chunks in a background thread while this round trains.
    """

    def __init__(self, corpus: PackedCorpus, layout: StreamLayout, *, first_stream: int, batch_size: int, seq_len: int,
                 seed: int = 0, epoch: int = 0, start_window: int = 0, prefetch: bool = True):
        self.layout, self.seq_len, self.batch_size = layout, seq_len, batch_size
        self.num_windows = layout.windows(seq_len)
        self.window = start_window
        rng = random.Random(f"{seed}/{epoch}")
        self.view = EpochView(corpus, rng if epoch > 0 else None)  # epoch 0 reads the documents in packed order
        slot_of_stream = list(range(layout.num_streams))
        if epoch > 0:
            rng.shuffle(slot_of_stream)
        self._slots = [slot_of_stream[first_stream + i] for i in range(batch_size)]  # own stream i -> its slot
        # skip whole rounds unread
        first_round = min(start_window * seq_len // max(layout.chunk_bytes, 1), layout.rounds)
        self._buffers = [np.zeros(0, np.uint8) for _ in range(batch_size)]
        self._buffer_start = first_round * layout.chunk_bytes  # stream offset of each buffer's first byte (all alike)
        self._resets: list[list[int]] = [[] for _ in range(batch_size)]  # stream offsets where the state resets
        self._next_round = first_round
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bytezoo-prefetch") if prefetch else None
        self._pending: tuple[int, Future] | None = None

    def __len__(self) -> int:
        return self.num_windows - self.window

    def _round(self, number: int) -> tuple[list[np.ndarray], list[list[int]]]:
        """Round ``number``'s chunk of every owned stream, with the stream offsets where the state resets in it."""
        size, streams = self.layout.chunk_bytes, self.layout.num_streams
        offsets = [(number * streams + slot) * size for slot in self._slots]  # epoch offset of each stream's chunk
        chunks = self.view.read_many([(offset, size) for offset in offsets])  # one batch: concurrent from S3
        resets = []
        for offset in offsets:
            base = number * size - offset  # epoch offset -> stream offset
            resets.append(sorted({number * size,
                                  *(base + d for d in self.view.documents_between(offset, offset + size))}))
        return chunks, resets

    def _read_round(self) -> None:
        """Append the next round to every owned stream; start reading the one after it in the background."""
        number = self._next_round
        if self._pending is not None and self._pending[0] == number:
            chunks, resets = self._pending[1].result()
        else:
            chunks, resets = self._round(number)
        self._pending = None
        if self._pool is not None and number + 1 < self.layout.rounds:
            self._pending = (number + 1, self._pool.submit(self._round, number + 1))
        for stream in range(self.batch_size):
            self._buffers[stream] = np.concatenate([self._buffers[stream], chunks[stream]])
            self._resets[stream].extend(resets[stream])
        self._next_round += 1

    def _ensure(self, end: int) -> None:
        """Buffer every stream up to stream offset ``end``, dropping what lies before the current window."""
        start = self.window * self.seq_len
        while True:
            drop = min(start - self._buffer_start, len(self._buffers[0]))
            if drop > 0:  # bytes already consumed
                self._buffers = [buffer[drop:] for buffer in self._buffers]
                self._buffer_start += drop
                self._resets = [[r for r in resets if r >= start] for resets in self._resets]
            if self._buffer_start + len(self._buffers[0]) >= end:
                return
            self._read_round()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        if self.window >= self.num_windows:
            self.close()
            raise StopIteration
        T = self.seq_len
        start = self.window * T
        self._ensure(start + T + 1)
        lo = start - self._buffer_start
        window = np.stack([buffer[lo : lo + T + 1] for buffer in self._buffers]).astype(np.int64)  # (B, T + 1)
        reset = np.zeros((self.batch_size, T + 1), dtype=bool)  # True at offsets where a chunk or a document begins
        for stream, resets in enumerate(self._resets):
            for offset in resets:
                if offset > start + T:
                    break
                if offset >= start:
                    reset[stream, offset - start] = True
        targets = window[:, 1:].copy()
        targets[reset[:, 1:]] = IGNORE_INDEX  # never predict the first byte of a new chunk or document from the old one
        self.window += 1
        return Window(torch.from_numpy(window[:, :-1].copy()), torch.from_numpy(targets),
                      torch.from_numpy(reset[:, :-1].copy()))


__all__ = ["IGNORE_INDEX", "ByteStreams", "DataError", "EpochView", "StreamLayout", "Window", "expand_sources"]
