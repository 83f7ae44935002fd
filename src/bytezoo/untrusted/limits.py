"""Size caps on what is read from outside, so that memory and disk stay bounded whatever a file or server claims.

- **Blobs** (a hub's files): never more than the manifest entry's size + 1 bytes are read (the one extra byte tells
  a longer blob from an exact one); :func:`read_at_most`.
- **JSON documents from a hub** (manifests, tags, packed-corpus indexes): at most :data:`MAX_DOCUMENT_BYTES`.
- **Records** (a JSON line, a CSV/TSV row, an archive member holding one text): at most :func:`max_record_bytes`,
  64 MiB unless the ``--max-record-mb N`` option of any ``bytezoo`` command or ``BYTEZOO_MAX_RECORD_MB`` says
  otherwise. Compressed sources are decompressed as streams, so a record past the limit is refused (one line naming
  the file and the record) with memory a small multiple of the limit, however far the stream would expand.
"""
from __future__ import annotations

import os

from bytezoo.errors import InvalidArgumentError

MAX_RECORD_ENV = "BYTEZOO_MAX_RECORD_MB"
DEFAULT_MAX_RECORD_MB = 64
MAX_DOCUMENT_BYTES = 64 << 20
READ_CHUNK = 1 << 20


def max_record_bytes(limit_bytes: int | None = None) -> int:
    """The record size limit in bytes: ``limit_bytes`` if given, else ``BYTEZOO_MAX_RECORD_MB`` (MiB), else 64 MiB."""
    if limit_bytes is not None:
        if limit_bytes <= 0:
            raise InvalidArgumentError(f"the record size limit must be positive; got {limit_bytes} bytes")
        return int(limit_bytes)
    return max(1, int(positive_from_environment(MAX_RECORD_ENV, DEFAULT_MAX_RECORD_MB, "MiB") * (1 << 20)))


def positive_from_environment(variable: str, default: float, unit: str) -> float:
    """The positive number the environment variable holds (``default`` when unset or empty), else a one-line error
    naming it and its ``unit``."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InvalidArgumentError(f"{variable}={text!r}: expected a positive number of {unit}")
    return value


def record_limit_hint(limit: int) -> str:
    """The end of a message refusing a record: the limit, and how to raise it."""
    return (f"more than the record limit of {limit:,} bytes; if the file is trusted, raise the limit with "
            f"--max-record-mb N (or {MAX_RECORD_ENV}=N)")


def read_at_most(handle, limit: int, chunk: int = READ_CHUNK) -> bytes:
    """At most ``limit + 1`` bytes from the binary file object ``handle`` (fewer at its end): a result longer than
    ``limit`` means there was more, and nothing past that one byte was read."""
    parts, received = [], 0
    while received <= limit:
        data = handle.read(min(chunk, limit + 1 - received))
        if not data:
            break
        parts.append(data)
        received += len(data)
    return b"".join(parts)


__all__ = ["DEFAULT_MAX_RECORD_MB", "MAX_DOCUMENT_BYTES", "MAX_RECORD_ENV", "max_record_bytes",
           "positive_from_environment", "read_at_most", "record_limit_hint"]
