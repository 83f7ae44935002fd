"""push, pull, ls and resolve: the hub's public operations."""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bytezoo.redaction import redact_url
from bytezoo.untrusted.names import check_distinct_paths

from . import hf
from .cache import Cache, offline_from_environment
from .card import is_generated_card, make_model_card, read_json_documents
from .errors import HubError, UnsafeFileError
from .manifest import DEFAULT_TAG, FileEntry, Manifest, check_tag_name, is_version_id
from .remote import HubRepo, sha256_of_file
from .safety import check_allowed_name, check_file
from .hf import is_hf_url
from .urls import is_url, selector_or_default, split_ref

logger = logging.getLogger("bytezoo.hub")

MAX_WORKERS = 8
SKIPPED_CODE_SUFFIXES = (".py", ".pyc")  # left out of pushes with a warning (see _collect_files)


@dataclass(frozen=True)
class VersionInfo:
    """One complete version of a repository, as :func:`ls` reports it."""

    version: str
    created: str
    files: int
    size: int
    tags: tuple[str, ...]


@dataclass(frozen=True)
class _LocalFile:
    entry: FileEntry
    path: Path
    stat_key: tuple[int, int] | None  # (size, mtime_ns) when hashed; None for generated files
    safetensors_header: dict | None


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
    if is_hf_url(url):
        return hf.push(directory, os.fspath(url), tag, model_card=model_card, follow_symlinks=follow_symlinks,
                       move_tag=move_tag, storage_options=storage_options)
    tags = [DEFAULT_TAG] + ([check_tag_name(tag)] if tag is not None and tag != DEFAULT_TAG else [])
    repo = HubRepo(url, storage_options)
    repo.check_writable()
    repo.remove_stale_temporaries()

    names, followed, code = _collect_files(directory, follow_symlinks)
    if code:
        logger.warning("not sharing %s: code never travels through the hub", ", ".join(code))
    if followed:
        logger.warning("following %d symbolic link(s) out of %s (--follow-symlinks): %s", len(followed), directory,
                       "; ".join(followed))
    generate_card = model_card and ("README.md" not in names or _is_generated_readme(directory / "README.md"))
    if generate_card and "README.md" in names:
        names.remove("README.md")  # regenerated below from the current summaries
    if not names:
        raise HubError(f"cannot push {str(local_dir)!r}: it holds no files to share")

    with ThreadPoolExecutor(MAX_WORKERS) as pool:
        local_files = list(pool.map(lambda name: _inspect(directory, name), names))
    with repo.errors("pushing to"), tempfile.TemporaryDirectory(prefix="bytezoo-hub-") as scratch:
        if generate_card:
            local_files.append(_write_card(directory, local_files, repo.url, Path(scratch)))
        manifest = Manifest.for_files((f.entry for f in local_files), created_by=_created_by())
        before = {name: (found.version if (found := repo.read_tag(name)) else None) for name in tags}
        if tag in before and before[tag] not in (None, manifest.version) and not move_tag:
            raise HubError(f"tag {tag!r} already points to version {before[tag]} on {repo.display_url}; nothing was "
                           "pushed. Pass --move-tag (move_tag=True) to point it at this push, or pick another tag")
        with ThreadPoolExecutor(MAX_WORKERS) as pool:
            present = list(pool.map(lambda f: repo.has_blob(f.entry), local_files))
            missing = [f for f, is_present in zip(local_files, present) if not is_present]
            list(pool.map(lambda f: repo.upload_blob(f.entry, f.path), missing))
        _check_unchanged(repo, missing)
        written = repo.write_manifest(manifest)
        repo.update_tags(manifest.version, before)
    logger.info(
        "pushed %s version %s (%d files, %d bytes, %d blobs uploaded%s%s); tags: %s",
        repo.display_url, manifest.version, len(manifest.files), manifest.total_size, len(missing),
        "" if written else ", version already existed",
        f", {len(followed)} symbolic link(s) followed out of the folder" if followed else "", ", ".join(tags),
    )
    return manifest.version


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
    if is_hf_url(url):
        snapshot, manifest = hf.pull(url, selector, offline=offline, storage_options=storage_options,
                                     cache_dir=cache_dir)
        if local_dir is None:
            return str(snapshot)
        _export(snapshot, manifest, Path(local_dir))
        return str(local_dir)
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
    snapshot = cache.snapshot_path(manifest.version)
    if local_dir is None:
        return str(snapshot)
    _export(snapshot, manifest, Path(local_dir))
    return str(local_dir)


