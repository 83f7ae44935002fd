"""Reading text sources: format and compression from the name, records with their row or line, one error type.

A source is any path or fsspec URL. Its name says what it holds — ``.txt`` (or anything else: raw bytes),
``.jsonl`` (``.json``, ``.ndjson``), ``.csv``, ``.tsv`` (``.tab``) — optionally followed by a compression suffix:
``.gz``, ``.bz2``, ``.xz``, ``.lzma``, ``.zst``. A text file contributes its raw bytes; a record file contributes one
record's text field plus ``"\\n"`` per record (the form pretraining reads). Labelled sets
(:mod:`bytezoo.data.labelled`) read their records through :func:`iter_records` too, so every part of bytezoo sees a
file the same way; :data:`RECORD_FORMATS` is the one list of record formats (``--format`` offers it).

Sources come from outside, so reading them is bounded: compressed files are decompressed as streams, a record (a
JSON line, a CSV/TSV row, read a line at a time) past the record limit (64 MiB, ``--max-record-mb N``; see
:mod:`bytezoo.untrusted.limits`) is refused in one line naming the file and the record, with memory a small multiple
of the limit, and a remote source has connect and idle timeouts (:mod:`bytezoo.untrusted.network`).
"""
from __future__ import annotations

import csv
import io
import lzma
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from bytezoo.errors import ByteZooError
from bytezoo.untrusted import jsonio, limits, network

# suffix -> fsspec compression name (fsspec decompresses .zst through the zstandard package, a dependency)
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".lzma": "lzma", ".zst": "zstd"}
RECORD_FORMATS = ("csv", "tsv", "jsonl")  # the record formats, as --format offers them
FORMAT_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
TEXT_FIELD_GUESSES = ("text", "sentence", "review", "content", "body")  # tried in order when no field is named
READ_BLOCK = 1 << 20  # bytes per read of a raw text source
BINARY_SAMPLE = 1 << 16  # bytes looked at to tell text from binary data
NUL_THRESHOLD = 0.001  # more NUL bytes than this share of the sample: binary
UNDECODABLE_THRESHOLD = 0.1  # more bytes that are not UTF-8 than this share: binary (random bytes: about 0.5)


def _decompression_errors() -> tuple[type[BaseException], ...]:
    """What a truncated or corrupt compressed stream raises, codec by codec (gzip and bz2: OSError, EOFError)."""
    errors: tuple[type[BaseException], ...] = (EOFError, OSError, UnicodeError, lzma.LZMAError, zlib.error)
    try:
        import zstandard

        errors += (zstandard.ZstdError,)
    except ImportError:
        pass
    return errors


READ_ERRORS = _decompression_errors()


class SourceError(ByteZooError, ValueError):
    """A text source that cannot be read as it is: the message names the file, and the row or line."""


class RecordTooLargeError(SourceError):
    """A record longer than the record limit: names the file and the record, and how to raise the limit."""


@dataclass(frozen=True)
class SourceKind:
    """What a source's name says: its format (``text``, ``jsonl``, ``csv``, ``tsv``) and compression (or None)."""

    format: str
    compression: str | None

    @classmethod
    def of(cls, url: str) -> SourceKind:
        name = url.lower().split("?", 1)[0]
        compression = None
        for suffix, codec in COMPRESSIONS.items():
            if name.endswith(suffix):
                compression, name = codec, name[: -len(suffix)]
                break
        fmt = next((kind for suffix, kind in FORMAT_SUFFIXES.items() if name.endswith(suffix)), "text")
        return cls(fmt, compression)


