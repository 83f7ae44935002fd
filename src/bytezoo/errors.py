"""The base class of the errors bytezoo raises for a user's mistake (a bad file, option, key or folder), as opposed
to a programming error. Its message is one line that names the thing at fault and what to do; ``bytezoo`` (the
command) catches it once, in :func:`bytezoo.cli.main`, prints that line and exits with code 2 (``--debug`` or
``BYTEZOO_DEBUG=1``: the traceback too). Anything else is a bug and keeps its traceback.

Every user-facing error class derives from :class:`ByteZooError`; where callers already catch a built-in kind
(``ValueError``, ``LookupError``, ``FileNotFoundError``…) the class keeps it as a second base::

    class DatasetError(ByteZooError, ValueError): ...

A message may quote a URL the user gave, or an error from fsspec, aiohttp, botocore or huggingface_hub that quotes
one: every :class:`ByteZooError` redacts its own message (credentials and query strings, see
:mod:`bytezoo.redaction`) when it is made, so no secret reaches a terminal, a log or a traceback through
one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from .redaction import redact_text

# A write that fails for want of room: a full disk, a quota, a file-size limit (RLIMIT_FSIZE).
STORAGE_ERRNOS = tuple(code for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) if code is not None)
LOW_SPACE_BYTES = 1 << 20  # a disk with less free space than this counts as full


class ByteZooError(Exception):
    """A user-facing error: the message names the file, key or option at fault and what to do (redacted)."""

    def __init__(self, *args):
        super().__init__(*(redact_text(arg) if isinstance(arg, str) else arg for arg in args))


class InvalidArgumentError(ByteZooError, ValueError):
    """An option or argument whose value bytezoo cannot use (unknown choice, out of range): names it and what fits."""


class StorageFullError(ByteZooError, OSError):
    """A write that ran out of room (a full disk, a quota, a file-size limit): names what was being written, why it
    failed and what is still intact."""


def out_of_room(error: BaseException, directory: str | os.PathLike | None = None) -> str | None:
    """Why a failed write ran out of room, in words; None if it did not. Libraries word it differently (an OSError's
    errno, safetensors' "File too large (os error 27)", torch.save's bare "unexpected pos"), so the error's chain is
    read first, then the place: a file under ``directory`` at the file-size limit, or a disk with no space left."""
    seen, chain = error, []
    while seen is not None and len(chain) < 16:
        chain.append(seen)
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRNOS:
            return os.strerror(seen.errno)
        for code in STORAGE_ERRNOS:
            if os.strerror(code) in str(seen):
                return os.strerror(code)
        seen = seen.__cause__ or seen.__context__
    if directory is None:
        return None
    written, place = Path(directory), Path(directory)
    while not place.exists() and place != place.parent:  # the disk the write was going to
        place = place.parent
    try:
        import resource

        limit, unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)[0], resource.RLIM_INFINITY
    except ImportError:  # no such limit on this platform
        limit = unlimited = None
    if limit != unlimited and written.exists():
        files = [written] if written.is_file() else written.rglob("*")
        if any(f.is_file() and f.stat().st_size >= limit for f in files):
            return f"a file reached this process's file-size limit ({limit:,} bytes)"
    if shutil.disk_usage(place).free < LOW_SPACE_BYTES:
        return os.strerror(errno.ENOSPC)
    return None


@contextlib.contextmanager
def room_to_write(what: str, directory: str | os.PathLike, intact: str):
    """Turns a write that ran out of room into one line: what was being written (``what``, in ``directory``), why,
    and what is still ``intact`` (with what to do). Any other failure passes unchanged."""
    try:
        yield
    except ByteZooError:  # a user's mistake found while writing, or a StorageFullError already
        raise
    except Exception as error:
        reason = out_of_room(error, directory)
        if reason is None:
            raise
        full = StorageFullError(f"no room to write {what} ({reason}); {intact}")
        full.errno = errno.ENOSPC
        raise full from error


def one_line(error: BaseException) -> str:
    """The error's message on one line (a message that spans lines is joined), or its class name if it has none."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


__all__ = ["ByteZooError", "InvalidArgumentError", "StorageFullError", "one_line", "out_of_room", "room_to_write"]