def ls(url: str | os.PathLike, *, storage_options: dict | None = None) -> list[VersionInfo]:
    """The complete versions of the repository at ``url``, newest first, each with the tags pointing to it.

    Raises :class:`NotFoundError` if ``url`` holds no complete version.

    >>> [(v.version, v.tags) for v in ls("s3://team-models/mlstm-256")]  # doctest: +SKIP
    [('3f9c0a1d2b4e5f60', ('latest', 'paper')), ('9e1b7c2d4a5f6e70', ())]
    """
    if is_hf_url(url):
        return hf.ls(os.fspath(url), storage_options)
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
    infos = [
        VersionInfo(
            version=m.version, created=m.created, files=len(m.files), size=m.total_size,
            tags=tuple(tags_by_version.get(m.version, ())),
        )
        for m in manifests
    ]
    return sorted(infos, key=lambda info: info.created, reverse=True)


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
    if local is not None and os.path.isdir(local) and not _is_local_hub(local):
        return local  # a plain checkpoint folder written as a URL
    if is_url(text):
        return pull(text, **options)
    if os.path.exists(text) and not _is_local_hub(text):
        return text
    try:
        base, _ = split_ref(text)
    except ValueError:
        return text
    if _is_local_hub(base):
        return pull(text, **options)
    return text


# ---------------------------------------------------------------------- helpers
HF_CACHE_REPOSITORY = re.compile(r"^(models|datasets|spaces)--.+")


def _link_roots(directory: Path) -> list[Path]:
    """Where a symbolic link in ``directory`` may point and still be content: the folder itself, and, for a snapshot
    in a Hugging Face cache (``models--user--name/snapshots/REV``, whose files are links into ``../../blobs``), that
    cache repository."""
    roots = [directory.resolve()]
    for ancestor in directory.resolve().parents:
        if HF_CACHE_REPOSITORY.match(ancestor.name) and (ancestor / "blobs").is_dir() and (ancestor / "snapshots").is_dir():
            roots.append(ancestor)
            break
    return roots


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _collect_files(directory: Path, follow_symlinks: bool = False) -> tuple[list[str], list[str], list[str]]:
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
        if _inside(target, roots):
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


def _inspect(directory: Path, name: str) -> _LocalFile:
    path = directory / name
    before = path.stat()
    header = check_file(path, name)
    sha256, size = sha256_of_file(path)
    return _LocalFile(FileEntry(name, sha256, size), path, (before.st_size, before.st_mtime_ns), header)


def _is_generated_readme(path: Path) -> bool:
    try:
        return is_generated_card(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False


def _write_card(directory: Path, local_files: list[_LocalFile], url: str, scratch: Path, **card_options) -> _LocalFile:
    sizes = {f.entry.path: f.entry.size for f in local_files}
    headers = {f.entry.path: f.safetensors_header for f in local_files if f.safetensors_header is not None}
    name = url.rstrip("/").rsplit("/", 1)[-1] or directory.resolve().name
    text = make_model_card(redact_url(name), sizes, read_json_documents(directory, sizes), headers, url=url,
                           **card_options)
    card_path = scratch / "README.md"
    card_path.write_text(text, encoding="utf-8")
    sha256, size = sha256_of_file(card_path)
    return _LocalFile(FileEntry("README.md", sha256, size), card_path, None, None)


def _check_unchanged(repo: HubRepo, uploaded: list[_LocalFile]) -> None:
    """Refuse to publish if a file changed between hashing and uploading (a run still writing its checkpoint):
    its blob would not match its name. The blob is withdrawn so a later push uploads it again."""
    for local_file in uploaded:
        if local_file.stat_key is None:
            continue
        now = local_file.path.stat()
        if (now.st_size, now.st_mtime_ns) != local_file.stat_key:
            repo.delete_blob(local_file.entry.sha256)
            raise HubError(
                f"{local_file.entry.path!r} changed while it was being pushed; nothing was published. "
                "Push again once the directory is final."
            )


def _export(snapshot: Path, manifest: Manifest, local_dir: Path) -> None:
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


def _is_local_hub(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "versions")) and os.path.isdir(os.path.join(path, "tags"))


def _created_by() -> str:
    from bytezoo.version import __version__

    return f"bytezoo {__version__}"
