"""Manifests (immutable versions) and tags (movable names for versions), and their JSON forms.

A version is identified by its content: the version id is the first 16 hex digits of the sha256 of the sorted
``(path, sha256, size)`` list. Pushing the same files twice gives the same version, a reader can recompute the id
from a manifest to check that it was not edited, and a cached version never needs revalidating.

Manifest, as stored at ``versions/<version>.json``::

    {"format": "bytezoo.hub.manifest", "format_version": 1, "version": "3f9c0a1d2b4e5f60",
     "created": "2026-11-23T20:15:02Z", "created_by": "bytezoo 0.1.0",
     "files": [{"path": "config.json", "sha256": "…64 hex…", "size": 812}, …]}

Tag, as stored at ``tags/<name>.json``::

    {"format": "bytezoo.hub.tag", "format_version": 1, "tag": "latest", "version": "3f9c0a1d2b4e5f60",
     "updated": "2026-11-23T20:15:03Z"}
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from bytezoo.untrusted import jsonio
from bytezoo.untrusted.names import check_distinct_paths

from .errors import ManifestError, UnsafeFileError
from .safety import check_allowed_name

MANIFEST_FORMAT = "bytezoo.hub.manifest"
TAG_FORMAT = "bytezoo.hub.tag"
FORMAT_VERSION = 1
VERSION_ID_LENGTH = 16
DEFAULT_TAG = "latest"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_VERSION_RE = re.compile(rf"[0-9a-f]{{{VERSION_ID_LENGTH}}}")
_VERSION_PREFIX_RE = re.compile(rf"[0-9a-f]{{6,{VERSION_ID_LENGTH}}}")
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_version_id(text: str) -> bool:
    return bool(_VERSION_RE.fullmatch(text))


def is_version_prefix(text: str) -> bool:
    """Whether ``text`` could abbreviate a version id (6 to 16 lowercase hex digits), like a short git hash."""
    return bool(_VERSION_PREFIX_RE.fullmatch(text))


def check_tag_name(name: str) -> str:
    """Return ``name`` if it is a valid tag, else raise ``ValueError`` saying why."""
    if not isinstance(name, str) or not _TAG_RE.fullmatch(name):
        raise ValueError(
            f"invalid tag {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if is_version_id(name):
        raise ValueError(f"invalid tag {name!r}: it looks like a version id ({VERSION_ID_LENGTH} hex digits)")
    return name


def is_tag_name(text) -> bool:
    """Whether ``text`` may name a tag (:func:`check_tag_name` would accept it)."""
    try:
        check_tag_name(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class FileEntry:
    """One file of a version: its relative POSIX path, the sha256 of its bytes, and its size in bytes."""

    path: str
    sha256: str
    size: int


def compute_version_id(files: Iterable[FileEntry]) -> str:
    """The content address of a set of files: sha256 over the sorted ``sha256 size path`` lines, shortened."""
    digest = hashlib.sha256()
    for entry in sorted(files, key=lambda entry: entry.path):
        digest.update(f"{entry.sha256} {entry.size} {entry.path}\n".encode())
    return digest.hexdigest()[:VERSION_ID_LENGTH]


@dataclass(frozen=True)
class Manifest:
    """An immutable version: every file with its checksum and size. Build one with :meth:`for_files`."""

    version: str
    files: tuple[FileEntry, ...]
    created: str
    created_by: str

    @classmethod
    def for_files(cls, files: Iterable[FileEntry], created_by: str) -> "Manifest":
        entries = tuple(sorted(files, key=lambda entry: entry.path))
        return cls(version=compute_version_id(entries), files=entries, created=utc_now(), created_by=created_by)

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files)

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    def to_json(self) -> bytes:
        document = {
            "format": MANIFEST_FORMAT,
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "created": self.created,
            "created_by": self.created_by,
            "total_size": self.total_size,
            "files": [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in self.files],
        }
        return (jsonio.dumps(document, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> "Manifest":
        """Parse and fully validate a manifest; ``source`` names where it came from in error messages."""
        document = _load_document(data, source, MANIFEST_FORMAT)
        version = document.get("version")
        raw_files = document.get("files")
        if not isinstance(version, str) or not is_version_id(version):
            raise ManifestError(f"malformed manifest {source}: 'version' must be {VERSION_ID_LENGTH} hex digits")
        if not isinstance(raw_files, list):
            raise ManifestError(f"malformed manifest {source}: 'files' must be a list")
        files = []
        seen = set()
        for index, raw in enumerate(raw_files):
            entry = _parse_entry(raw, f"{source} files[{index}]")
            if entry.path in seen:
                raise ManifestError(f"malformed manifest {source}: {entry.path!r} is listed twice")
            seen.add(entry.path)
            files.append(entry)
        # paths that cannot all exist in one folder: x.json beside x.json/y.json, or README.md beside readme.md
        check_distinct_paths(seen, f"manifest {source} is refused", UnsafeFileError)
        manifest = cls(
            version=version,
            files=tuple(sorted(files, key=lambda entry: entry.path)),
            created=str(document.get("created", "")),
            created_by=str(document.get("created_by", "")),
        )
        expected = compute_version_id(manifest.files)
        if expected != version:
            raise ManifestError(
                f"manifest {source} does not match its contents: it says version {version} but its files hash to "
                f"{expected} (the manifest was edited or damaged)"
            )
        return manifest


@dataclass(frozen=True)
class Tag:
    """A movable name (``latest``, ``v1``, ``sst2-best``) pointing at a version."""

    name: str
    version: str
    updated: str

    def to_json(self) -> bytes:
        document = {
            "format": TAG_FORMAT,
            "format_version": FORMAT_VERSION,
            "tag": self.name,
            "version": self.version,
            "updated": self.updated,
        }
        return (jsonio.dumps(document, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str, name: str | None = None) -> "Tag":
        """Parse and validate a tag document. ``name`` is the tag it was read as (its file's name): the document
        must say the same, since whatever a reader records about the tag is keyed by that name."""
        document = _load_document(data, source, TAG_FORMAT)
        written, version = document.get("tag"), document.get("version")
        if not isinstance(version, str) or not is_version_id(version):
            raise ManifestError(f"malformed tag {source}: 'version' must be {VERSION_ID_LENGTH} hex digits")
        try:
            check_tag_name(written)
        except ValueError as error:
            raise ManifestError(f"malformed tag {source}: {error}") from None
        if name is not None and written != name:
            raise ManifestError(f"malformed tag {source}: it says it is tag {written!r}, not {name!r} (its file's "
                                "name); refusing it")
        return cls(name=written, version=version, updated=str(document.get("updated", "")))


@dataclass(frozen=True)
class VersionInfo:
    """One complete version of a repository, as :func:`bytezoo.hub.ls` reports it."""

    version: str
    created: str
    files: int
    size: int
    tags: tuple[str, ...]

    @classmethod
    def of(cls, manifest: Manifest, tags: Iterable[str]) -> "VersionInfo":
        return cls(version=manifest.version, created=manifest.created, files=len(manifest.files),
                   size=manifest.total_size, tags=tuple(tags))


def _load_document(data: bytes, source: str, expected_format: str) -> dict[str, Any]:
    kind = "manifest" if expected_format == MANIFEST_FORMAT else "tag"
    try:
        document = jsonio.loads(data)
    except ValueError as error:
        raise ManifestError(f"malformed {kind} {source}: not valid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != expected_format:
        raise ManifestError(f"malformed {kind} {source}: expected a JSON object with format {expected_format!r}")
    format_version = document.get("format_version")
    if format_version != FORMAT_VERSION:
        raise ManifestError(
            f"{kind} {source} has format_version {format_version!r}; this bytezoo reads version {FORMAT_VERSION} "
            "(upgrade bytezoo to read newer hubs)"
        )
    return document


def _parse_entry(raw: Any, where: str) -> FileEntry:
    if not isinstance(raw, dict):
        raise ManifestError(f"malformed manifest entry {where}: expected an object with path, sha256 and size")
    path, sha256, size = raw.get("path"), raw.get("sha256"), raw.get("size")
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise ManifestError(f"malformed manifest entry {where}: 'sha256' must be 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"malformed manifest entry {where}: 'size' must be a non-negative integer")
    try:
        check_allowed_name(path)
    except UnsafeFileError as error:
        raise UnsafeFileError(f"manifest entry {where} is refused: {error}") from None
    return FileEntry(path=path, sha256=sha256, size=size)
