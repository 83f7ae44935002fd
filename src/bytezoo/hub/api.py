"""push, pull, ls and resolve: the hub's public operations."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bytezoo.redaction import redact_url

from .backends import backend_for
from .errors import HubError
from .local import export_snapshot
from .manifest import VersionInfo, check_tag_name
from .urls import is_url, split_ref

__all__ = ["VersionInfo", "ls", "pull", "push", "resolve"]


def push(
    local_dir: str | os.PathLike,
    url: str | os.PathLike,
    tag: str | None = None,
    *,
    model_card: bool = True,
    storage_options: dict | None = None,
    follow_symlinks: bool = False,
    move_tag: bool = False,
) -> str:
    """Publish the files of ``local_dir`` as a new immutable version of the repository at ``url``.

    Returns the version id (16 hex digits, derived from the files' content: pushing identical files again returns
    the same id and uploads nothing). Afterwards the tag ``latest`` and, if given, ``tag`` point to the version.
    Order of writes: blobs, then the manifest, then the tags; an interrupted push leaves no visible trace.

    Only data formats are accepted (see :mod:`bytezoo.hub.safety`); hidden files and folders are skipped, and so
    is the Python source that ``save_pretrained`` copies next to the weights (with a warning). Unless
    ``model_card=False`` or the directory has a hand-written ``README.md``, a model card is generated from the run
    summaries found in the directory and shared as ``README.md``. A symbolic link that leaves the folder is refused
    unless ``follow_symlinks`` (links inside it, or into the Hugging Face cache repository it is a snapshot of, are
    content as usual).

    A ``tag`` that exists already and points to other files is refused, before anything is uploaded, unless
    ``move_tag``; ``latest`` always moves. Tags move compare-and-swap, under the repository's tag lock: if another
    push moved one of them while this one ran, this push's version stays published (by its id) but no tag moves, and
    a :class:`HubError` says so (push again: nothing is uploaded twice).

    ``hf://user/name`` is pushed as an ordinary Hugging Face model repository, in one commit, with ``tag`` as a git
    tag (see :mod:`bytezoo.hub.hf`); the same rule on existing tags applies there.

    >>> version = push("runs/mlstm-256", "s3://team-models/mlstm-256", tag="paper")  # doctest: +SKIP
    """
    directory = Path(local_dir)
    if not directory.is_dir():
        raise HubError(f"cannot push {str(local_dir)!r}: not a directory")
    _check_repository_name(str(url), tag)
    if tag is not None:
        check_tag_name(tag)
    return backend_for(url).push(directory, os.fspath(url), tag, model_card=model_card, follow_symlinks=follow_symlinks,
                                 move_tag=move_tag, storage_options=storage_options)


def _check_repository_name(url: str, tag: str | None) -> None:
    """A repository's name may not hold '@': ``URL@NAME`` means a tag or version of ``URL`` everywhere else, so
    pushing to ``x@v1`` would create a repository nobody can pull by that name."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if "@" not in name:
        return
    base, _, selector = url.rstrip("/").rpartition("@")
    hint = f"push to {redact_url(base)!r} with --tag {selector}" if "/" not in selector and tag is None else \
        "name the repository without '@'"
    raise HubError(f"cannot push to {redact_url(url)!r}: a repository name may not contain '@' (URL@TAG names a "
                   f"tag or version of URL); {hint}")


def pull(
    ref: str | os.PathLike,
    local_dir: str | os.PathLike | None = None,
    offline: bool = False,
    *,
    storage_options: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """Fetch a version into the local cache, verifying every file's sha256, and return a local directory.

    ``ref`` is ``URL`` (the ``latest`` tag), ``URL@TAG``, ``URL@VERSION`` or ``URL@PREFIX`` (6+ hex digits of a
    version id). Without ``local_dir`` the cache's read-only snapshot directory is returned; with it, the files are
    copied there (other files in ``local_dir`` are left alone) and ``local_dir`` is returned.

    Offline (``offline=True`` or ``BYTEZOO_OFFLINE=1``) the hub is not contacted: a tag resolves to the version it
    pointed to when last pulled. A version id already in the cache is served without contacting the hub either,
    since versions never change.

    ``hf://user/name[@TAG|@BRANCH|@COMMIT]`` (default: the ``main`` branch) is downloaded into the Hugging Face cache
    at the commit the reference resolves to, and that snapshot folder is returned once every file matches the
    manifest committed with it (see :mod:`bytezoo.hub.hf`).

    >>> path = pull("s3://team-models/mlstm-256@paper")  # doctest: +SKIP
    """
    url, selector = split_ref(os.fspath(ref))
    snapshot, manifest = backend_for(url).pull(url, selector, offline=offline, storage_options=storage_options,
                                               cache_dir=cache_dir)
    if local_dir is None:
        return str(snapshot)
    export_snapshot(snapshot, manifest, Path(local_dir))
    return str(local_dir)


def ls(url: str | os.PathLike, *, storage_options: dict | None = None) -> list[VersionInfo]:
    """The complete versions of the repository at ``url``, newest first, each with the tags pointing to it.

    Raises :class:`NotFoundError` if ``url`` holds no complete version.

    >>> [(v.version, v.tags) for v in ls("s3://team-models/mlstm-256")]  # doctest: +SKIP
    [('3f9c0a1d2b4e5f60', ('latest', 'paper')), ('9e1b7c2d4a5f6e70', ())]
    """
    versions = backend_for(url).ls(os.fspath(url), storage_options)
    return sorted(versions, key=lambda info: info.created, reverse=True)


def resolve(
    path_or_url: str | os.PathLike,
    *,
    offline: bool = False,
    storage_options: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """A local directory for anything ``from_pretrained`` may receive.

    - ``scheme://…`` URLs (with an optional ``@TAG`` / ``@VERSION``) are pulled into the cache (see :func:`pull`)
      and the cached snapshot directory is returned;
    - a local path to a hub repository (a folder with ``versions/`` and ``tags/``), optionally ``@TAG``, is pulled
      likewise;
    - anything else (a checkpoint directory, a preset name) is returned unchanged, as a string; a checkpoint
      directory written as a ``file://`` URL is returned as its path.

    >>> resolve("runs/mlstm-256/checkpoint")  # doctest: +SKIP
    'runs/mlstm-256/checkpoint'
    >>> resolve("s3://team-models/mlstm-256@paper")  # doctest: +SKIP
    '/home/me/.cache/bytezoo/hub/snapshots/3f9c0a1d2b4e5f60'
    """
    text = os.fspath(path_or_url)
    options: dict[str, Any] = dict(offline=offline, storage_options=storage_options, cache_dir=cache_dir)
    local = text[len("file://"):] if text.startswith("file://") else None
    if local is not None and os.path.isdir(local) and not _is_repository_folder(local):
        return local  # a plain checkpoint folder written as a URL
    if is_url(text):
        return pull(text, **options)
    if os.path.exists(text) and not _is_repository_folder(text):
        return text
    try:
        base, _ = split_ref(text)
    except ValueError:
        return text
    if _is_repository_folder(base):
        return pull(text, **options)
    return text


def _is_repository_folder(path: str) -> bool:
    return backend_for(path).is_repository_folder(path)
