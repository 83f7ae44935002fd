"""The default backend: a repository on any fsspec file system (``s3://``, ``gs://``, ``memory://``, ``file://``, a
local folder; ``http(s)://`` read-only).

A version is a manifest beside content-addressed blobs, tags are small documents moved compare-and-swap (the layout
and every remote byte: :class:`~bytezoo.hub.remote.HubRepo`); pulls verify every blob into the bytezoo cache
(:class:`~bytezoo.hub.cache.Cache`), which also serves offline.
"""
from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .cache import Cache, offline_from_environment
from .errors import HubError
from .local import MAX_WORKERS, LocalFile, add_card, changed_file, read_folder
from .manifest import DEFAULT_TAG, Manifest, VersionInfo, is_version_id
from .remote import HubRepo
from .urls import selector_or_default

logger = logging.getLogger("bytezoo.hub")


def push(directory: Path, url: str, tag: str | None, *, model_card: bool, follow_symlinks: bool, move_tag: bool,
         storage_options: dict | None) -> str:
    """:func:`bytezoo.hub.push` on an fsspec file system: blobs, then the manifest, then the tags. Returns the
    version id."""
    tags = [DEFAULT_TAG] + ([tag] if tag is not None and tag != DEFAULT_TAG else [])
    repo = HubRepo(url, storage_options)
    repo.check_writable()
    repo.remove_stale_temporaries()
    folder = read_folder(directory, model_card=model_card, follow_symlinks=follow_symlinks)
    with repo.errors("pushing to"), tempfile.TemporaryDirectory(prefix="bytezoo-hub-") as scratch:
        add_card(folder, repo.url, Path(scratch))
        manifest = folder.manifest()
        before = {name: (found.version if (found := repo.read_tag(name)) else None) for name in tags}
        if tag in before and before[tag] not in (None, manifest.version) and not move_tag:
            raise HubError(f"tag {tag!r} already points to version {before[tag]} on {repo.display_url}; nothing was "
                           "pushed. Pass --move-tag (move_tag=True) to point it at this push, or pick another tag")
        with ThreadPoolExecutor(MAX_WORKERS) as pool:
            present = list(pool.map(lambda f: repo.has_blob(f.entry), folder.files))
            missing = [f for f, is_present in zip(folder.files, present) if not is_present]
            list(pool.map(lambda f: repo.upload_blob(f.entry, f.path), missing))
        _check_unchanged(repo, missing)
        written = repo.write_manifest(manifest)
        repo.update_tags(manifest.version, before)
    logger.info(
        "pushed %s version %s (%d files, %d bytes, %d blobs uploaded%s%s); tags: %s",
        repo.display_url, manifest.version, len(manifest.files), manifest.total_size, len(missing),
        "" if written else ", version already existed",
        f", {len(folder.followed)} symbolic link(s) followed out of the folder" if folder.followed else "",
        ", ".join(tags),
    )
    return manifest.version


def _check_unchanged(repo: HubRepo, uploaded: list[LocalFile]) -> None:
    """Refuse to publish if a file changed between hashing and uploading (a run still writing its checkpoint):
    its blob would not match its name. The blob is withdrawn so a later push uploads it again."""
    changed = changed_file(uploaded)
    if changed is not None:
        repo.delete_blob(changed.entry.sha256)
        raise HubError(f"{changed.entry.path!r} changed while it was being pushed; nothing was published. "
                       "Push again once the directory is final.")


def pull(url: str, selector: str | None, *, offline: bool, storage_options: dict | None,
         cache_dir: str | os.PathLike | None) -> tuple[Path, Manifest]:
    """Resolve ``selector`` (default: ``latest``) and download the version's blobs into the cache, each verified;
    return the cache's snapshot folder and the manifest. Offline, a tag resolves to the version it pointed to when
    last pulled; a version id already in the cache is served without contacting the hub."""
    selector = selector_or_default(selector)
    cache = Cache(cache_dir)
    if offline or offline_from_environment():
        manifest = cache.resolve_offline(url, selector)
    elif is_version_id(selector) and cache.has_snapshot(selector):
        manifest = cache.load_manifest(selector)
    else:
        repo = HubRepo(url, storage_options)
        with repo.errors("pulling from"):
            manifest, tag = repo.resolve(selector)
            cache.materialize(manifest, repo.download_blob, max_workers=MAX_WORKERS)
        if tag is not None:  # under the name asked for, which the tag's document had to match
            cache.record_tag(url, selector, manifest.version)
        logger.info("pulled %s@%s -> version %s", repo.display_url, selector, manifest.version)
    return cache.snapshot_path(manifest.version), manifest


def ls(url: str, storage_options: dict | None) -> list[VersionInfo]:
    """The complete versions (those with a manifest), each with the tags pointing to it."""
    repo = HubRepo(url, storage_options)
    with repo.errors("listing"):
        version_ids = repo.list_version_ids()
        if not version_ids:
            raise repo.no_repository_error()
        with ThreadPoolExecutor(MAX_WORKERS) as pool:
            manifests = list(pool.map(repo.read_manifest, version_ids))
        tags = repo.list_tags()
    tags_by_version: dict[str, list[str]] = {}
    for tag in tags:
        if tag.version not in version_ids:
            logger.warning("tag %r of %s points to missing version %s", tag.name, repo.display_url, tag.version)
        tags_by_version.setdefault(tag.version, []).append(tag.name)
    return [VersionInfo.of(manifest, tags_by_version.get(manifest.version, ())) for manifest in manifests]


def is_repository_folder(path: str) -> bool:
    """Whether the local folder ``path`` is a repository (it has ``versions/`` and ``tags/``)."""
    return os.path.isdir(os.path.join(path, "versions")) and os.path.isdir(os.path.join(path, "tags"))