def open_source(url: str) -> IO[bytes]:
    """The decompressed bytes of ``url`` as a binary stream (close it); remote sources with connect and idle
    timeouts."""
    kind = SourceKind.of(url)
    try:
        fs, path = network.url_to_fs(url)
        if network.protocol_of(url) not in ("http", "https"):
            from fsspec.core import OpenFile

            return OpenFile(fs, path, "rb", compression=kind.compression).open()  # closes the whole stack
        raw = network.guarded(fs.open(path, "rb", block_size=0))  # one streaming GET, watched for trickling
        if kind.compression is None:
            return raw
        from fsspec.compression import compr

        if kind.compression not in compr:
            raw.close()
            raise ValueError(f"no {kind.compression} decompressor")
        return _Decompressed(compr[kind.compression](raw, mode="rb"), raw)
    except FileNotFoundError:
        raise SourceError(f"{url}: file not found") from None
    except ValueError as error:
        if kind.compression == "zstd" and "zstd" in str(error):
            raise SourceError(f"{url}: .zst needs the zstandard package (pip install zstandard)") from error
        raise SourceError(f"cannot open {url}: {error}") from error
    except Exception as error:  # a status, a refused connection, a timeout: one line (bytezoo.untrusted.network)
        what = network.describe(error, url)
        if what is None and not isinstance(error, (OSError, ImportError)):
            raise
        raise SourceError(f"cannot open {url}: {what or f'{type(error).__name__}: {error}'}") from None


