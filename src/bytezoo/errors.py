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

from .redaction import redact_text


class ByteZooError(Exception):
    """A user-facing error: the message names the file, key or option at fault and what to do (redacted)."""

    def __init__(self, *args):
        super().__init__(*(redact_text(arg) if isinstance(arg, str) else arg for arg in args))


class InvalidArgumentError(ByteZooError, ValueError):
    """An option or argument whose value bytezoo cannot use (unknown choice, out of range): names it and what fits."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (a message that spans lines is joined), or its class name if it has none."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


__all__ = ["ByteZooError", "InvalidArgumentError", "one_line"]
