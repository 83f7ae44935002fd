"""A hub repository on any fsspec file system: the storage layout and the only code that touches remote bytes.

Layout under the repository URL::

    blobs/sha256/<64 hex>        file contents, addressed by their sha256; written whole or not at all
    versions/<version>.json      manifests: a version exists once its manifest does, and never changes
    tags/<name>.json             movable names (``latest``, user tags), rewritten last on every push
    tags/.lock                   held while a push moves tags (see :meth:`HubRepo.update_tags`)
    .incoming/                   temporary names on local file systems, renamed into place (readers ignore it;
                                 a day-old leftover of a killed push is removed by the next push)

Every object is written atomically: object stores (S3, GCS, the Hugging Face Hub) and ``memory://`` publish an
object only once its upload completes, and on local disks bytes go to ``.incoming/`` and are renamed into place.
Readers trust only manifests, and a manifest is written after all of its blobs, so an interrupted push is invisible.

Whatever comes back from a hub is read with a cap: a blob never beyond its manifest entry's size + 1 bytes, a
manifest or tag never beyond :data:`~bytezoo.untrusted.limits.MAX_DOCUMENT_BYTES`; every request has connect and idle
timeouts (:mod:`bytezoo.untrusted.network`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import queue
import re
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem

from bytezoo.untrusted import network
from bytezoo.untrusted.limits import MAX_DOCUMENT_BYTES, read_at_most
from bytezoo.untrusted.names import printable
from bytezoo.redaction import redact_url

from .errors import HubError, ManifestError, NotFoundError, UnsafeFileError
from .local import CHUNK_SIZE, remove_stale_temporaries
from .manifest import FileEntry, Manifest, Tag, is_tag_name, is_version_id, is_version_prefix, utc_now

logger = logging.getLogger("bytezoo.hub")

READ_ONLY_PROTOCOLS = frozenset({"http", "https"})
STREAMING_PROTOCOLS = frozenset({"http", "https", "hf"})  # one request per read, no ranges: read as streams
PART_SIZE = 16 * 2**20  # blobs larger than this download as parallel ranged reads ...
PARALLEL_PARTS = 4  # ... this many at a time
_MANIFEST_NAME_RE = re.compile(r"([0-9a-f]{16})\.json")
_TAG_NAME_RE = re.compile(r"(.+)\.json")
TAG_LOCK = ".lock"  # in tags/; not a tag (tag names start with a letter or digit)
LOCK_WAIT_SECONDS = 60.0  # a push waits this long for another to finish moving tags (it takes milliseconds)
LOCK_STALE_SECONDS = 120.0  # a lock this old was left by a killed push: broken, with a warning
UNREADABLE_LOCK_SECONDS = 5.0  # a lock whose content stays unreadable this long was left half-written


_PROCESS_LOCKS: dict[tuple, threading.Lock] = {}  # one per repository: this process's pushes move its tags in turn


def _lock_time(held: bytes | None) -> float | None:
    try:
        return float(json.loads(held)["time"])
    except (TypeError, ValueError, KeyError):
        return None


def _copy_hashing(source, out, limit: int, queue_depth: int = 4) -> tuple[str, int]:
    """Copy at most ``limit`` bytes of file object ``source`` to ``out`` and hash them, reading in a second thread so
    that network reads overlap hashing and writing (both release the GIL). Returns (sha256 hex digest, size)."""
    chunks: queue.Queue = queue.Queue(maxsize=queue_depth)
    failure: list[BaseException] = []
    stop = threading.Event()

    def read_all():
        remaining = limit
        try:
            while remaining > 0 and not stop.is_set() and (chunk := source.read(min(CHUNK_SIZE, remaining))):
                remaining -= len(chunk)
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
        self.fs, self.root = network.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.display_url = redact_url(self.url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._protocols = frozenset(protocols)
        self.read_only = bool(READ_ONLY_PROTOCOLS.intersection(protocols))
        self.streaming = bool(STREAMING_PROTOCOLS.intersection(protocols))
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

    def errors(self, doing: str):
        """A failed request to the hub inside it (a status, a refused connection, a timeout) becomes one
        :class:`HubError` line: ``{doing} {URL}: {status}: {what to do}``."""
        return network.remote_errors(self.url, doing, HubError)  # (shown redacted, its secrets masked anywhere)

    # ------------------------------------------------------------------ reading
    def _read_document(self, path: str) -> bytes | None:
        """A manifest or tag (``None`` if absent), never more than :data:`MAX_DOCUMENT_BYTES` of it."""
        try:
            if self.streaming:  # a server may ignore a range and send everything: read the stream, and stop
                with network.guarded(self.fs.open(path, "rb", block_size=0, cache_type="none")) as handle:
                    data = read_at_most(handle, MAX_DOCUMENT_BYTES)
            else:
                data = self.fs.cat_file(path, start=0, end=MAX_DOCUMENT_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(data) > MAX_DOCUMENT_BYTES:
            raise ManifestError(f"{self.display_url} {posixpath.relpath(path, self.root)} holds more than "
                                f"{MAX_DOCUMENT_BYTES:,} bytes: not a bytezoo manifest or tag; refusing it")
        return data

    def read_tag(self, name: str) -> Tag | None:
        """The tag ``name`` (``None`` if there is none, or ``name`` cannot be a tag); its document must name it."""
        if not is_tag_name(name):
            return None
        data = self._read_document(self.tag_path(name))
        return None if data is None else Tag.from_json(data, f"{self.display_url} tags/{name}.json", name)

    def read_manifest(self, version: str) -> Manifest:
        if not is_version_id(version):
            raise ManifestError(f"{printable(repr(version))} is not a version id ({self.display_url})")
        data = self._read_document(self.manifest_path(version))
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
        names = [match[1] for match in map(_TAG_NAME_RE.fullmatch, self._list_names("tags")) if match]
        foreign = [name for name in names if not is_tag_name(name)]
        if foreign:
            logger.warning("ignoring %d file(s) in %s/tags that are not tags: %s", len(foreign), self.display_url,
                           ", ".join(printable(repr(name)) for name in foreign[:5]))
        tags = [self.read_tag(name) for name in names if name not in foreign]
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

        The caller compares them with the manifest. Never more than ``entry.size + 1`` bytes are read or written: a
        blob longer than its entry is told by that one extra byte, whatever its real size. Small blobs come in one
        ranged request. Large blobs on file systems with ranged reads come in parallel parts, hashed in order as they
        arrive, so verifying costs little beyond the download itself; on streaming protocols (http, hf), where a
        server may ignore a range, a reader thread fetches the stream, and stops, while this one hashes.
        """
        remote = self.blob_path(entry.sha256)
        limit = entry.size + 1
        try:
            if not self.streaming:
                if entry.size <= PART_SIZE:
                    data = self.fs.cat_file(remote, start=0, end=limit)
                    with open(destination, "wb") as out:
                        out.write(data)
                    return hashlib.sha256(data).hexdigest(), len(data)
                if self.fs.size(remote) == entry.size:
                    return self._download_in_parts(remote, destination, entry.size)
            # Streaming, or not the size the manifest says: read it in order, up to the limit (the error names it).
            source = self.fs.open(remote, "rb", block_size=0 if self.streaming else CHUNK_SIZE, cache_type="none")
            if self.streaming:
                source = network.guarded(source)  # a server trickling a byte now and then ends in the idle timeout
        except FileNotFoundError:
            raise NotFoundError(
                f"the manifest lists {entry.path!r} (sha256 {entry.sha256}), but its blob "
                f"{self.blob_url(entry.sha256)} is missing: the hub is damaged; push the files again to repair it"
            ) from None
        with source, open(destination, "wb") as out:
            return _copy_hashing(source, out, limit)

    def _download_in_parts(self, remote: str, destination: str, size: int) -> tuple[str, int]:
        digest = hashlib.sha256()
        received = 0
        starts = iter(range(0, size, PART_SIZE))
        with ThreadPoolExecutor(PARALLEL_PARTS) as pool, open(destination, "wb") as out:
            in_flight: deque = deque()

            def request_next_part():
                start = next(starts, None)
                if start is not None:
                    end = min(start + PART_SIZE, size)
                    in_flight.append(pool.submit(self.fs.cat_file, remote, start=start, end=end))

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

    def update_tags(self, version: str, expected: dict[str, str | None]) -> None:
        """Point every tag of ``expected`` at ``version``, compare-and-swap: under the repository's tag lock, and
        only if each tag still points where it did when the push read it (``expected``: tag -> version, ``None``
        for a tag that did not exist). Otherwise nothing is moved and the push that lost is told."""
        with self._tag_lock():
            moved = {}
            for name, before in expected.items():
                tag = self.read_tag(name)
                now = tag.version if tag else None
                if now != before and now != version:
                    moved[name] = now
            if moved:
                what = ", ".join(f"{name!r} to {now}" for name, now in moved.items())
                raise HubError(f"another push moved {what} on {self.display_url} while this one ran: version {version} "
                               "is published (pull it by that id) but no tag was moved. Push again to move the tags "
                               "(nothing is uploaded twice)")
            updated = utc_now()
            for name in expected:
                self.write_tag(Tag(name=name, version=version, updated=updated))

    @contextlib.contextmanager
    def _tag_lock(self):
        """Held while tags move: ``tags/.lock``, created exclusively (``O_EXCL`` on local disks, a conditional PUT
        (``If-None-Match: *``) on S3 and stores that honour it, memory:// under a process lock; other stores check
        then write, which narrows a race without closing it). A lock older than :data:`LOCK_STALE_SECONDS` was left
        by a killed push and is broken, with a warning."""
        path = self._path("tags", TAG_LOCK)
        with _PROCESS_LOCKS.setdefault((tuple(sorted(self._protocols)), self.root), threading.Lock()):
            token = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex,
                                "time": time.time()}).encode()
            deadline, delay, first_seen = time.monotonic() + LOCK_WAIT_SECONDS, 0.01, {}
            while not self._create_exclusive(path, token):
                held = self._read_document(path)
                if held is None:
                    continue  # released meanwhile
                since = _lock_time(held)  # by the holder's clock
                if since is None:  # unreadable: being written (a matter of milliseconds), or left half-written
                    stale = time.monotonic() - first_seen.setdefault(held, time.monotonic()) > UNREADABLE_LOCK_SECONDS
                else:
                    stale = time.time() - since > LOCK_STALE_SECONDS
                if stale:
                    logger.warning("breaking the tag lock of %s, left by a push that did not finish", self.display_url)
                    if self._read_document(path) == held:
                        self._remove(path)
                    continue
                if time.monotonic() > deadline:
                    raise HubError(f"the tags of {self.display_url} have been locked by another push for over "
                                   f"{LOCK_WAIT_SECONDS:.0f} s; this push's version is published but no tag was moved: "
                                   f"push again later (a lock left by a killed push is broken after "
                                   f"{LOCK_STALE_SECONDS:.0f} s)")
                time.sleep(delay)
                delay = min(2 * delay, 0.25)
            try:
                yield
            finally:
                if self._read_document(path) == token:
                    self._remove(path)

    def _create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` if it does not exist; False if it does."""
        if self.is_local:
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            try:
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            return True
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as error:  # s3fs: a failed If-None-Match without the condition named (SeaweedFS, MinIO)
            if "pre-condition" not in str(error).lower() and "precondition" not in str(error).lower():
                raise
            return False
        finally:
            self.fs.invalidate_cache(path)
        return True

    def _remove(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(path)

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
