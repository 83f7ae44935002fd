"""The data sets' errors: one base, :class:`DatasetError`, a user-facing :class:`~bytezoo.errors.ByteZooError`
raised by the labelled-set reader (:mod:`bytezoo.data.labelled`) and by preparing and downloading data sets."""
from __future__ import annotations

from bytezoo.errors import ByteZooError


class DatasetError(ByteZooError, ValueError):
    """A data set that cannot be used or prepared as it is: a labelled file's unusable row (the message names the
    file, row and column), a missing source, a bad archive, an unknown name."""


class ChecksumMismatchError(DatasetError):
    """The downloaded bytes are not the ones the checksum pins."""


class UnsafeArchiveError(DatasetError):
    """An archive member would land outside the extraction folder, or is a link or device."""


__all__ = ["ChecksumMismatchError", "DatasetError", "UnsafeArchiveError"]
