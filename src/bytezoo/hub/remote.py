"""A hub repository on any fsspec file system: the storage layout and the only code that touches remote bytes.

Layout under the repository URL::

    blobs/sha256/<64 hex>        file contents, addressed by their sha256; written whole or not at all
    versions/<version>.json      manifests: a version exists once its manifest does, and never changes
    tags/<name>.json             movable names (``latest``, user tags), rewritten last on every push
    .incoming/                   temporary names on local file systems, renamed into place (readers ignore it;
                                 a day-old leftover of a killed push is removed by the next push)

Every object is written atomically: object stores (S3, GCS, the Hugging Face Hub) and ``memory://`` publish an
object only once its upload completes, and on local disks bytes go to ``.incoming/`` and are renamed into place.
Readers trust only manifests, and a manifest is written after all of its blobs, so an interrupted push is invisible.
"""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import queue
import re
import shutil
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import HubError, ManifestError, NotFoundError, UnsafeFileError
from .manifest import FileEntry, Manifest, Tag, is_version_id, is_version_prefix
from .urls import redact_url

logger = logging.getLogger("bytezoo.hub")

READ_ONLY_PROTOCOLS = frozenset({"http", "https"})
CHUNK_SIZE = 8 * 2**20
PART_SIZE = 16 * 2**20  # blobs larger than this download as parallel ranged reads ...
PARALLEL_PARTS = 4  # ... this many at a time
STALE_AFTER_SECONDS = 24 * 3600  # temporaries older than this were left by killed processes
_MANIFEST_NAME_RE = re.compile(r"([0-9a-f]{16})\.json")
_TAG_NAME_RE = re.compile(r"(.+)\.json")


