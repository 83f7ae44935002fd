"""Standard compressors on the held-out bytes: the yardstick beside a language model's validation bits per character.

A byte-level language model's validation BPC is a compression rate (an arithmetic coder driven by the model would
reach it to within a few bytes), so gzip, bz2, xz and zstd at their strongest settings measure the same thing on the
same bytes: ``bits_per_byte = 8 * compressed_size / raw_size``.

>>> compressed_sizes(b"the same bytes the validation windows read")["gzip"]["bits_per_byte"]  # doctest: +SKIP

On a small held-out set the comparison is tilted towards the model: each compressor's output carries a fixed header
and checksum (tens of bytes), and it starts with no knowledge of the language, while the model brings what it learned
from the training text. The sizes are reported so a reader can take the headers out.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

# name -> (setting as on the command line, compress). Each releases the GIL, so they run side by side in threads.
COMPRESSORS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("-9", lambda data: gzip.compress(data, compresslevel=9, mtime=0)),  # mtime=0: the same bytes every run
    "bz2": ("-9", lambda data: bz2.compress(data, compresslevel=9)),
    "xz": ("-9", lambda data: lzma.compress(data, format=lzma.FORMAT_XZ, preset=9)),
    "zstd": ("-19", lambda data: _zstd(data, 19)),
}
# Above this the compressors would hold the main process for minutes while the others wait at a barrier: skipped.
MAX_BYTES = 64 << 20
NOTE = ("compressors on the held-out bytes alone: each output carries its format's header and checksum, and a "
        "compressor starts with no prior over the language while the model was trained on related text, so on small "
        "held-out sets they are handicapped; the bytes are compressed as one stream in corpus order")


def _zstd(data: bytes, level: int) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level).compress(data)


def compressed_sizes(data: bytes) -> dict[str, dict]:
    """``{name: {"setting", "compressed_bytes", "bits_per_byte", "seconds"}}`` for every compressor, on ``data``."""
    data = bytes(data)

    def measure(item):
        name, (setting, compress) = item
        started = time.perf_counter()
        size = len(compress(data))
        return name, {"setting": setting, "compressed_bytes": size,
                      "bits_per_byte": 8 * size / len(data) if data else None,
                      "seconds": time.perf_counter() - started}

    with ThreadPoolExecutor(len(COMPRESSORS), thread_name_prefix="bytezoo-compress") as pool:
        return dict(pool.map(measure, COMPRESSORS.items()))


def held_out_compression(corpus, layout, seq_len: int, predicted_bytes: int | None = None) -> dict:
    """The compressors on exactly the bytes the validation windows read (see
    :meth:`~bytezoo.pretrain.data.StreamLayout.window_ranges`); ``predicted_bytes``: how many of them the model's BPC
    counts (the first byte of each chunk and document has no target)."""
    ranges = layout.window_ranges(seq_len)
    raw_bytes = sum(length for _, length in ranges)
    result = {"raw_bytes": raw_bytes, "predicted_bytes": predicted_bytes, "note": NOTE}
    if raw_bytes > MAX_BYTES:
        result["skipped"] = (f"{raw_bytes:,} held-out bytes: more than {MAX_BYTES >> 20} MiB, the compressors would "
                             "take minutes")
        return result
    data = b"".join(part.tobytes() for part in corpus.read_many(ranges))
    result["compressors"] = compressed_sizes(data)
    return result


def describe(compression: dict | None) -> str:
    """One line: ``gzip -9 3.22, bz2 -9 2.76, xz -9 3.00, zstd -19 3.05 bits/byte on the same 58,100 bytes``."""
    if not compression:
        return "no validation data: no compressor figures"
    if "compressors" not in compression:
        return f"compressors skipped ({compression.get('skipped', 'no data')})"
    parts = [f"{name} {entry['setting']} {entry['bits_per_byte']:.3f}"
             for name, entry in compression["compressors"].items()]
    return f"{', '.join(parts)} bits/byte on the same {compression['raw_bytes']:,} held-out bytes"


__all__ = ["COMPRESSORS", "MAX_BYTES", "compressed_sizes", "describe", "held_out_compression"]