class _Decompressed:
    """A decompressing reader that closes the stream beneath it too (gzip and bz2 readers leave it open). (A Python
    layer under io.TextIOWrapper costs about a fifth of the read rate: local and object-store sources go through
    fsspec's own stack instead; only web sources, watched for trickling, come through here.)"""

    def __init__(self, stream, raw):
        self._stream, self._raw = stream, raw

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def read1(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._raw.close()

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _read_failure(url: str, error: BaseException) -> SourceError:
    """A read that failed midway: the network's one line (a status, a timeout) or the codec's complaint."""
    what = network.describe(error, url) if not isinstance(error, (EOFError, lzma.LZMAError, zlib.error, UnicodeError)) \
        else None
    return SourceError(f"{url}: cannot read ({what or f'{type(error).__name__}: {error}'})")


class _Lines:
    """The lines of a text stream for one record reader, never one longer than ``limit`` characters in memory
    (``readline(limit + 1)``): a record (one line, or the lines of one quoted CSV row) past ``limit`` characters, so
    past ``limit`` bytes, raises :class:`RecordTooLargeError` naming the file and where the record starts.
    ``progress`` hears the length of every line read."""

    def __init__(self, text: IO[str], url: str, unit: str, limit: int, progress: Callable[[int], None] | None):
        self.text, self.url, self.unit, self.limit, self.progress = text, url, unit, limit, progress
        self._readline, self._size = text.readline, limit + 1
        self.number = 0  # lines read
        self.record_start, self.pending = 1, 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._readline(self._size)
        if not line:
            raise StopIteration
        self.number += 1
        self.pending += len(line)
        if self.progress is not None:
            self.progress(len(line))
        if self.pending >= self._size and not (self.pending == self._size and line[-1] == "\n"):
            raise self._too_large()
        return line

    def end_record(self) -> None:
        """The record read so far is complete: the next one starts on the next line."""
        self.record_start, self.pending = self.number + 1, 0

    def one_per_line(self) -> Iterator[tuple[int, str]]:
        """``(line number, line)`` where every line is a record (JSON lines): the same check, in a tighter loop."""
        readline, size, progress, number = self._readline, self._size, self.progress, self.number
        try:
            while line := readline(size):
                number += 1
                if progress is not None:
                    progress(len(line))
                if len(line) == size and line[-1] != "\n":
                    self.record_start = number
                    raise self._too_large()
                yield number, line
        finally:
            self.number = number

    def _too_large(self) -> RecordTooLargeError:
        return RecordTooLargeError(f"{self.url}, {self.unit} {self.record_start}: a record of "
                                   f"{limits.record_limit_hint(self.limit)}")


def bounded_lines(text: IO[str], url: str, *, unit: str = "line", max_record_bytes: int | None = None,
                  progress: Callable[[int], None] | None = None) -> _Lines:
    """The lines of ``text`` with the record limit applied (see :class:`_Lines`): iterate it, call ``end_record()``
    after each record. For readers of records outside :func:`iter_records` (archive members)."""
    return _Lines(text, url, unit, limits.max_record_bytes(max_record_bytes), progress)


def _field(record: dict, field: str | None, url: str, where: str) -> str:
    if field is None:
        field = next((name for name in TEXT_FIELD_GUESSES if name in record), None)
        if field is None:
            raise SourceError(f"{url}: no text field among {sorted(record)}; name it (--text-field NAME)")
    if field not in record:
        raise SourceError(f"{url}: {where} has no field {field!r} (fields: {sorted(record)}); name the right one "
                          f"(--text-field NAME)")
    value = record[field]
    return "" if value is None else str(value)


def iter_records(url: str, fmt: str | None = None, *, max_record_bytes: int | None = None,
                 progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, dict]]:
    """``(row, record)`` for each record of a JSON-lines, CSV or TSV source. ``row`` is the line where the record
    starts: in CSV/TSV the header is row 1, as a spreadsheet shows it; in JSON lines, the line number. A UTF-8
    byte-order mark at the start is dropped. Bytes that are not UTF-8 survive as lone surrogates
    (``surrogateescape``): encoding back gives the original bytes. Errors name the file and the row or line; a record
    past ``max_record_bytes`` (default: the record limit) is refused, unread.
    ``progress`` hears the number of characters of every line read (the expanded size, however compressed)."""
    fmt = fmt or SourceKind.of(url).format
    if fmt not in RECORD_FORMATS:
        raise SourceError(f"{url}: not a record file (.jsonl, .csv or .tsv, optionally compressed)")
    with open_source(url) as raw:
        # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the first column's name
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        lines = bounded_lines(text, url, unit="line" if fmt == "jsonl" else "row", max_record_bytes=max_record_bytes,
                              progress=progress)
        try:
            if fmt == "jsonl":
                for row, line in lines.one_per_line():
                    if not line.strip():
                        continue
                    try:
                        record = jsonio.loads(line, strict=False)
                    except ValueError as error:
                        raise SourceError(f"{url}, line {row}: not valid JSON "
                                          f"({getattr(error, 'msg', error)})") from None
                    if not isinstance(record, dict):
                        raise SourceError(f"{url}, line {row}: expected a JSON object per line, got "
                                          f"{type(record).__name__}")
                    yield row, record
                return
            csv.field_size_limit(sys.maxsize)  # a record is bounded by the record limit (bounded_lines), not here
            reader = csv.reader(lines, delimiter="," if fmt == "csv" else "\t")
            try:
                header = next(reader)
            except StopIteration:
                raise SourceError(f"{url}: empty file (no header row)") from None
            except csv.Error as error:
                raise SourceError(f"{url}, row 1: malformed header ({error})") from None
            lines.end_record()
            row = 1
            try:
                for values in reader:
                    lines.end_record()
                    if not values:  # a blank line
                        row = reader.line_num
                        continue
                    if len(values) != len(header):
                        raise SourceError(f"{url}, row {row + 1}: {len(values)} fields but the header has "
                                          f"{len(header)} ({'tab' if fmt == 'tsv' else 'comma'}-separated, as the "
                                          f"file name says)")
                    yield row + 1, dict(zip(header, values))
                    row = reader.line_num
            except csv.Error as error:
                raise SourceError(f"{url}, row {reader.line_num}: malformed {fmt.upper()} ({error})") from None
        except READ_ERRORS as error:  # a truncated or corrupt compressed stream, or the network failing midway
            raise _read_failure(url, error) from None
        except Exception as error:
            if network.describe(error) is None:
                raise
            raise _read_failure(url, error) from None


