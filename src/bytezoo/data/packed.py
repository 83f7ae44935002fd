"""Packed corpora: a text corpus read once into flat byte shards plus an index, then read by each process in slices.

The layout at any fsspec URL (a local folder, ``s3://bucket/corpus``, …), in the spirit of nanoGPT's ``prepare.py``
and Megatron-LM's indexed datasets::

    URL/shard-00000.bin     the corpus bytes, concatenated in source order (uint8; ``shard_bytes`` each, the last
                            shorter)
    URL/blocks.crc32        one little-endian uint32 CRC-32 per BLOCK_BYTES block of the corpus
    URL/index.json          written last: format and version, total bytes, each shard's size and sha256, the CRC
                            file's sha256, the documents (where each source begins: the recurrent state resets there)
                            and the sources (URL, size and modification time as packed, bytes contributed, sha256)

Readers trust the index alone (blobs first, index last, as the hub writes): an interrupted pack leaves no index and
so no corpus. The index is read as outside input (a corpus may come from anyone's bucket): at most 64 MiB of it,
strict JSON, and every shard and checksum file it names must be a plain file name beside it, checked before it is
opened. The sources' URLs are written redacted (no credentials or query strings). :meth:`PackedCorpus.open` checks
every shard's size against the index before anything trains; every read checks the CRC-32 of the blocks it touches
(reading just those checksums), so a modified shard is named before its bytes are used; ``bytezoo data verify URL``
checks every shard's sha256 (one full read). Packing the same sources twice gives identical bytes.
"""
from __future__ import annotations

import hashlib
import posixpath
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bytezoo.errors import room_to_write
from bytezoo.redaction import redact_url
from bytezoo.untrusted import jsonio, network
from bytezoo.untrusted.limits import MAX_DOCUMENT_BYTES, read_at_most
from bytezoo.untrusted.names import check_distinct_paths, check_file_name

from .formats import BINARY_SAMPLE, SourceError, check_text, expand_sources, iter_source_bytes

FORMAT = "bytezoo-packed-corpus"
FORMAT_VERSION = 1
INDEX = "index.json"
CRC_FILE = "blocks.crc32"
# 4 KiB: reads are widened to whole blocks, at most 2 x 4 KiB extra per contiguous read (a stream's chunk is
# typically hundreds of KiB), plus 4 bytes of checksum per block read alongside.
BLOCK_BYTES = 1 << 12
DEFAULT_SHARD_BYTES = 1 << 28  # 256 MiB


class PackError(SourceError):
    """A packed corpus that cannot be written or used as it is: names the URL, shard or source."""


def _join(root: str, name: str) -> str:
    return posixpath.join(root, name) if root else name


class _ShardWriter:
    """Writes the corpus bytes into consecutive shards, hashing each shard and each block on the way."""

    def __init__(self, fs, root: str, shard_bytes: int):
        self.fs, self.root, self.shard_bytes = fs, root, shard_bytes
        self.total = 0
        self.shards: list[dict] = []
        self.crcs: list[int] = []
        self._file = None
        self._hash = None
        self._in_shard = 0
        self._block = bytearray()

    def _open_next(self) -> None:
        name = f"shard-{len(self.shards):05d}.bin"
        self._file = self.fs.open(_join(self.root, name), "wb")
        self._hash, self._in_shard = hashlib.sha256(), 0
        self.shards.append({"name": name, "bytes": 0, "sha256": None})

    def _close_current(self) -> None:
        if self._file is not None:
            self._file.close()
            self.shards[-1].update(bytes=self._in_shard, sha256=self._hash.hexdigest())
            self._file = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._file is None or self._in_shard == self.shard_bytes:
                self._close_current()
                self._open_next()
            take = min(len(view), self.shard_bytes - self._in_shard)
            part = view[:take]
            self._file.write(part)
            self._hash.update(part)
            self._in_shard += take
            self.total += take
            self._add_to_blocks(part)
            view = view[take:]

    def _add_to_blocks(self, part: memoryview) -> None:
        self._block += part
        if len(self._block) >= BLOCK_BYTES:
            whole = len(self._block) // BLOCK_BYTES * BLOCK_BYTES
            buffer = memoryview(self._block)
            self.crcs.extend(zlib.crc32(buffer[i : i + BLOCK_BYTES]) for i in range(0, whole, BLOCK_BYTES))
            buffer.release()
            del self._block[:whole]

    def close(self) -> None:
        self._close_current()
        if self._block:
            self.crcs.append(zlib.crc32(self._block))
            self._block = bytearray()


