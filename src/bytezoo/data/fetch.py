"""Downloads with pinned checksums, streamed through fsspec with a progress bar, connect and idle timeouts and a cap
on the bytes written; credentials never printed (:func:`bytezoo.redaction.redact_url`)."""
from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Sequence

from bytezoo.untrusted import network
from bytezoo.redaction import redact_url

from .errors import ChecksumMismatchError, DatasetError

SUPPORTED_HASHES = ("md5", "sha1", "sha256")
_CHUNK_BYTES = 1 << 20


def parse_checksum(checksum: str) -> tuple[str, str]:
    algorithm, separator, digest = checksum.partition(":")
    algorithm, digest = algorithm.strip().lower(), digest.strip().lower()
    if not separator or algorithm not in SUPPORTED_HASHES:
        raise DatasetError(f"checksum {checksum!r} must look like 'ALGORITHM:HEX' with ALGORITHM one of "
                           f"{', '.join(SUPPORTED_HASHES)}")
    expected_length = hashlib.new(algorithm).digest_size * 2
    if len(digest) != expected_length or not re.fullmatch(r"[0-9a-f]+", digest):
        raise DatasetError(f"checksum {checksum!r}: a {algorithm} digest is {expected_length} hexadecimal digits")
    return algorithm, digest


def fetch_verified(url: str, destination: Path, checksums: Sequence[str], *, progress: bool, description: str,
                   max_bytes: int | None = None) -> None:
    """Stream ``url`` into ``destination`` through fsspec, hashing on the way; raise unless every checksum matches.
    Never more than ``max_bytes`` (when given) are written: a server sending more is refused as it happens."""
    from tqdm.auto import tqdm

    expected = [parse_checksum(checksum) for checksum in checksums]
    hashers = {algorithm: hashlib.new(algorithm) for algorithm, _ in expected}
    first_bytes, received = b"", 0
    shown = redact_url(url)
    try:
        fs, path = network.url_to_fs(url)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        try:
            total = fs.size(path)
        except Exception:  # the size only feeds the progress bar; a server that won't tell still serves the file
            total = None
        if max_bytes is not None and total is not None and total > max_bytes:
            raise DatasetError(f"refusing the download from {shown}: the server announces {total:,} bytes, more than "
                               f"the {max_bytes:,} this data set's archive can be")
        free = shutil.disk_usage(destination.parent).free
        if total is not None and total > free:
            raise DatasetError(f"cannot download {shown}: {total:,} bytes, and {destination.parent} has {free:,} free")
        # Over HTTP, block_size=0 makes one streaming GET instead of many range requests.
        open_options = {"block_size": 0, "size": total} if protocols & {"http", "https"} else {}
        with network.guarded(fs.open(path, "rb", **open_options)) as source, open(destination, "wb") as sink, tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description, disable=not progress
        ) as bar:
            while chunk := source.read(_CHUNK_BYTES):
                received += len(chunk)
                if max_bytes is not None and received > max_bytes:
                    raise DatasetError(f"refusing the download from {shown}: more than the {max_bytes:,} bytes this "
                                       "data set's archive can be")
                if not first_bytes:
                    first_bytes = chunk[:512]
                for hasher in hashers.values():
                    hasher.update(chunk)
                sink.write(chunk)
                bar.update(len(chunk))
    except DatasetError:
        raise
    except ImportError as error:
        raise DatasetError(f"cannot download {shown}: {error}") from error
    except Exception as error:
        what = network.describe(error, url) or f"{type(error).__name__}: {error}"
        raise DatasetError(f"downloading {shown} failed: {what}") from None
    wrong = [
        f"expected {algorithm}:{digest}, got {algorithm}:{hashers[algorithm].hexdigest()}"
        for algorithm, digest in expected
        if hashers[algorithm].hexdigest() != digest
    ]
    if wrong:
        hint = ""
        if first_bytes.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
            hint = " (the server sent an HTML page, not the archive: a login, quota or confirmation page?)"
        raise ChecksumMismatchError(f"refusing the download from {shown}: {'; '.join(wrong)}{hint}")


def file_digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


__all__ = ["fetch_verified", "file_digest", "parse_checksum"]