def iter_source_bytes(url: str, text_field: str | None = None, *, max_record_bytes: int | None = None,
                      progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """A source's bytes as language-model text: raw bytes of a text file; ``field + "\\n"`` per record otherwise.
    ``progress`` hears how many bytes (characters, for records) were read, before any field is picked."""
    kind = SourceKind.of(url)
    if kind.format == "text":
        with open_source(url) as raw:
            try:
                while block := raw.read(READ_BLOCK):
                    if progress is not None:
                        progress(len(block))
                    yield block
            except READ_ERRORS as error:
                raise _read_failure(url, error) from None
            except Exception as error:
                if network.describe(error) is None:
                    raise
                raise _read_failure(url, error) from None
        return
    for row, record in iter_records(url, kind.format, max_record_bytes=max_record_bytes, progress=progress):
        where = f"line {row}" if kind.format == "jsonl" else f"row {row}"
        yield _field(record, text_field, url, where).encode("utf-8", "surrogateescape") + b"\n"


def binary_shares(sample: bytes) -> tuple[float, float]:
    """(share of NUL bytes, share of bytes that are not valid UTF-8) in a sample."""
    if not sample:
        return 0.0, 0.0
    text = sample.decode("utf-8", errors="surrogateescape")
    undecodable = sum(1 for ch in text if "\udc80" <= ch <= "\udcff")
    return sample.count(0) / len(sample), undecodable / len(sample)


def check_text(url: str, sample: bytes) -> None:
    """Refuses a source whose first bytes are not text: NUL bytes (text has none; binary formats, safetensors
    included, are full of them) or mostly invalid UTF-8 (compressed or random data; Latin-1 text stays well below)."""
    nul, undecodable = binary_shares(sample[:BINARY_SAMPLE])
    if nul > NUL_THRESHOLD or undecodable > UNDECODABLE_THRESHOLD:
        raise SourceError(f"{url}: not text: {nul:.1%} NUL bytes and {undecodable:.0%} invalid UTF-8 in its first "
                          f"{min(len(sample), BINARY_SAMPLE):,} bytes (a binary file, or a compression its name does "
                          f"not say). Pass --allow-binary to use it anyway")


def _refuse_links_out(folder: str, files: list[str]) -> None:
    import os

    root = os.path.realpath(folder)
    for file in files:
        target = os.path.realpath(file)
        if os.path.islink(file) and os.path.commonpath([root, target]) != root:
            raise SourceError(f"{file}: a symbolic link to {target}, outside {folder}: name the target itself if it "
                              f"belongs in the corpus")


def expand_sources(patterns: Sequence[str] | str) -> list[str]:
    """Paths, URLs and globs -> a sorted list of file URLs; a pattern that matches nothing is an error."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise SourceError("no data given: pass --data PATH_OR_URL (repeatable, globs allowed)")
    urls: list[str] = []
    for pattern in patterns:
        try:
            fs, path = network.url_to_fs(pattern)
            web = network.protocol_of(pattern) in ("http", "https")  # where "?" starts a query, not a glob
            if any(ch in (path.split("?", 1)[0] if web else path) for ch in ("*[" if web else "*?[")):
                matches = sorted(p for p in fs.glob(path) if fs.isfile(p))
            else:
                try:  # info, not isfile: a server's 403 or 500 is told, not taken for a missing file
                    kind = fs.info(path).get("type")
                except FileNotFoundError as missing:  # fsspec's http reports any failure so, the request's beneath
                    cause = missing.__cause__
                    if cause is not None and not isinstance(cause, FileNotFoundError) and \
                            getattr(cause, "status", None) not in (404, 410):
                        raise cause from None
                    kind = None
                if kind == "directory":
                    matches = sorted(p for p in fs.find(path)
                                     if not p.rsplit("/", 1)[-1].startswith(".") and fs.isfile(p))
                    if "://" not in pattern:  # a local folder: a link out of it is not part of it (as for hub push)
                        _refuse_links_out(path, matches)
                else:
                    matches = [path] if kind is not None else []
        except SourceError:
            raise
        except Exception as error:
            what = network.describe(error, pattern)
            if what is None and not isinstance(error, (OSError, ValueError, ImportError)):
                raise
            raise SourceError(f"cannot read {pattern!r}: {what or f'{type(error).__name__}: {error}'}") from None
        if not matches:
            raise SourceError(f"no data at {pattern!r}: no such file, or the glob matches nothing")
        urls.extend(fs.unstrip_protocol(p) if "://" in pattern else p for p in matches)
    return urls


__all__ = ["COMPRESSIONS", "RECORD_FORMATS", "RecordTooLargeError", "SourceError", "SourceKind", "binary_shares",
           "bounded_lines", "check_text", "expand_sources", "iter_records", "iter_source_bytes", "open_source"]
