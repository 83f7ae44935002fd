"""Archive members, safely: names that would land outside the extraction folder, links and devices are refused, and a
member is read with the record limit (:mod:`bytezoo.untrusted.limits`): an archive that expands to gigabytes in one
member is refused by name, never held in memory."""
from __future__ import annotations

import io
import re
import tarfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from bytezoo.untrusted import limits

from .errors import DatasetError, UnsafeArchiveError
from .formats import RecordTooLargeError, bounded_lines


def _check_member_name(name: str, archive: Path) -> None:
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise UnsafeArchiveError(f"refusing {archive.name}: member {name!r} points outside the archive's folder")


def _relative(name: str) -> str:
    # Archives packed as `tar czf x.tgz ./folder` name their members "./folder/..."; match them like "folder/...".
    while name.startswith("./"):
        name = name[2:]
    return name


def archive_files(archive: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """``(name, readable file)`` for each regular file in a zip or tar (any compression), in archive order.

    Members are read from the archive, never written to paths taken from their names; still, an archive with an
    absolute or ``..`` name, a link or a device member is refused as a whole (raising :class:`UnsafeArchiveError`),
    since no honest data archive has one. A tar is read front to back in one pass, so a gzip is decompressed once.
    """
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            for member in members:  # a zip's directory is at its end: check every name before reading anything
                _check_member_name(member.filename, archive)
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise UnsafeArchiveError(f"refusing {archive.name}: member {member.filename!r} is a symbolic link")
            for member in members:
                if not member.is_dir():
                    with zipped.open(member) as file:
                        yield _relative(member.filename), file
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tarred:
            for member in tarred:
                _check_member_name(member.name, archive)
                if not (member.isfile() or member.isdir()):
                    raise UnsafeArchiveError(f"refusing {archive.name}: member {member.name!r} is a link or device, "
                                             "not a file")
                if member.isfile():
                    yield _relative(member.name), tarred.extractfile(member)
    else:
        raise DatasetError(f"{archive} is neither a zip nor a tar archive")


def read_member(file: IO[bytes], name: str, archive: Path, max_record_bytes: int | None = None) -> bytes:
    """The bytes of a member that holds one record (a review), never more than the record limit of them."""
    limit = limits.max_record_bytes(max_record_bytes)
    data = limits.read_at_most(file, limit)
    if len(data) > limit:
        raise RecordTooLargeError(f"{archive.name}, member {name!r}: a record of {limits.record_limit_hint(limit)}")
    return data


@contextmanager
def member_lines(file: IO[bytes], name: str, archive: Path, max_record_bytes: int | None = None):
    """The UTF-8 lines of a member holding records (CSV/TSV rows), with the record limit: iterate, and call
    ``end_record()`` after each record (see :func:`bytezoo.data.formats.bounded_lines`)."""
    with text_reader(file) as text:
        yield bounded_lines(text, f"{archive.name}, member {name!r}", max_record_bytes=max_record_bytes)


@contextmanager
def text_reader(binary: IO[bytes]) -> Iterator[IO[str]]:
    """A UTF-8 text view of a binary member, with newline="" as the csv module wants (it handles \\r\\n itself)."""
    wrapper = io.TextIOWrapper(binary, encoding="utf-8", newline="")
    try:
        yield wrapper
    finally:
        wrapper.detach()  # leave closing the member to its owner


__all__ = ["archive_files", "member_lines", "read_member", "text_reader"]
