"""The data sets' errors: one base, :class:`DatasetError`, a user-facing :class:`~bytezoo.errors.ByteZooError`."""
from __future__ import annotations

from bytezoo.errors import ByteZooError


class DatasetError(ByteZooError):
    """A data set could not be prepared: a missing source, a bad archive, an unknown name."""


class ChecksumMismatchError(DatasetError):
    """The downloaded bytes are not the ones the checksum pins."""


class UnsafeArchiveError(DatasetError):
    """An archive member would land outside the extraction folder, or is a link or device."""



__all__ = ["ChecksumMismatchError", "DatasetError", "UnsafeArchiveError"]
