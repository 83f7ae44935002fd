"""Errors raised by the hub. All derive from :class:`HubError`, so ``except HubError`` catches every refusal; it is a
:class:`~bytezoo.errors.ByteZooError`, so the ``bytezoo`` command reports it on one line."""
from __future__ import annotations

from bytezoo.errors import ByteZooError


class HubError(ByteZooError):
    """A hub operation could not be completed; the message names the URL, file or reference involved."""


class NotFoundError(HubError, LookupError):
    """The repository, tag or version asked for does not exist (or is not complete yet)."""


class ManifestError(HubError):
    """A manifest or tag on the hub is malformed, inconsistent or names something unsafe."""


class IntegrityError(HubError):
    """Downloaded bytes do not match the sha256 or size recorded in the manifest."""

    def __init__(self, path: str, expected_sha256: str, actual_sha256: str, expected_size: int, actual_size: int,
                 consequence: str = "The blob on the hub is corrupt or truncated; nothing was written to the cache."):
        self.path = path
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256
        self.expected_size = expected_size
        self.actual_size = actual_size
        super().__init__(
            f"integrity check failed for {path!r}: expected sha256 {expected_sha256} ({expected_size} bytes), "
            f"got sha256 {actual_sha256} ({actual_size} bytes). {consequence}"
        )


class UnsafeFileError(HubError):
    """A file may not be shared through the hub: a pickle, an unknown file type, or an unsafe path."""


class OfflineError(HubError):
    """Offline mode was asked for, and the cache cannot answer the request."""
