"""Downloads with pinned checksums, streamed through fsspec with a progress bar; credentials never printed."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Sequence

from .errors import ChecksumMismatchError, DatasetError

SUPPORTED_HASHES = ("md5", "sha1", "sha256")
_CHUNK_BYTES = 1 << 20


def parse_checksum(checksum: str) -> tuple[str, str]:
    algorithm, separator, digest = checksum.partition(":")
    algorithm, digest = algorithm.strip().lower(), digest.strip().lower()
    if not separator or algorithm not in SUPPORTED_HASHES:
        raise DatasetError(f"checksum {checksum!r} must look like 'ALGORITHM:HEX' with ALGORITHM one of {', '.join(SUPPORTED_HASHES)}")
    expected_length = hashlib.new(algorithm).digest_size * 2
    if len(digest) != expected_length or not re.fullmatch(r"[0-9a-f]+", digest):
        raise DatasetError(f"checksum {checksum!r}: a {algorithm} digest is {expected_length} hexadecimal digits")
    return algorithm, digest


def redact(url: str) -> str:
    """The URL without user:password, for the record kept beside the data."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", url)


def fetch_verified(url: str, destination: Path, checksums: Sequence[str], *, progress: bool, description: str) -> None:
    """Stream ``url`` into ``destination`` through fsspec, hashing on the way; raise unless every checksum matches."""
    import fsspec
    from tqdm.auto import tqdm

    expected = [parse_checksum(checksum) for checksum in checksums]
    hashers = {algorithm: hashlib.new(algorithm) for algorithm, _ in expected}
    first_bytes = b""
    try:
        fs, path = fsspec.core.url_to_fs(url)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        try:
            total = fs.size(path)
        except Exception:  # the size only feeds the progress bar; a server that won't tell still serves the file
            total = None
        # Over HTTP, block_size=0 makes one streaming GET instead of many range requests.
        open_options = {"block_size": 0, "size": total} if protocols & {"http", "https"} else {}
        with fs.open(path, "rb", **open_options) as source, open(destination, "wb") as sink, tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description, disable=not progress
        ) as bar:
            while chunk := source.read(_CHUNK_BYTES):
                if not first_bytes:
                    first_bytes = chunk[:512]
                for hasher in hashers.values():
                    hasher.update(chunk)
                sink.write(chunk)
                bar.update(len(chunk))
    except ImportError as error:
        raise DatasetError(f"cannot download {redact(url)}: {error}") from error
    except Exception as error:
        raise DatasetError(f"downloading {redact(url)} failed: {type(error).__name__}: {error}") from error
    wrong = [
        f"expected {algorithm}:{digest}, got {algorithm}:{hashers[algorithm].hexdigest()}"
        for algorithm, digest in expected
        if hashers[algorithm].hexdigest() != digest
    ]
    if wrong:
        hint = ""
        if first_bytes.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
            hint = " (the server sent an HTML page, not the archive: a login, quota or confirmation page?)"
        raise ChecksumMismatchError(f"refusing the download from {redact(url)}: {'; '.join(wrong)}{hint}")



def file_digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


__all__ = ["fetch_verified", "file_digest", "parse_checksum", "redact"]
