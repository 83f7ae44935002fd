"""The local cache: verified blobs keyed by sha256, and read-only snapshot directories keyed by version id.

Layout under ``$BYTEZOO_CACHE/hub`` (default ``~/.cache/bytezoo/hub``)::

    blobs/sha256/<64 hex>         verified file contents, read-only
    snapshots/<version>/...       one directory per version: hard links to the blobs (copies where links fail)
    manifests/<version>.json      the manifest each snapshot was built from
    refs/<url key>/tags/<tag>     the version a tag pointed to when last pulled (for offline mode)
    refs/<url key>/url            the repository URL (redacted), for people looking around
    hf-verified/<key>             for hf:// snapshots (which live in the Hugging Face cache): the size, mtime and
                                  inode of each file when its sha256 last matched the manifest
    tmp/                          work in progress; renamed into place when complete (a day-old leftover of a
                                  killed process is removed by the next pull)

Safe under concurrent processes without locks: everything is written under ``tmp/`` with a unique name and renamed
into place, and everything is addressed by content, so two processes racing to add the same thing add identical
bytes and the loser's rename is harmless. A blob enters ``blobs/`` only after its sha256 was checked.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from .errors import HubError, IntegrityError, ManifestError, OfflineError
from .local import remove_stale_temporaries
from .manifest import FileEntry, Manifest, check_tag_name, is_version_id, is_version_prefix
from .safety import check_file
from .urls import canonical_url


def default_cache_dir() -> Path:
    """``$BYTEZOO_CACHE`` or ``~/.cache/bytezoo``; the hub keeps its files in the ``hub`` folder inside it."""
    return Path(os.environ.get("BYTEZOO_CACHE") or Path.home() / ".cache" / "bytezoo").expanduser()


def offline_from_environment() -> bool:
    return os.environ.get("BYTEZOO_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class Cache:
    """A content-addressed local cache of hub versions. ``Cache()`` uses :func:`default_cache_dir`."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.root = Path(directory if directory is not None else default_cache_dir()) / "hub"

    # ------------------------------------------------------------------ paths
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256

    def snapshot_path(self, version: str) -> Path:
        return self.root / "snapshots" / version

    def manifest_path(self, version: str) -> Path:
        return self.root / "manifests" / f"{version}.json"

    def _ref_dir(self, url: str) -> Path:
        key = hashlib.sha256(canonical_url(url).encode()).hexdigest()[:24]
        return self.root / "refs" / key

    def _new_temporary(self) -> Path:
        directory = self.root / "tmp"
        directory.mkdir(parents=True, exist_ok=True)
        return directory / uuid.uuid4().hex

    # ------------------------------------------------------------------ snapshots
    def has_snapshot(self, version: str) -> bool:
        return self.snapshot_path(version).is_dir() and self.manifest_path(version).is_file()

    def materialize(
        self, manifest: Manifest, fetch: Callable[[FileEntry, str], tuple[str, int]], max_workers: int = 8
    ) -> Path:
        """Make sure every blob of ``manifest`` is cached and return the version's snapshot directory.

        ``fetch(entry, local_path)`` downloads one blob and returns the (sha256, size) of the bytes it wrote; they
        are checked against the manifest here before the blob enters the cache (:class:`IntegrityError`
        otherwise). Blobs are fetched in parallel threads.
        """
        snapshot = self.snapshot_path(manifest.version)
        if self.has_snapshot(manifest.version):
            return snapshot
        remove_stale_temporaries(self.root / "tmp")
        missing = [entry for entry in manifest.files if not self.blob_path(entry.sha256).is_file()]
        # What a download writes: never more than each entry's size + 1 bytes (remote.download_blob stops there), so
        # a manifest claiming terabytes fails here, before a byte is downloaded, and one that lies low fails by name.
        needed = sum(entry.size + 1 for entry in missing)
        free = self._free_bytes()
        if needed > free:
            raise HubError(f"version {manifest.version} lists {needed - len(missing):,} bytes to download, more than "
                           f"the {free:,} free where the cache is ({self.root}): free space or set BYTEZOO_CACHE "
                           "elsewhere")
        if missing:
            with ThreadPoolExecutor(max_workers=min(max_workers, len(missing))) as pool:
                # list() re-raises the first failure; the other downloads finish or fail on their own.
                list(pool.map(lambda entry: self._add_blob(entry, fetch), missing))
        self._build_snapshot(manifest)
        self._write_atomic(self.manifest_path(manifest.version), manifest.to_json())
        return snapshot

    def _add_blob(self, entry: FileEntry, fetch: Callable[[FileEntry, str], tuple[str, int]]) -> Path:
        blob = self.blob_path(entry.sha256)
        if blob.is_file():
            return blob
        temporary = self._new_temporary()
        try:
            actual_sha256, actual_size = fetch(entry, str(temporary))
            if actual_size > entry.size:
                raise IntegrityError(entry.path, entry.sha256, actual_sha256, entry.size, actual_size, consequence=(
                    "The blob on the hub is longer than its manifest entry says (reading stopped one byte past it); "
                    "nothing was written to the cache."))
            if (actual_sha256, actual_size) != (entry.sha256, entry.size):
                raise IntegrityError(entry.path, entry.sha256, actual_sha256, entry.size, actual_size)
            os.chmod(temporary, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            blob.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, blob)
        finally:
            temporary.unlink(missing_ok=True)
        return blob

    def _build_snapshot(self, manifest: Manifest) -> None:
        staging = self._new_temporary()
        try:
            for entry in manifest.files:
                blob = self.blob_path(entry.sha256)
                check_file(blob, entry.path)  # the hub's writer may not have checked: never serve a pickle
                target = staging / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(blob, target)
                except OSError:  # no hard links on this file system: copy, if the copy fits
                    if entry.size > self._free_bytes():
                        raise HubError(f"no room to copy {entry.path!r} ({entry.size:,} bytes) into the snapshot of "
                                       f"version {manifest.version} in {self.root} (this file system has no hard "
                                       "links): free space or set BYTEZOO_CACHE elsewhere") from None
                    shutil.copyfile(blob, target)
            final = self.snapshot_path(manifest.version)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, final)
            except OSError as error:
                # Another process finished the same snapshot first; its content is identical to ours.
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def load_manifest(self, version: str) -> Manifest:
        path = self.manifest_path(version)
        return Manifest.from_json(path.read_bytes(), f"cached manifest {path}")

    # ------------------------------------------------------------------ refs (offline mode)
    def record_tag(self, url: str, tag: str, version: str) -> None:
        """Remember that ``tag`` (the name the user asked for, never one read from a hub) of ``url`` pointed to
        ``version``, for offline mode."""
        check_tag_name(tag)
        if not is_version_id(version):
            raise ManifestError(f"{version!r} is not a version id")
        ref_dir = self._ref_dir(url)
        self._write_atomic(ref_dir / "url", canonical_url(url).encode())
        self._write_atomic(ref_dir / "tags" / tag, version.encode())

    def resolve_offline(self, url: str, selector: str) -> Manifest:
        """The cached version for ``selector`` (a tag as last pulled from ``url``, or a version id or prefix)."""
        if not (is_version_prefix(selector) or is_version_id(selector)):
            check_tag_name(selector)
        tag_file = self._ref_dir(url) / "tags" / selector
        if tag_file.is_file():
            version = tag_file.read_text().strip()
            if not is_version_id(version):
                raise OfflineError(f"offline mode: the cache's record of tag {selector!r} ({tag_file}) is damaged; "
                                   "pull it once while online")
        elif is_version_id(selector) or is_version_prefix(selector):
            matches = sorted(
                path.name for path in (self.root / "snapshots").glob(f"{selector}*") if self.has_snapshot(path.name)
            )
            if len(matches) != 1:
                problem = "is not in the cache" if not matches else f"is ambiguous in the cache: {matches}"
                raise OfflineError(f"offline mode: version {selector!r} {problem}; pull it once while online")
            version = matches[0]
        else:
            raise OfflineError(
                f"offline mode: tag {selector!r} of {canonical_url(url)} was never pulled into the cache "
                f"{self.root}; pull it once while online"
            )
        if not self.has_snapshot(version):
            raise OfflineError(f"offline mode: version {version} is not in the cache {self.root}")
        return self.load_manifest(version)

    # ------------------------------------------------------------------ helpers
    def _free_bytes(self) -> int:
        existing = next(p for p in (self.root, *self.root.parents) if p.exists())
        return shutil.disk_usage(existing).free

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._new_temporary()
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