def pack(sources: Sequence[str] | str, output: str, *, text_field: str | None = None,
         shard_bytes: int = DEFAULT_SHARD_BYTES, allow_binary: bool = False, overwrite: bool = False,
         progress: bool = True, max_record_bytes: int | None = None) -> dict:
    """Streams ``sources`` (paths, globs, URLs; text, JSON lines, CSV, TSV, each optionally compressed) once into a
    packed corpus at ``output``; returns its index.

    A source that is mostly not text (NUL bytes, invalid UTF-8) is refused by name unless ``allow_binary``. A folder
    that already holds a packed corpus is refused unless ``overwrite``. A record longer than ``max_record_bytes``
    (default: the record limit, 64 MiB) is refused, naming the file and the record. The progress bar counts the
    sources' expanded bytes as they are read. A local pack that runs out of room (a full disk, a quota, a file-size
    limit) is one line; it leaves no index, so no corpus.
    """
    options = dict(text_field=text_field, shard_bytes=shard_bytes, allow_binary=allow_binary, overwrite=overwrite,
                   progress=progress, max_record_bytes=max_record_bytes)
    fs, root = network.url_to_fs(output)
    if not _is_local(fs):
        return _pack(sources, output, **options)
    with room_to_write(f"the packed corpus {output}", root, "no corpus was written there: make room (or pack it "
                       "elsewhere with `bytezoo data pack`), then run again"):
        return _pack(sources, output, **options)


def _pack(sources, output: str, *, text_field, shard_bytes, allow_binary, overwrite, progress,
          max_record_bytes) -> dict:
    from tqdm.auto import tqdm

    if shard_bytes < BLOCK_BYTES or shard_bytes % BLOCK_BYTES:
        raise PackError(f"shard size {shard_bytes:,} must be a positive multiple of {BLOCK_BYTES:,} bytes")
    urls = expand_sources(sources)
    fs, root = network.url_to_fs(output)
    root = root.rstrip("/")
    if fs.exists(_join(root, INDEX)):
        if not overwrite:
            raise PackError(f"{output} already holds a packed corpus: pass --overwrite to replace it, or pack "
                            "elsewhere")
        fs.rm(_join(root, INDEX))  # first: from now on no reader takes the old shards for a corpus
        for path in fs.glob(_join(root, "shard-*.bin")) + fs.glob(_join(root, CRC_FILE)):
            fs.rm(path)  # what an earlier pack wrote (readable index or not), never other files
    fs.makedirs(root, exist_ok=True)
    writer = _ShardWriter(fs, root, shard_bytes)
    documents, packed_sources = [], []
    bar = tqdm(total=None, unit="B", unit_scale=True, desc="pack (bytes read, expanded)", disable=not progress,
               mininterval=0.5)
    for url in urls:
        start, digest, contributed, sample = writer.total, hashlib.sha256(), 0, bytearray()
        for data in iter_source_bytes(url, text_field, max_record_bytes=max_record_bytes, progress=bar.update):
            if not allow_binary and sample is not None:  # the source's first BINARY_SAMPLE bytes decide
                sample += data[:BINARY_SAMPLE]
                if len(sample) >= BINARY_SAMPLE:
                    check_text(url, bytes(sample))
                    sample = None
            writer.write(data)
            digest.update(data)
            contributed += len(data)
        if sample:
            check_text(url, bytes(sample))
        try:
            source_fs, source_path = network.url_to_fs(url)
            info = source_fs.info(source_path)
        except (OSError, ValueError):
            info = {}
        packed_sources.append({"url": redact_url(url), "size": info.get("size"), "modified": _modified(info),
                               "bytes": contributed, "sha256": digest.hexdigest()})
        if contributed:
            documents.append(start)
    writer.close()
    bar.close()
    if writer.total == 0:
        raise PackError(f"the corpus is empty: {', '.join(urls)} hold(s) no text")
    crc_bytes = np.asarray(writer.crcs, dtype="<u4").tobytes()
    with fs.open(_join(root, CRC_FILE), "wb") as file:
        file.write(crc_bytes)
    index = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "total_bytes": writer.total, "block_bytes": BLOCK_BYTES,
        "shard_bytes": shard_bytes, "shards": writer.shards,
        "crc32": {"name": CRC_FILE, "bytes": len(crc_bytes), "sha256": hashlib.sha256(crc_bytes).hexdigest()},
        "documents": documents, "sources": packed_sources, "text_field": text_field,
    }
    _write_index(fs, root, index)
    return index