def sha256_of_file(path: str | Path) -> tuple[str, int]:
    """The sha256 hex digest and size of a local file, read in large chunks (hashlib releases the GIL)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def remove_stale_temporaries(directory: str | os.PathLike, max_age_seconds: float = STALE_AFTER_SECONDS) -> None:
    """Delete what killed processes left in a work directory: entries untouched for ``max_age_seconds``.

    Live work is never that old (its files are written continuously), so this cannot disturb another process.
    """
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    cutoff = time.time() - max_age_seconds
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.remove(entry.path)
        except FileNotFoundError:  # another process cleaned it first
            continue


def _copy_hashing(source, out, queue_depth: int = 4) -> tuple[str, int]:
    """Copy file object ``source`` to ``out`` and hash the bytes, reading in a second thread so that network
    reads overlap hashing and writing (both release the GIL). Returns (sha256 hex digest, size)."""
    chunks: queue.Queue = queue.Queue(maxsize=queue_depth)
    failure: list[BaseException] = []
    stop = threading.Event()

    def read_all():
        try:
            while not stop.is_set() and (chunk := source.read(CHUNK_SIZE)):
                chunks.put(chunk)
        except BaseException as error:  # handed to the consuming thread, which raises it
            failure.append(error)
        finally:
            chunks.put(None)

    reader = threading.Thread(target=read_all, name="bytezoo-hub-download", daemon=True)
    reader.start()
    digest = hashlib.sha256()
    size = 0
    try:
        while (chunk := chunks.get()) is not None:
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                chunks.get(timeout=0.05)
            except queue.Empty:
                pass
        reader.join()
    if failure:
        raise failure[0]
    return digest.hexdigest(), size


class HubRepo:
    """One repository (one model or classifier name) on a hub, e.g. ``s3://team-models/mlstm-4096``.

    ``storage_options`` go to fsspec (and stay in memory); credentials otherwise come from the environment or
    fsspec's configuration (``FSSPEC_S3_KEY``, ``~/.config/fsspec/``, ``AWS_*``, ``HF_TOKEN``...).
    """

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None):
        self.url = os.fspath(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.display_url = redact_url(self.url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._protocols = frozenset(protocols)
        self.read_only = bool(READ_ONLY_PROTOCOLS.intersection(protocols))
        self.is_local = isinstance(self.fs, LocalFileSystem)
        # Listings (s3fs, gcsfs) are cached per file-system instance; another process may have pushed since.
        self.fs.invalidate_cache()

    # ------------------------------------------------------------------ paths
    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def blob_path(self, sha256: str) -> str:
        return self._path("blobs", "sha256", sha256)

    def manifest_path(self, version: str) -> str:
        return self._path("versions", f"{version}.json")

    def tag_path(self, name: str) -> str:
        return self._path("tags", f"{name}.json")

    def blob_url(self, sha256: str) -> str:
        """Where a blob lives, for messages (credentials redacted)."""
        return f"{self.display_url.rstrip('/')}/blobs/sha256/{sha256}"

    # ------------------------------------------------------------------ reading
    def _cat(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def read_tag(self, name: str) -> Tag | None:
        data = self._cat(self.tag_path(name))
        return None if data is None else Tag.from_json(data, f"{self.display_url} tags/{name}.json")

    def read_manifest(self, version: str) -> Manifest:
        data = self._cat(self.manifest_path(version))
        if data is None:
            raise NotFoundError(f"version {version} not found in {self.display_url}")
        manifest = Manifest.from_json(data, f"{self.display_url} versions/{version}.json")
        if manifest.version != version:
            raise HubError(f"manifest {self.display_url} versions/{version}.json describes version {manifest.version}")
        return manifest

    def _list_names(self, directory: str) -> list[str]:
        try:
            entries = self.fs.ls(self._path(directory), detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [posixpath.basename(entry.rstrip("/")) for entry in entries]

    def list_version_ids(self) -> list[str]:
        """Ids of complete versions (those with a manifest); temporary and foreign files are ignored."""
        names = (_MANIFEST_NAME_RE.fullmatch(name) for name in self._list_names("versions"))
        return sorted(match[1] for match in names if match)

    def list_tags(self) -> list[Tag]:
        names = (_TAG_NAME_RE.fullmatch(name) for name in self._list_names("tags"))
        tags = [self.read_tag(match[1]) for match in names if match]
        return sorted((tag for tag in tags if tag is not None), key=lambda tag: tag.name)

    def resolve(self, selector: str) -> tuple[Manifest, Tag | None]:
        """The manifest for a tag, a version id, or an unambiguous version-id prefix (6+ hex digits), and the tag
        it was found through (``None`` for a version). Tags are looked up first."""
        tag = self.read_tag(selector)
        if tag is not None:
            try:
                return self.read_manifest(tag.version), tag
            except NotFoundError:
                raise NotFoundError(
                    f"tag {selector!r} of {self.display_url} points to version {tag.version}, which has no manifest"
                ) from None
        if is_version_id(selector):
            return self.read_manifest(selector), None
        if is_version_prefix(selector):
            matches = [version for version in self.list_version_ids() if version.startswith(selector)]
            if len(matches) == 1:
                return self.read_manifest(matches[0]), None
            if len(matches) > 1:
                raise NotFoundError(f"version prefix {selector!r} is ambiguous in {self.display_url}: {matches}")
        if not self.list_version_ids():
            raise self.no_repository_error()
        raise NotFoundError(f"{self.display_url} has no tag or version {selector!r}")

    def no_repository_error(self) -> NotFoundError:
        hint = " (or the http server does not list directories: pull a tag)" if self.read_only else ""
        return NotFoundError(f"no bytezoo hub repository at {self.display_url}: it has no complete versions{hint}")

    def download_blob(self, entry: FileEntry, destination: str) -> tuple[str, int]:
        """Copy the blob for ``entry`` to the local file ``destination``; return the sha256 and size received.

        The caller compares them with the manifest. Small blobs come in one request. Large blobs on file systems
        with ranged reads come in parallel parts, hashed in order as they arrive, so verifying costs little beyond
        the download itself; on streaming protocols (http, hf) a reader thread fetches while this one hashes.
        """
        remote = self.blob_path(entry.sha256)
        streaming = bool({"http", "https", "hf"}.intersection(self._protocols))  # one request, no ranges
        try:
            if entry.size <= PART_SIZE:
                data = self.fs.cat_file(remote)
                with open(destination, "wb") as out:
                    out.write(data)
                return hashlib.sha256(data).hexdigest(), len(data)
            if not streaming and self.fs.size(remote) == entry.size:
                return self._download_in_parts(remote, destination, entry.size)
            # Streaming, or not the size the manifest says: read it whole (an error then names its hash).
            source = self.fs.open(remote, "rb", block_size=0 if streaming else CHUNK_SIZE, cache_type="none")
        except FileNotFoundError:
            raise NotFoundError(
                f"the manifest lists {entry.path!r} (sha256 {entry.sha256}), but its blob "
                f"{self.blob_url(entry.sha256)} is missing: the hub is damaged; push the files again to repair it"
            ) from None
        with source, open(destination, "wb") as out:
            return _copy_hashing(source, out)

    def _download_in_parts(self, remote: str, destination: str, size: int) -> tuple[str, int]:
        digest = hashlib.sha256()
        received = 0
        starts = iter(range(0, size, PART_SIZE))
        with ThreadPoolExecutor(PARALLEL_PARTS) as pool, open(destination, "wb") as out:
            in_flight: deque = deque()

            def request_next_part():
                start = next(starts, None)
                if start is not None:
                    in_flight.append(pool.submit(self.fs.cat_file, remote, start=start, end=min(start + PART_SIZE, size)))

            for _ in range(PARALLEL_PARTS + 1):  # one part ahead of the workers, bounding memory
                request_next_part()
            while in_flight:
                part = in_flight.popleft().result()
                request_next_part()
                digest.update(part)
                out.write(part)
                received += len(part)
        return digest.hexdigest(), received

    # ------------------------------------------------------------------ writing
    def check_writable(self) -> None:
        if self.read_only:
            raise HubError(f"{self.display_url} is read-only: http(s) hubs can be pulled from, not pushed to")

    def has_blob(self, entry: FileEntry) -> bool:
        """Whether a complete blob for ``entry`` is already there (blobs are only ever published whole)."""
        try:
            return self.fs.size(self.blob_path(entry.sha256)) == entry.size
        except FileNotFoundError:
            return False

    def upload_blob(self, entry: FileEntry, local_path: str | Path) -> None:
        """Publish ``local_path`` as the blob for ``entry``, atomically; verify the stored size afterwards."""
        remote = self.blob_path(entry.sha256)
        if self.is_local:
            self._publish_local(remote, source=local_path, expected_sha256=entry.sha256)
        else:
            self.fs.put_file(str(local_path), remote)
            self.fs.invalidate_cache(remote)
        stored = self.fs.size(remote)
        if stored != entry.size:
            self.delete_blob(entry.sha256)  # a blob must match its name, or not be there at all
            raise HubError(
                f"upload of {entry.path!r} to {self.blob_url(entry.sha256)} stored {stored} of {entry.size} bytes "
                "(the file changed while it was pushed, or the store misbehaved); nothing was published"
            )

    def delete_blob(self, sha256: str) -> None:
        try:
            self.fs.rm_file(self.blob_path(sha256))
        except FileNotFoundError:
            pass

    def remove_stale_temporaries(self) -> None:
        """Clear ``.incoming/`` of what killed pushes left behind (local hubs only; object stores keep nothing)."""
        if self.is_local:
            remove_stale_temporaries(self._path(".incoming"))

    def write_manifest(self, manifest: Manifest) -> bool:
        """Publish a manifest unless the version already exists (versions are immutable). True if written.

        A damaged manifest for the same version is replaced: the version id fixes the file list, so the
        replacement says exactly what the original did.
        """
        path = self.manifest_path(manifest.version)
        if self.fs.exists(path):
            try:
                self.read_manifest(manifest.version)
                return False
            except (ManifestError, UnsafeFileError) as error:
                logger.warning("replacing the damaged manifest of version %s: %s", manifest.version, error)
        self._write_small(path, manifest.to_json())
        return True

    def write_tag(self, tag: Tag) -> None:
        self._write_small(self.tag_path(tag.name), tag.to_json())

    def _write_small(self, path: str, data: bytes) -> None:
        if self.is_local:
            self._publish_local(path, data=data)
        else:
            # One PUT: object stores and memory:// make the object visible only once it is complete.
            self.fs.pipe_file(path, data)
            self.fs.invalidate_cache(path)

    def _publish_local(self, path: str, *, source=None, data: bytes | None = None, expected_sha256=None) -> None:
        """Write to ``.incoming/`` on the same disk, fsync, then rename into place (atomic on POSIX)."""
        incoming = self._path(".incoming")
        os.makedirs(incoming, exist_ok=True)
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        temporary = posixpath.join(incoming, f"{posixpath.basename(path)}.{uuid.uuid4().hex}")
        try:
            digest = hashlib.sha256()
            with open(temporary, "wb") as out:
                if data is not None:
                    out.write(data)
                else:
                    with open(source, "rb") as src:
                        while chunk := src.read(CHUNK_SIZE):
                            digest.update(chunk)
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
                raise HubError(f"{source} changed while it was being pushed; push again once it is final")
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
