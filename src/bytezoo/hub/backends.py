"""Hub backends by URL scheme: the one place that decides which code handles a repository URL.

Like fsspec's table of protocols, :data:`BACKENDS` maps a URL's scheme (what comes before ``://``) to the backend
that implements the hub's operations for it; every other URL (``s3://``, ``gs://``, ``memory://``, ``file://``,
``http(s)://``, chained URLs such as ``simplecache::s3://…``) and every local path goes to :data:`DEFAULT_BACKEND`,
which reaches them through fsspec. :mod:`bytezoo.hub.api` checks the arguments (names before any filesystem call),
asks :func:`backend_for` and hands over.

A backend is a module with the four functions of :class:`Backend`. To add one (say ``git://``): write
``hub/git.py`` with them, reusing :mod:`bytezoo.hub.local` for the folder being pushed (its files, their hashes, the
model card), :class:`~bytezoo.hub.manifest.Manifest` for what a version holds and
:class:`~bytezoo.hub.cache.Cache` or its own cache for what was pulled, and add ``"git": git`` below.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from . import fsspec_backend, hf
from .manifest import Manifest, VersionInfo
from .urls import url_scheme


class Backend(Protocol):
    """What a backend implements. The URL it gets is the repository's, without ``@SELECTOR``; a tag it gets was
    checked (:func:`~bytezoo.hub.manifest.check_tag_name`) and the directory exists."""

    def push(self, directory: Path, url: str, tag: str | None, *, model_card: bool, follow_symlinks: bool,
             move_tag: bool, storage_options: dict | None) -> str:
        """Publish the folder's files (see :func:`bytezoo.hub.push`); return the version id."""

    def pull(self, url: str, selector: str | None, *, offline: bool, storage_options: dict | None,
             cache_dir: str | os.PathLike | None) -> tuple[Path, Manifest]:
        """Fetch and verify the version ``selector`` names (``None``: the latest); return a local folder holding
        the manifest's files, and the manifest."""

    def ls(self, url: str, storage_options: dict | None) -> list[VersionInfo]:
        """The repository's versions, in any order, each with the names pointing to it; :class:`NotFoundError` if
        there are none."""

    def is_repository_folder(self, path: str) -> bool:
        """Whether the local folder ``path`` is one of this backend's repositories (which :func:`bytezoo.hub.resolve`
        pulls rather than passing through)."""


BACKENDS: dict[str, Backend] = {
    "hf": hf,  # Hugging Face model repositories, through huggingface_hub
}
DEFAULT_BACKEND: Backend = fsspec_backend  # any other URL, through fsspec; local paths


def backend_for(url: str | os.PathLike) -> Backend:
    """The backend for ``url``'s scheme (:data:`DEFAULT_BACKEND` for a scheme not in :data:`BACKENDS`)."""
    return BACKENDS.get(url_scheme(os.fspath(url)), DEFAULT_BACKEND)