def source_identities(index: dict) -> list[dict]:
    """What a packed corpus was packed from, by content: each source's URL, the bytes it contributed and their
    sha256 (what a training run records, and checks on resume)."""
    return [{"url": s["url"], "bytes": s["bytes"], "sha256": s["sha256"]} for s in index["sources"]]


def _modified(info: dict) -> str | None:
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    return None if value is None else str(value)


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _write_index(fs, root: str, index: dict) -> None:
    data = jsonio.dumps(index, indent=1).encode()
    if _is_local(fs):
        staging = _join(root, f".{INDEX}.tmp")
        with fs.open(staging, "wb") as file:
            file.write(data)
        fs.mv(staging, _join(root, INDEX))  # a rename: readers see no index or the whole one
    else:
        with fs.open(_join(root, INDEX), "wb") as file:  # one PUT on an object store: atomic
            file.write(data)


def packed_from(index: dict, urls: list[str], text_field: str | None) -> bool:
    """Whether the corpus of ``index`` was packed from exactly ``urls`` (in order, with ``text_field``), and every
    source is unchanged since (size and modification time): then it need not be packed again. (The index holds the
    URLs redacted: they are compared redacted, and the sources are looked at through ``urls``.)"""
    if index.get("text_field") != text_field or [s["url"] for s in index["sources"]] != [redact_url(u) for u in urls]:
        return False
    for url, source in zip(urls, index["sources"]):
        try:
            fs, path = network.url_to_fs(url)
            info = fs.info(path)
        except (OSError, ValueError):
            return False
        if info.get("size") != source["size"] or _modified(info) != source["modified"]:
            return False
    return True


def is_packed(url: str) -> bool:
    """True when ``url`` is a packed corpus (holds an index)."""
    if network.protocol_of(url) in ("http", "https") and "?" in url:
        return False  # a URL with a query names one object (a signed link to a file), never a folder of them
    try:
        fs, root = network.url_to_fs(url)
        return fs.isfile(_join(root.rstrip("/"), INDEX))
    except (OSError, ValueError, ImportError):
        return False


