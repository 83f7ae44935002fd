"""The standard sentiment sets ``bytezoo data download`` knows: one module per data set, as nanoGPT's
``data/<name>/prepare.py``, each with its pinned source and its converter (``SPEC``, a
:class:`~bytezoo.data.layout.DatasetSpec`, and ``convert``). :data:`DATASETS` finds them: a new data set is a new
module here, and nothing else changes.

:func:`download` is the step they share: fetch the pinned archive, verify it, convert it into the common layout
(:mod:`bytezoo.data.layout`) and commit the files.

>>> from bytezoo.data import DATASETS, download
>>> sorted(DATASETS)
['amazon-polarity', 'imdb', 'sst2']
>>> download("imdb")                            # doctest: +SKIP  (needs the internet)
PosixPath('/home/me/.cache/bytezoo/data/imdb')
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path, PurePosixPath

from bytezoo.redaction import redact_url

from ..errors import DatasetError
from ..fetch import fetch_verified, parse_checksum
from ..layout import SPLIT_SEED, DatasetSpec, commit, data_cache_dir, intact_record, staged_output


def _found_specs() -> dict[str, DatasetSpec]:
    """``{name: spec}`` of every module in this package, in the order of the modules' names."""
    specs = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda module: module.name):
        spec = importlib.import_module(f"{__name__}.{module.name}").SPEC
        specs[spec.name] = spec
    return specs


DATASETS: dict[str, DatasetSpec] = _found_specs()


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``, or an error that lists the names there are."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; known data sets: {', '.join(sorted(DATASETS))}") from None


def download(
    name: str,
    directory: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    expected_hash: str | None = None,
    progress: bool = True,
) -> Path:
    """Download a standard data set, verify its pinned checksum, and convert it to the common layout; return the
    folder.

    ``name`` is a key of :data:`DATASETS` (``bytezoo data list`` shows them). The archive streams through fsspec —
    so ``url`` may be any fsspec URL, e.g. a mirror or a local copy (``file:///data/aclImdb_v1.tar.gz``) — and is
    hashed on the way; bytes that differ from the pin are refused and nothing is kept. ``expected_hash``
    (``"md5:…"``, ``"sha1:…"`` or ``"sha256:…"``) replaces the pins, for archives you built or checked yourself.
    Archive members with absolute paths, ``..`` components, links or devices make the whole archive refused.

    Writes into ``directory``, by default ``$BYTEZOO_CACHE/data/NAME``; a folder already prepared from the same
    bytes is re-used without touching the network. The archive itself is deleted once converted.

    >>> download("sst2")                                                            # doctest: +SKIP
    PosixPath('/home/me/.cache/bytezoo/data/sst2')
    >>> download("imdb", "data/imdb", url="file:///mirror/aclImdb_v1.tar.gz")       # doctest: +SKIP
    PosixPath('data/imdb')
    """
    spec = get_spec(name)
    checksums = (expected_hash,) if expected_hash is not None else spec.checksums
    for checksum in checksums:
        parse_checksum(checksum)
    source_url = url if url is not None else spec.url
    target = Path(directory) if directory is not None else data_cache_dir() / spec.name
    identity = {
        "dataset": spec.name,
        # The bytes identify the source; the URL is only where they came from (a mirror gives the same data set).
        "source": {"checksums": sorted(checksums)},
        "recipe": {"dev_fraction": spec.dev_fraction, "seed": SPLIT_SEED},
    }
    if intact_record(target, identity) is not None:
        return target
    with staged_output(target) as staging:
        archive = staging / _archive_name(source_url)  # messages about its members name it
        fetch_verified(source_url, archive, checksums, progress=progress, description=spec.name,
                       max_bytes=spec.max_download_bytes if expected_hash is None else None)
        converted = staging / "converted"
        converted.mkdir()
        files = spec.convert(archive, converted, spec)
        identity["source"]["url"] = redact_url(source_url)
        commit(converted, target, identity, files)
    return target


def _archive_name(url: str) -> str:
    """The file name a URL ends in (``aclImdb_v1.tar.gz``), if it is a safe one, else ``archive``."""
    from bytezoo.untrusted.names import UnsafeNameError, check_file_name

    try:
        return check_file_name(PurePosixPath(url.split("?", 1)[0].split("#", 1)[0]).name)
    except UnsafeNameError:
        return "archive"


__all__ = ["DATASETS", "DatasetSpec", "download", "get_spec"]
