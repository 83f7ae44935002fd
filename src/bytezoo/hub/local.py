"""The local side of every backend: which files of a folder are shared, what they hold, and where pulled files land.

A push reads a folder through :func:`read_folder`: the files it shares (:func:`collect_files`: hidden entries and
Python source left out, unsafe names and links refused by name before anything is read), each one's sha256, size
and safetensors header (:func:`inspect_file`), and whether a model card is generated beside them (:func:`add_card`).
A pull that names a folder gets the snapshot's files copied there, each whole or not at all
(:func:`export_snapshot`). Backends (:mod:`bytezoo.hub.backends`) do the rest.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bytezoo.redaction import redact_url
from bytezoo.untrusted.names import check_distinct_paths

from .card import is_generated_card, make_model_card, read_json_documents
from .errors import HubError, UnsafeFileError
from .manifest import FileEntry, Manifest
from .safety import check_allowed_name, check_file

logger = logging.getLogger("bytezoo.hub")

MAX_WORKERS = 8  # files hashed, blobs uploaded or downloaded, files verified at a time
CHUNK_SIZE = 8 * 2**20
STALE_AFTER_SECONDS = 24 * 3600  # temporaries older than this were left by killed processes
SKIPPED_CODE_SUFFIXES = (".py", ".pyc")  # left out of pushes with a warning (see collect_files)
CARD_NAME = "README.md"
HF_CACHE_REPOSITORY = re.compile(r"^(models|datasets|spaces)--.+")


@dataclass(frozen=True)
class LocalFile:
    """A file to push: its manifest entry, where it is, and what was seen when it was hashed."""

    entry: FileEntry
    path: Path
    stat_key: tuple[int, int] | None  # (size, mtime_ns) when hashed; None for generated files
    safetensors_header: dict | None


@dataclass
class Folder:
    """A folder about to be pushed: its shared files (inspected), the links followed out of it, the Python source
    that travels beside the manifest (none but on ``hf://``), and whether its model card is (re)generated."""

    directory: Path
    files: list[LocalFile]
    followed: list[str]
    code: list[str]
    generate_card: bool

    def manifest(self) -> Manifest:
        return Manifest.for_files((f.entry for f in self.files), created_by=created_by())


def read_folder(directory: Path, *, model_card: bool, follow_symlinks: bool, leave_out=frozenset(),
                pick_code: Callable[[Path, list[str], list[str]], list[str]] | None = None) -> Folder:
    """Collect and inspect the files of ``directory`` that a push shares (``leave_out``: names a backend writes
    itself). A hand-written ``README.md`` is shared as it is; a generated one, or none, is (re)generated unless
    ``model_card`` is false (see :func:`add_card`). Python source stays behind, with a warning, unless ``pick_code``
    (given the folder, the shared names and the source files) returns the files that travel."""
    names, followed, code = collect_files(directory, follow_symlinks)
    names = [name for name in names if name not in leave_out]
    code = (pick_code or _leave_code_behind)(directory, names, code)
    if followed:
        logger.warning("following %d symbolic link(s) out of %s (--follow-symlinks): %s", len(followed), directory,
                       "; ".join(followed))
    generate_card = model_card and (CARD_NAME not in names or _is_generated_readme(directory / CARD_NAME))
    if generate_card and CARD_NAME in names:
        names.remove(CARD_NAME)  # regenerated from the current summaries
    if not names:
        raise HubError(f"cannot push {str(directory)!r}: it holds no files to share")
    with ThreadPoolExecutor(MAX_WORKERS) as pool:
        files = list(pool.map(lambda name: inspect_file(directory, name), names))
    return Folder(directory, files, followed, code, generate_card)


def _leave_code_behind(directory: Path, names: list[str], code: list[str]) -> list[str]:
    if code:
        logger.warning("not sharing %s: code never travels through the hub", ", ".join(code))
    return []


def add_card(folder: Folder, url: str, scratch: Path, **card_options) -> None:
    """Write the model card of ``folder`` into ``scratch`` and add it to the folder's files, if it is generated:
    from the run summaries in the folder, named after the repository (see :func:`bytezoo.hub.card.make_model_card`,
    which takes ``card_options``)."""
    if not folder.generate_card:
        return
    sizes = {f.entry.path: f.entry.size for f in folder.files}
    headers = {f.entry.path: f.safetensors_header for f in folder.files if f.safetensors_header is not None}
    name = url.rstrip("/").rsplit("/", 1)[-1] or folder.directory.resolve().name
    text = make_model_card(redact_url(name), sizes, read_json_documents(folder.directory, sizes), headers, url=url,
                           **card_options)
    card_path = scratch / CARD_NAME
    card_path.write_text(text, encoding="utf-8")
    sha256, size = sha256_of_file(card_path)
    folder.files.append(LocalFile(FileEntry(CARD_NAME, sha256, size), card_path, None, None))


def collect_files(directory: Path, follow_symlinks: bool = False) -> tuple[list[str], list[str], list[str]]:
    """Relative POSIX paths of the files to share, the symbolic links followed out of the folder, and the Python
    source files left out; unsafe names and links fail fast, by name, before anything is read.

    Hidden entries are skipped, and so is Python source: ``save_pretrained`` copies the model's code next to the
    weights (for ``trust_remote_code``), but code never travels through the fsspec hubs; bytezoo provides the classes
    (``hf://`` pushes commit the model's part of it, see :func:`bytezoo.hub.hf.remote_code_files`). A
    symbolic link is content when it resolves inside the folder (or inside the Hugging Face cache repository the
    folder is a snapshot of); one that leaves it is refused, naming it, unless ``follow_symlinks``: its target's bytes
    would become readable by everyone who can pull.
    """
    roots = _link_roots(directory)
    names, skipped_code, followed = [], [], []
    visited = {directory.resolve()}

    def check_link(path: Path) -> None:
        name = path.relative_to(directory).as_posix()
        target = path.resolve()
        if not target.exists():
            raise UnsafeFileError(f"refusing {name!r}: a symbolic link to {os.readlink(path)!r}, which does not exist")
        if any(target == root or root in target.parents for root in roots):
            return
        if not follow_symlinks:
            raise UnsafeFileError(f"refusing {name!r}: a symbolic link to {str(target)!r}, outside "
                                  f"{str(directory)!r}; its bytes would be shared. Pass --follow-symlinks "
                                  f"(follow_symlinks=True) to share what it points to")
        followed.append(f"{name} -> {target}")

    for root, subdirectories, files in os.walk(directory, followlinks=True):
        kept = []
        for sub in sorted(d for d in subdirectories if not d.startswith(".") and d != "__pycache__"):
            path = Path(root, sub)
            if path.is_symlink():
                check_link(path)
                if path.resolve() in visited:  # a cycle, or a second way into one folder: walk it once
                    continue
            visited.add(path.resolve())
            kept.append(sub)
        subdirectories[:] = kept
        for file_name in sorted(files):
            if file_name.startswith("."):
                continue
            path = Path(root, file_name)
            name = path.relative_to(directory).as_posix()
            if name.endswith(SKIPPED_CODE_SUFFIXES):
                skipped_code.append(name)
                continue
            check_allowed_name(name)
            if path.is_symlink():
                check_link(path)
            names.append(name)
    check_distinct_paths(names, f"cannot push {str(directory)!r}", UnsafeFileError)
    return names, followed, skipped_code


def _link_roots(directory: Path) -> list[Path]:
    """Where a symbolic link in ``directory`` may point and still be content: the folder itself, and, for a snapshot
    in a Hugging Face cache (``models--user--name/snapshots/REV``, whose files are links into ``../../blobs``), that
    cache repository."""
    roots = [directory.resolve()]
    for ancestor in directory.resolve().parents:
        if HF_CACHE_REPOSITORY.match(ancestor.name) and (ancestor / "blobs").is_dir() and \
                (ancestor / "snapshots").is_dir():
            roots.append(ancestor)
            break
    return roots


def changed_file(local_files: list[LocalFile]) -> LocalFile | None:
    """The first of ``local_files`` whose size or modification time moved since it was hashed (a run still writing
    it); generated files are not checked."""
    for local_file in local_files:
        if local_file.stat_key is None:
            continue
        now = local_file.path.stat()
        if (now.st_size, now.st_mtime_ns) != local_file.stat_key:
            return local_file
    return None


def inspect_file(directory: Path, name: str) -> LocalFile:
    """Check a file's content type (see :mod:`bytezoo.hub.safety`) and hash it, noting its size and modification
    time first so that a file that changes while it is pushed is caught (:func:`changed_file`)."""
    path = directory / name
    before = path.stat()
    header = check_file(path, name)
    sha256, size = sha256_of_file(path)
    return LocalFile(FileEntry(name, sha256, size), path, (before.st_size, before.st_mtime_ns), header)


def sha256_of_file(path: str | Path) -> tuple[str, int]:
    """The sha256 hex digest and size of a local file, read in large chunks (hashlib releases the GIL)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _is_generated_readme(path: Path) -> bool:
    try:
        return is_generated_card(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False


def export_snapshot(snapshot: Path, manifest: Manifest, local_dir: Path) -> None:
    """Copy a snapshot's files into ``local_dir``, each through a temporary name so none is ever half-written."""
    for entry in manifest.files:
        target = local_dir / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        try:
            shutil.copyfile(snapshot / entry.path, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)


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


def created_by() -> str:
    """What a manifest records as its writer."""
    from bytezoo.version import __version__

    return f"bytezoo {__version__}"
