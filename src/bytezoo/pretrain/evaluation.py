"""Bits per byte of a byte-level language model on held-out text, measured the one way bytezoo measures it: what
pretraining reports as validation BPC and what ``bytezoo evaluate`` reports are this module's numbers.

The held-out corpus is laid out as pretraining lays out its validation data (:func:`validation_layout`): a few parallel
byte streams of equal length, each a run of chunks (at most ``shard_bytes`` each) read window after window with the
recurrent state carried across windows, and reset where a chunk or a document (a source) begins; a target that would
be predicted across such a boundary is not counted. :func:`evaluate_windows` runs the model over those windows in
eval mode and sums the fp32 next-byte loss; ``bits per byte = summed NLL / counted targets / ln 2``.

>>> from bytezoo.pretrain.evaluation import evaluate_corpus                 # doctest: +SKIP
>>> evaluate_corpus(model, corpus)["bits_per_byte"]                            # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX, ByteStreams, DataError, StreamLayout

LN2 = math.log(2.0)
VAL_WINDOWS_PER_STREAM = 8  # fewer validation streams when the held-out text is short: state persistence matters


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-byte NLL in fp32 and the number of counted targets: (B, T, V), (B, T) -> (), ()."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return nll, (targets != IGNORE_INDEX).sum()


def validation_layout(corpus_bytes: int, batch_size: int, num_processes: int, seq_len: int,
                      shard_bytes: int) -> tuple[int, StreamLayout]:
    """``(streams per process, layout)`` of a held-out corpus of ``corpus_bytes``: at most ``batch_size`` streams per
    process, fewer when the text is short, so that each stream reads at least :data:`VAL_WINDOWS_PER_STREAM`
    windows of ``seq_len`` bytes (the state carried across windows is what is being measured)."""
    streams = max(1, min(batch_size, corpus_bytes // (num_processes * VAL_WINDOWS_PER_STREAM * seq_len)))
    layout = StreamLayout.plan(corpus_bytes, streams * num_processes, shard_bytes)
    if layout.windows(seq_len) == 0:
        raise DataError(f"the held-out corpus ({corpus_bytes:,} bytes) holds no {seq_len + 1}-byte window per process: "
                        f"give more text or a shorter sequence length")
    return streams, layout


def validation_windows(corpus, layout: StreamLayout, *, rank: int, streams: int, seq_len: int,
                       seed: int = 0) -> ByteStreams:
    """A fresh pass over process ``rank``'s validation windows (epoch 0: the documents in packed order)."""
    return ByteStreams(corpus, layout, first_stream=rank * streams, batch_size=streams, seq_len=seq_len, seed=seed,
                       prefetch=False)


@dataclass
class SourceSpans:
    """Where each source's bytes lie in a packed corpus, to attribute every counted target to its source."""

    starts: np.ndarray  # (S,) corpus offset of each source's first byte

    @classmethod
    def of(cls, corpus) -> SourceSpans:
        sizes = [int(source.get("bytes") or 0) for source in corpus.index.get("sources", [])]
        return cls(np.cumsum([0] + sizes[:-1]).astype(np.int64))

    def __len__(self) -> int:
        return len(self.starts)


def _target_offsets(layout: StreamLayout, first_stream: int, streams: int, window: int, seq_len: int) -> np.ndarray:
    """(B, T) corpus offsets of the bytes a window's targets predict (epoch 0: stream j reads chunk j of each round)."""
    position = window * seq_len + 1 + np.arange(seq_len)  # (T,) stream offsets of the targets
    rounds, within = np.divmod(position, layout.chunk_bytes)
    slots = first_stream + np.arange(streams)  # (B,)
    return (rounds[None, :] * layout.num_streams + slots[:, None]) * layout.chunk_bytes + within[None, :]


@torch.no_grad()
def evaluate_windows(model, windows, *, accelerator=None, device=None, autocast=None, spans: SourceSpans | None = None,
                     first_stream: int = 0, progress=None) -> dict:
    """Runs ``model`` (a zoo causal LM) over ``windows`` (a :class:`~bytezoo.pretrain.data.ByteStreams` pass) with the
    state carried from window to window, in eval mode (the mode it had is restored).

    Args:
        accelerator: pretraining's Accelerator: its device and autocast, and the sums pooled over its processes.
        device, autocast: without an accelerator, where to run (default: the model's device) and an autocast context
            factory (default: none).
        spans: attribute every counted target to the source it lies in (``windows`` must be a pass made by
            :func:`validation_windows` starting at stream ``first_stream``).
        progress: a tqdm bar to advance by the bytes of each window.

    Returns ``{"bits_per_byte", "predicted_bytes", "nll_nats"}``, plus ``"per_source"`` (a list of
    ``{"predicted_bytes", "nll_nats", "bits_per_byte"}``) with ``spans``.
    """
    device = accelerator.device if accelerator is not None else (device or next(model.parameters()).device)
    autocast = accelerator.autocast if accelerator is not None else (autocast or contextlib.nullcontext)
    was_training = model.training
    model.eval()
    state, nll_sum, count = None, torch.zeros((), device=device), torch.zeros((), device=device)
    per_source = torch.zeros(2, len(spans), dtype=torch.float64, device=device) if spans is not None else None
    try:
        with autocast():
            for number, window in enumerate(windows):
                input_ids, targets, reset = (t.to(device)
                                             for t in (window.input_ids, window.targets, window.reset_mask))
                out = model(input_ids=input_ids, state=state, reset_mask=reset, use_cache=True)
                nll, n = token_loss(out.logits, targets)
                nll_sum, count, state = nll_sum + nll, count + n, out.state
                if per_source is not None:
                    per_source += _per_source_sums(out.logits, targets, spans, windows.layout, first_stream, number)
                if progress is not None:
                    progress.update(targets.numel())
    finally:
        model.train(was_training)
    totals = torch.stack([nll_sum, count.float()])
    if accelerator is not None:
        totals = accelerator.reduce(totals, reduction="sum")
        if per_source is not None:
            per_source = accelerator.reduce(per_source, reduction="sum")
    nll_total, counted = totals[0].item(), int(totals[1].item())
    result = {"bits_per_byte": nll_total / max(counted, 1) / LN2 if counted else float("nan"),
              "predicted_bytes": counted, "nll_nats": nll_total}
    if per_source is not None:
        result["per_source"] = [{"predicted_bytes": int(n), "nll_nats": float(s),
                                 "bits_per_byte": float(s) / n / LN2 if n else None}
                                for s, n in zip(per_source[0].tolist(), per_source[1].tolist())]
    return result