def read_index(url: str) -> dict:
    """The index of the packed corpus at ``url``, checked: its format, sizes, and the names of the files it lists
    (plain file names beside it, distinct), before any of them is opened."""
    with network.remote_errors(url, "cannot read the packed corpus", PackError):
        fs, root = network.url_to_fs(url)
        path = _join(root.rstrip("/"), INDEX)
        try:
            with fs.open(path, "rb") as file:
                data = read_at_most(file, MAX_DOCUMENT_BYTES)
        except FileNotFoundError:
            raise PackError(f"{url}: no {INDEX}: not a packed corpus (pack one with `bytezoo data pack SRC... --output "
                            f"{url}`), or its packing did not finish") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise PackError(f"{url}/{INDEX}: more than {MAX_DOCUMENT_BYTES:,} bytes: not a bytezoo packed-corpus index")
    try:
        index = jsonio.loads(data)
    except ValueError as error:
        raise PackError(f"{url}/{INDEX}: unreadable ({error})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise PackError(f"{url}/{INDEX}: not a bytezoo packed-corpus index")
    if index.get("format_version") != FORMAT_VERSION:
        raise PackError(f"{url}/{INDEX}: packed-corpus format version {index.get('format_version')!r}; this bytezoo "
                        f"reads version {FORMAT_VERSION}: pack the sources again with this bytezoo")
    try:
        shards, total = index["shards"], int(index["total_bytes"])
        if sum(int(s["bytes"]) for s in shards) != total:
            raise ValueError("the shard sizes do not add up to total_bytes")
        [int(d) for d in index["documents"]]
        block_bytes = int(index["block_bytes"])
        names = [shard["name"] for shard in shards] + [index["crc32"]["name"]]
        index["crc32"]["sha256"]  # noqa: B018  (it must be there)
    except (KeyError, TypeError, ValueError) as error:
        raise PackError(f"{url}/{INDEX}: malformed ({type(error).__name__}: {error})") from None
    for name in names:  # the index names files that are then opened: never anything outside the corpus's folder
        check_file_name(name, f"file name in {url}/{INDEX}", PackError)
    check_distinct_paths(names, f"{url}/{INDEX}: its files", PackError)
    if block_bytes != BLOCK_BYTES:
        raise PackError(f"{url}/{INDEX}: checksummed in {block_bytes:,}-byte blocks; this bytezoo reads "
                        f"{BLOCK_BYTES:,}-byte blocks: pack the sources again with this bytezoo")
    return index


@dataclass
class PackedCorpus:
    """A packed corpus opened for reading; :meth:`read_many` returns byte ranges, checked against the block CRCs."""

    url: str
    index: dict
    fs: object = field(repr=False)
    root: str = field(repr=False)
    shard_starts: np.ndarray = field(repr=False)  # (shards + 1,) global offset of each shard's first byte, then total
    bytes_read: int = 0  # what this object read from storage, shards and checksums (the benchmark's figure)
    _maps: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, url: str) -> PackedCorpus:
        """Opens ``url``, checking the format version and the size of every shard and of the checksum file (a
        truncated file is named here, before anything trains)."""
        index = read_index(url)
        fs, root = network.url_to_fs(url)
        root = root.rstrip("/")
        blocks = -(-index["total_bytes"] // BLOCK_BYTES)
        expected = [(shard["name"], shard["bytes"]) for shard in index["shards"]]
        expected.append((index["crc32"]["name"], 4 * blocks))
        with network.remote_errors(url, "cannot read the packed corpus", PackError):
            for name, size_expected in expected:
                try:
                    size = fs.size(_join(root, name))
                except FileNotFoundError:
                    raise PackError(f"{url}: {name} is missing (the index lists it)") from None
                if size != size_expected:
                    kind = "shard " if name.startswith("shard-") else ""
                    raise PackError(f"{url}: {kind}{name} holds {size:,} bytes, the index says {size_expected:,}: "
                                    f"truncated or replaced; pack the corpus again")
        starts = np.cumsum([0] + [s["bytes"] for s in index["shards"]]).astype(np.int64)
        return cls(url=url, index=index, fs=fs, root=root, shard_starts=starts)

    @property
    def total_bytes(self) -> int:
        return int(self.index["total_bytes"])

    @property
    def document_starts(self) -> np.ndarray:
        return np.asarray(self.index["documents"], dtype=np.int64)

    def _fetch(self, requests: list[tuple[str, int, int]]) -> list[np.ndarray]:
        """Bytes ``[start, end)`` of each named file: memory maps for local files; for remote ones a single
        ``cat_ranges`` call, which asynchronous file systems (s3fs, gcsfs, http) serve concurrently."""
        self.bytes_read += sum(end - start for _, start, end in requests)
        if _is_local(self.fs):
            out = []
            for name, start, end in requests:
                if name not in self._maps:
                    self._maps[name] = np.memmap(_join(self.root, name), dtype=np.uint8, mode="r")
                out.append(np.asarray(self._maps[name][start:end]))
            return out
        paths = [_join(self.root, name) for name, _, _ in requests]
        with network.remote_errors(self.url, "cannot read the packed corpus", PackError):
            data = self.fs.cat_ranges(paths, [start for _, start, _ in requests], [end for _, _, end in requests],
                                      on_error="raise")
        return [np.frombuffer(d, dtype=np.uint8) for d in data]

    def read_many(self, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
        """Corpus bytes ``[offset, offset + length)`` for each range, as uint8 arrays, fetched together. Each read
        is widened to whole blocks, whose CRC-32 (read alongside) is checked: a modified shard is named before any
        of its bytes are used."""
        plans, requests = [], []
        crc_name = self.index["crc32"]["name"]
        for offset, length in ranges:
            if offset < 0 or length < 0 or offset + length > self.total_bytes:
                raise IndexError(f"bytes [{offset}, {offset + length}) outside the corpus of {self.total_bytes}")
            first_block, end_block = offset // BLOCK_BYTES, -(-(offset + length) // BLOCK_BYTES)
            lo, hi = first_block * BLOCK_BYTES, min(end_block * BLOCK_BYTES, self.total_bytes)
            pieces = []
            shard = int(np.searchsorted(self.shard_starts, lo, side="right") - 1)
            position = lo
            while position < hi and length:
                take_end = min(hi, int(self.shard_starts[shard + 1]))
                pieces.append(len(requests))
                requests.append((self.index["shards"][shard]["name"], position - int(self.shard_starts[shard]),
                                 take_end - int(self.shard_starts[shard])))
                position, shard = take_end, shard + 1
            crc_request = len(requests)
            requests.append((crc_name, 4 * first_block, 4 * end_block))
            plans.append((offset, length, first_block, lo, pieces, crc_request))
        fetched = self._fetch(requests)
        out = []
        for offset, length, first_block, lo, pieces, crc_request in plans:
            if length == 0:
                out.append(np.zeros(0, np.uint8))
                continue
            data = fetched[pieces[0]] if len(pieces) == 1 else np.concatenate([fetched[i] for i in pieces])
            crcs = fetched[crc_request].view("<u4")
            for i, expected in enumerate(crcs):
                if zlib.crc32(data[i * BLOCK_BYTES : (i + 1) * BLOCK_BYTES]) != int(expected):
                    block = first_block + i
                    shard = int(np.searchsorted(self.shard_starts, block * BLOCK_BYTES, side="right") - 1)
                    raise PackError(f"{self.url}: shard {self.index['shards'][shard]['name']} was modified after "
                                    f"packing (block {block}, corpus bytes {block * BLOCK_BYTES:,}+, fails its "
                                    f"CRC-32): pack the corpus again")
            out.append(data[offset - lo : offset - lo + length])
        return out

    def read(self, offset: int, length: int) -> np.ndarray:
        """Corpus bytes ``[offset, offset + length)`` as a uint8 array (see :meth:`read_many`)."""
        return self.read_many([(offset, length)])[0]

    def verify(self, progress: bool = True) -> None:
        """Checks every shard's sha256, and the checksum file's, against the index (one full read)."""
        from tqdm.auto import tqdm

        files = [*self.index["shards"], self.index["crc32"]]
        for entry in tqdm(files, desc="verify", unit="file", disable=not progress):
            digest = hashlib.sha256()
            with self.fs.open(_join(self.root, entry["name"]), "rb") as file:
                while block := file.read(1 << 22):
                    digest.update(block)
            if digest.hexdigest() != entry["sha256"]:
                kind = "shard " if entry["name"].startswith("shard-") else ""
                raise PackError(f"{self.url}: {kind}{entry['name']} does not match its sha256 in the index: "
                                f"modified after packing; pack the corpus again")


__all__ = ["BLOCK_BYTES", "DEFAULT_SHARD_BYTES", "PackError", "PackedCorpus", "is_packed", "pack", "packed_from",
           "read_index", "source_identities"]
