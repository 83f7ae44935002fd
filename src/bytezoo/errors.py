"""The base class of the errors bytezoo raises for a user's mistake (a bad file, option, key or folder), as opposed
to a programming error. Its message is one line that names the thing at fault and what to do; a command-line entry
point prints it alone, without a traceback."""
from __future__ import annotations


class ByteZooError(Exception):
    """A user-facing error: the message names the file, key or option at fault and what to do."""


__all__ = ["ByteZooError"]