def _per_source_sums(logits, targets, spans: SourceSpans, layout: StreamLayout, first_stream: int, window: int):
    """(2, S) summed NLL and counted targets of one window, per source."""
    streams, steps = targets.shape
    offsets = _target_offsets(layout, first_stream, streams, window, steps)  # (B, T)
    source = torch.from_numpy(np.searchsorted(spans.starts, offsets, side="right") - 1).to(targets.device)
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    counted = (targets.flatten() != IGNORE_INDEX).double()
    sums = torch.zeros(2, len(spans), dtype=torch.float64, device=targets.device)
    sums[0].index_add_(0, source.flatten(), nll.double())
    sums[1].index_add_(0, source.flatten(), counted)
    return sums


def evaluate_corpus(model, corpus, *, batch_size: int = 32, seq_len: int = 256, shard_bytes: int = 1 << 20,
                    max_bytes: int | None = None, device=None, autocast=None, compressors: bool = True,
                    progress: bool | None = None) -> dict:
    """Bits per byte of ``model`` on a packed corpus, per source and in total, laid out as pretraining lays out its
    validation data with the same ``batch_size``, ``seq_len`` and ``shard_bytes`` on one process (so the total is the
    validation BPC that ``bytezoo pretrain --val-data`` reports for the same model and bytes); ``max_bytes``: only the
    corpus's first bytes. With ``compressors``, gzip/bz2/xz/zstd on exactly the bytes the windows read."""
    from tqdm.auto import tqdm

    from .compression import held_out_compression

    corpus_bytes = corpus.total_bytes if max_bytes is None else min(corpus.total_bytes, max_bytes)
    streams, layout = validation_layout(corpus_bytes, batch_size, 1, seq_len, shard_bytes)
    spans = SourceSpans.of(corpus)
    windows = validation_windows(corpus, layout, rank=0, streams=streams, seq_len=seq_len)
    with tqdm(total=len(windows) * streams * seq_len, unit="char", unit_scale=True, desc="evaluate",
              disable=None if progress is None else not progress, dynamic_ncols=True, mininterval=0.5) as bar:
        result = evaluate_windows(model, windows, device=device, autocast=autocast, spans=spans, progress=bar)
    sources = corpus.index.get("sources", [])
    for entry, source, start in zip(result["per_source"], sources, spans.starts.tolist()):
        entry.update(source=source.get("url"), bytes=int(source.get("bytes") or 0), first_byte=start)
    result["per_source"] = [entry for entry in result["per_source"] if entry["first_byte"] < corpus_bytes]
    result.update(corpus_bytes=corpus_bytes, streams=streams, seq_len=seq_len, shard_bytes=shard_bytes,
                  windows=layout.windows(seq_len))
    if compressors:
        result["compression"] = held_out_compression(corpus, layout, seq_len, predicted_bytes=result["predicted_bytes"])
    return result


__all__ = ["LN2", "VAL_WINDOWS_PER_STREAM", "SourceSpans", "evaluate_corpus", "evaluate_windows", "token_loss",
           "validation_layout", "validation_windows"]


def open_held_out(sources: list[str], text_field: str | None, workdir: str):
    """The packed corpus of ``sources``: ``sources`` itself when it is one packed corpus URL, else the raw sources
    packed into ``workdir`` (one process; pretraining's :func:`~bytezoo.pretrain.trainer.open_corpus` shares the work
    out over its processes)."""
    from bytezoo.data.packed import PackedCorpus, is_packed, pack

    if len(sources) == 1 and is_packed(sources[0]):
        return PackedCorpus.open(sources[0])
    pack(sources, workdir, text_field=text_field, overwrite=True, progress=False)
    return PackedCorpus.open(workdir)


def describe_result(result: dict) -> str:
    """The lines ``bytezoo evaluate`` prints: one per source, the total, the compressors on the same bytes."""
    from .compression import describe

    width = max([len(str(entry["source"])) for entry in result["per_source"]] + [5])
    lines = [f"{'source':<{width}}  {'bytes':>13}  bits/byte"]
    for entry in result["per_source"]:
        figure = f"{entry['bits_per_byte']:.4f}" if entry["bits_per_byte"] is not None else "n/a"
        lines.append(f"{str(entry['source']):<{width}}  {entry['predicted_bytes']:>13,}  {figure}")
    lines.append(f"{'total':<{width}}  {result['predicted_bytes']:>13,}  {result['bits_per_byte']:.4f}")
    if "compression" in result:
        lines.append(f"beside it: {describe(result['compression'])}")
    return "\n".join(lines)


__all__ += ["describe_result", "open_held_out"]
