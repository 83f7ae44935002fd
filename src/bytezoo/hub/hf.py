"""``hf://user/name``: the hub on the Hugging Face Hub, as an ordinary model repository, through ``huggingface_hub``.

A push is one commit on the ``main`` branch holding the folder's files where ``from_pretrained`` looks for them
(``config.json``, ``model.safetensors``, tokenizer files, ``README.md`` whose metadata block comes first) and
``bytezoo-manifest.json``: the same manifest the fsspec hubs keep under ``versions/``, every file's sha256 and size.
A tag is a git tag on that commit. The model's code, which ``save_pretrained`` copies beside the weights and
``config.json``'s ``auto_map`` names, is committed too (outside the manifest), so that::

    AutoModelForCausalLM.from_pretrained("user/name", revision="v1", trust_remote_code=True)

works where bytezoo is not installed. ``bytezoo.from_pretrained("hf://user/name@v1")`` (and ``bytezoo hub pull``)
resolves the tag to its commit once, downloads that commit's manifest and the files it lists (never the code) into
the Hugging Face cache (``snapshot_download``), and checks every file's sha256 and size against the manifest.

- References: ``hf://user/name`` and ``@latest`` are the ``main`` branch; ``@TAG``, ``@BRANCH`` and ``@COMMIT``
  (40 hex digits) any git revision. A tag that exists is refused unless ``move_tag=True`` (``--move-tag``), except
  when it already points to the same files.
- Token: ``HF_TOKEN`` or ``hf auth login`` (``storage_options={"token": ...}`` overrides). Endpoint: ``HF_ENDPOINT``
  (or ``storage_options={"endpoint": ...}``), read on every call. Cache: the Hugging Face cache (``HF_HUB_CACHE``,
  ``HF_HOME``).
- Offline (``offline=True``, ``BYTEZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``): served from that cache; a tag resolves to
  the commit it pointed to when last pulled, and the files are checked against the manifest again (a file checked
  before and unchanged since, by size, modification time and inode, is not hashed again).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bytezoo.untrusted.limits import MAX_DOCUMENT_BYTES

from .cache import Cache, offline_from_environment
from .errors import HubError, IntegrityError, ManifestError, NotFoundError, OfflineError, UnsafeFileError
from .local import MAX_WORKERS, Folder, add_card, changed_file, read_folder, sha256_of_file
from .manifest import DEFAULT_TAG, FileEntry, Manifest, VersionInfo
from .safety import check_file

logger = logging.getLogger("bytezoo.hub")

MANIFEST_NAME = "bytezoo-manifest.json"
DEFAULT_BRANCH = "main"
_REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_RELATIVE_IMPORT_RE = re.compile(r"^\s*(?:from\s+\.([A-Za-z_]\w*)\s+import\b|import\s+\.([A-Za-z_]\w*)\s*$)", re.M)
_STORAGE_OPTIONS = frozenset({"token", "endpoint"})


def offline_requested(offline: bool = False) -> bool:
    return offline or offline_from_environment() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in (
        "1", "true", "yes", "on")


class HfRepo:
    """One model repository on the Hugging Face Hub (or a server speaking its API at ``HF_ENDPOINT``)."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.repo_id = parse_repo_id(url)
        self.display_url = f"hf://{self.repo_id}"
        options = dict(storage_options or {})
        unknown = sorted(set(options) - _STORAGE_OPTIONS)
        if unknown:
            raise HubError(f"storage options {unknown} do not apply to {self.display_url}: only 'token' and 'endpoint'")
        self.endpoint = (options.get("endpoint") or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
        self.token = options.get("token")  # None: huggingface_hub reads HF_TOKEN or the saved login
        self.cache_dir = hf_cache_dir()
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=self.endpoint, token=self.token, library_name="bytezoo",
                         library_version=_bytezoo_version())

    @property
    def endpoint_name(self) -> str:
        from huggingface_hub import constants

        return self.endpoint or constants.ENDPOINT

    # ------------------------------------------------------------------ reading
    def resolve(self, revision: str, offline: bool) -> str:
        """The commit a branch, tag or commit id names (offline: as recorded in the cache when last pulled)."""
        with self.errors("resolving", revision, offline):
            return self.api.resolve_revision(self.repo_id, revision=revision, cache_dir=self.cache_dir,
                                             local_files_only=offline).resolved

    def read_manifest(self, commit: str, offline: bool = False, revision: str | None = None) -> Manifest | None:
        """The manifest committed at ``commit``, or ``None`` if it holds none (not pushed by bytezoo)."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import RemoteEntryNotFoundError

        try:
            with self.errors("reading the manifest of", revision or commit, offline):
                path = hf_hub_download(self.repo_id, MANIFEST_NAME, revision=commit, cache_dir=self.cache_dir,
                                       endpoint=self.endpoint, token=self.token, local_files_only=offline)
        except RemoteEntryNotFoundError:  # re-raised by errors() for this caller to decide
            return None
        source = f"{self.display_url}@{commit[:12]} {MANIFEST_NAME}"
        if os.path.getsize(path) > MAX_DOCUMENT_BYTES:
            raise ManifestError(f"{source} holds more than {MAX_DOCUMENT_BYTES:,} bytes: not a bytezoo manifest")
        return Manifest.from_json(Path(path).read_bytes(), source)

    def download(self, commit: str, manifest: Manifest, offline: bool, revision: str) -> Path:
        """Download the manifest's files at ``commit`` into the Hugging Face cache; return the snapshot folder."""
        from huggingface_hub import snapshot_download

        patterns = [MANIFEST_NAME] + [glob.escape(entry.path) for entry in manifest.files]
        with self.errors("downloading", revision, offline):
            return Path(snapshot_download(self.repo_id, revision=commit, cache_dir=self.cache_dir,
                                          endpoint=self.endpoint, token=self.token, local_files_only=offline,
                                          allow_patterns=patterns, max_workers=MAX_WORKERS))

    # ------------------------------------------------------------------ errors
    @contextlib.contextmanager
    def errors(self, doing: str, revision: str | None = None, offline: bool = False):
        """Turn huggingface_hub's and the network's errors into one-line hub errors that name the repository."""
        from huggingface_hub import errors as hf

        where = self.display_url + (f"@{revision}" if revision else "")
        try:
            yield
        except hf.RemoteEntryNotFoundError:
            raise  # the caller knows what a missing file means
        except hf.RepositoryNotFoundError:
            raise NotFoundError(
                f"no model repository {self.display_url} on {self.endpoint_name} (or it is private or gated and this "
                "token cannot read it: set HF_TOKEN or run `hf auth login`)") from None
        except hf.RevisionNotFoundError:
            raise NotFoundError(f"{self.display_url} has no tag, branch or commit {revision!r} (bytezoo version ids "
                                "are not git revisions: use a tag, a branch or a 40-digit commit id)") from None
        except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled, hf.RevisionResolutionError) as error:
            if offline:
                raise OfflineError(f"offline mode: {where} is not in the Hugging Face cache "
                                   f"({self.cache_dir or 'the default one'}); pull it once while online") from None
            raise HubError(f"{doing} {where}: cannot reach {self.endpoint_name} ({_one_line(error)})") from None
        except hf.HfHubHTTPError as error:
            raise self._http_error(doing, where, error) from None
        except RuntimeError as error:  # huggingface_hub wraps upload failures
            if isinstance(error.__cause__, hf.HfHubHTTPError):
                raise self._http_error(doing, where, error.__cause__) from None
            raise
        except OSError as error:  # a connection refused, a download that stopped short...
            raise HubError(f"{doing} {where} failed: {_one_line(error)}") from None
        except Exception as error:
            if _is_transport_error(error):
                raise HubError(f"{doing} {where}: cannot reach {self.endpoint_name} ({_one_line(error)})") from None
            raise

    def _http_error(self, doing: str, where: str, error) -> HubError:
        status = error.response.status_code if error.response is not None else None
        detail = _one_line(error.server_message or error)
        if status in (401, 403):
            return HubError(f"{doing} {where}: not allowed ({status}: {detail}); set HF_TOKEN to a token with write "
                            "access or run `hf auth login`")
        if status == 412:
            return HubError(f"{doing} {where}: someone else committed to the repository meanwhile; nothing was "
                            "pushed, push again")
        return HubError(f"{doing} {where} failed ({status}: {detail})")


def parse_repo_id(url: str) -> str:
    """``user/name`` from ``hf://user/name`` (``hf://models/user/name`` too); anything else is refused."""
    text = os.fspath(url)
    rest = text[len("hf://"):].strip("/") if text.startswith("hf://") else ""
    if rest.startswith("models/"):
        rest = rest[len("models/"):]
    if not _REPO_ID_RE.fullmatch(rest) or rest.count("/") != 1:
        raise HubError(f"{text!r} is not a Hugging Face model repository: expected hf://USER/NAME (optionally "
                       "@TAG); bytezoo shares whole model repositories, not folders inside them, datasets or Spaces")
    return rest


def hf_cache_dir() -> str | None:
    """The Hugging Face cache, read from the environment now (``None``: huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


# ---------------------------------------------------------------------------------------------------- push
def push(directory: Path, url: str, tag: str | None, *, model_card: bool, follow_symlinks: bool, move_tag: bool,
         storage_options: dict | None) -> str:
    """:func:`bytezoo.hub.push` for ``hf://`` (see the module's docstring). Returns the version id."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    if tag in (DEFAULT_TAG, DEFAULT_BRANCH):
        raise HubError(f"tag {tag!r} is not for hf:// repositories: the {DEFAULT_BRANCH!r} branch always holds "
                       "the latest push; pick another name")
    repo = HfRepo(url, storage_options)
    folder = read_folder(directory, model_card=model_card, follow_symlinks=follow_symlinks,
                         leave_out={MANIFEST_NAME},  # a pulled snapshot's: regenerated below
                         pick_code=remote_code_files)
    code_files = folder.code
    for name in code_files:
        check_file_text(directory / name, name)
    with tempfile.TemporaryDirectory(prefix="bytezoo-hub-") as scratch:
        add_card(folder, url, Path(scratch), hugging_face_repo=repo.repo_id, code_files=tuple(code_files))
        local_files, manifest = folder.files, folder.manifest()

        with repo.errors("creating"):
            repo.api.create_repo(repo.repo_id, exist_ok=True)
        with repo.errors("listing the branches and tags of"):
            refs = repo.api.list_repo_refs(repo.repo_id)
        tags = {ref.name: ref.target_commit for ref in refs.tags}
        head = next((ref.target_commit for ref in refs.branches if ref.name == DEFAULT_BRANCH), None)
        if tag in tags:
            tagged = repo.read_manifest(tags[tag], revision=tag)
            if tagged is not None and tagged.version == manifest.version:
                logger.info("%s@%s already holds version %s (commit %s); nothing to push", repo.display_url, tag,
                            manifest.version, tags[tag])
                return manifest.version
            if not move_tag:
                raise HubError(
                    f"tag {tag!r} already exists on {repo.display_url} (commit {tags[tag][:12]}"
                    + (f", version {tagged.version}" if tagged else "") + "); nothing was pushed. Pass --move-tag "
                    "(move_tag=True) to point it at this push, or pick another tag")
        previous = repo.read_manifest(head, revision=DEFAULT_BRANCH) if head else None
        if previous is not None and previous.version == manifest.version:
            manifest = previous  # the same bytes again, so that pushing the same files makes no commit
        manifest_path = Path(scratch) / MANIFEST_NAME
        manifest_path.write_bytes(manifest.to_json())

        pushed = {f.entry.path for f in local_files} | set(code_files) | {MANIFEST_NAME}
        operations = [CommitOperationAdd(path_in_repo=f.entry.path, path_or_fileobj=str(f.path)) for f in local_files]
        operations += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(directory / name))
                       for name in code_files]
        operations.append(CommitOperationAdd(path_in_repo=MANIFEST_NAME, path_or_fileobj=str(manifest_path)))
        stale = sorted(entry.path for entry in (previous.files if previous else ()) if entry.path not in pushed)
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        with repo.errors("committing to", DEFAULT_BRANCH):
            info = repo.api.create_commit(
                repo.repo_id, operations, revision=DEFAULT_BRANCH, parent_commit=head,
                commit_message=f"bytezoo hub push: version {manifest.version}" + (f" ({tag})" if tag else ""),
                commit_description=f"{len(manifest.files)} files, {manifest.total_size:,} bytes; every sha256 is in "
                                   f"{MANIFEST_NAME}." + (f" Removed: {', '.join(stale)}." if stale else ""),
            )
        commit = info.oid
    _check_unchanged(folder, repo, commit)
    if tag is not None:
        with repo.errors(f"tagging commit {commit[:12]} (pushed) of", tag):
            if tag in tags:
                repo.api.delete_tag(repo.repo_id, tag=tag)
            repo.api.create_tag(repo.repo_id, tag=tag, revision=commit,
                                tag_message=f"bytezoo hub push: version {manifest.version}")
    logger.info(
        "pushed %s version %s (%d files, %d bytes%s%s) as commit %s on %s%s%s",
        repo.display_url, manifest.version, len(manifest.files), manifest.total_size,
        f", with the code for trust_remote_code: {', '.join(code_files)}" if code_files else "",
        f", {len(folder.followed)} symbolic link(s) followed out of the folder" if folder.followed else "",
        commit, DEFAULT_BRANCH, "" if commit != head else " (unchanged: no new commit)",
        f"; tag {tag}" + (" moved" if tag in tags else "") if tag else "",
    )
    return manifest.version


def remote_code_files(directory: Path, names: list[str], code: list[str]) -> list[str]:
    """The Python files that ``trust_remote_code`` loading needs: the modules named in the ``auto_map`` of the
    folder's top-level JSON configs (``config.json``, ``tokenizer_config.json``...) and what they import relatively.
    Other Python files stay behind, with a warning."""
    modules = set()
    for name in names:
        if "/" in name or not name.endswith(".json"):
            continue
        try:
            document = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        auto_map = document.get("auto_map") if isinstance(document, dict) else None
        for value in (auto_map.values() if isinstance(auto_map, dict) else ()):
            for reference in value if isinstance(value, list) else [value]:
                if isinstance(reference, str) and "." in reference and "--" not in reference:  # not another repo's
                    modules.add(reference.rsplit(".", 1)[0] + ".py")
    available = {name for name in code if name.endswith(".py") and "/" not in name}
    wanted: set[str] = set()
    pending = sorted(modules)
    while pending:
        name = pending.pop()
        if name in wanted or name not in available:
            continue
        wanted.add(name)
        text = (directory / name).read_text(encoding="utf-8", errors="replace")
        pending += [(a or b) + ".py" for a, b in _RELATIVE_IMPORT_RE.findall(text)]
    if modules - available:
        logger.warning("auto_map names %s, not in %s: trust_remote_code loading will fail", ", ".join(
            sorted(modules - available)), directory)
    if set(code) - wanted:
        logger.warning("not sharing %s: only the model code that auto_map names travels to hf://",
                       ", ".join(sorted(set(code) - wanted)))
    return sorted(wanted)


def check_file_text(path: Path, name: str) -> None:
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeFileError(f"refusing {name!r}: not UTF-8 Python source") from None


def _check_unchanged(folder: Folder, repo: HfRepo, commit: str) -> None:
    changed = changed_file(folder.files)
    if changed is not None:
        raise HubError(
            f"{changed.entry.path!r} changed while it was being pushed: commit {commit[:12]} on "
            f"{repo.display_url} holds bytes its manifest does not describe, so pulls of it will refuse, and no "
            "tag was set. Push again once the directory is final.")


# ---------------------------------------------------------------------------------------------------- pull, ls
def pull(url: str, selector: str | None, *, offline: bool, storage_options: dict | None,
         cache_dir: str | os.PathLike | None) -> tuple[Path, Manifest]:
    """Resolve ``selector`` to a commit, download its manifest's files into the Hugging Face cache and verify
    them; return the snapshot folder and the manifest."""
    repo = HfRepo(url, storage_options)
    revision = DEFAULT_BRANCH if selector in (None, DEFAULT_TAG) else selector
    offline = offline_requested(offline)
    commit = repo.resolve(revision, offline)
    manifest = repo.read_manifest(commit, offline, revision)
    if manifest is None:
        raise NotFoundError(
            f"{repo.display_url}@{revision} (commit {commit[:12]}) has no {MANIFEST_NAME}: it was not pushed with "
            "`bytezoo hub push`, so there is nothing to verify its files against (transformers' from_pretrained "
            "loads it without checks)")
    snapshot = repo.download(commit, manifest, offline, revision)
    verify(snapshot, manifest, repo, commit, Cache(cache_dir))
    if not offline:
        logger.info("pulled %s@%s -> commit %s, version %s", repo.display_url, revision, commit, manifest.version)
    return snapshot, manifest


def verify(snapshot: Path, manifest: Manifest, repo: HfRepo, commit: str, cache: Cache) -> None:
    """Check every file of ``manifest`` in ``snapshot`` (sha256, size, content type). A mismatching file is removed
    from the Hugging Face cache, so that the next pull downloads it again."""
    key = hashlib.sha256(f"{snapshot.resolve()} {manifest.version}".encode()).hexdigest()[:32]
    stamp = cache.root / "hf-verified" / key
    try:
        checked = json.loads(stamp.read_text())
    except (OSError, ValueError):
        checked = {}

    def check(entry: FileEntry) -> tuple[str, list[int]]:
        path = snapshot / entry.path
        if not path.is_file():
            raise NotFoundError(
                f"{repo.display_url} commit {commit[:12]}: its manifest lists {entry.path!r}, which the commit does "
                "not hold (the repository was edited by hand after the push)")
        status = path.stat()
        key = [status.st_size, status.st_mtime_ns, status.st_ino]
        if checked.get(entry.path) == key:
            return entry.path, key
        sha256, size = sha256_of_file(path)
        if (sha256, size) != (entry.sha256, entry.size):
            _evict(path)
            raise IntegrityError(
                entry.path, entry.sha256, sha256, entry.size, size,
                consequence=f"{repo.display_url} commit {commit[:12]} does not hold what was pushed (or the cached "
                            "copy was damaged); the file was removed from the Hugging Face cache and nothing was "
                            "loaded.")
        check_file(path, entry.path)  # whoever wrote the repository may not have checked: never serve a pickle
        return entry.path, key

    with ThreadPoolExecutor(MAX_WORKERS) as pool:
        keys = dict(pool.map(check, manifest.files))
    if keys != checked:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        temporary = stamp.with_name(f"{stamp.name}.{uuid.uuid4().hex}")
        temporary.write_text(json.dumps(keys))
        os.replace(temporary, stamp)


def _evict(path: Path) -> None:
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path:
        target.unlink(missing_ok=True)


def ls(url: str, storage_options: dict | None) -> list[VersionInfo]:
    """:func:`bytezoo.hub.ls` for ``hf://``: the versions that branches and tags point to, each with their names."""
    repo = HfRepo(url, storage_options)
    with repo.errors("listing the branches and tags of"):
        refs = repo.api.list_repo_refs(repo.repo_id)
    names_by_commit: dict[str, list[str]] = {}
    for ref in list(refs.branches) + list(refs.tags):
        names_by_commit.setdefault(ref.target_commit, []).append(ref.name)
    by_version: dict[str, tuple[Manifest, set[str]]] = {}
    for commit, names in names_by_commit.items():
        manifest = repo.read_manifest(commit, revision=names[0])
        if manifest is not None:
            by_version.setdefault(manifest.version, (manifest, set()))[1].update(names)
    if not by_version:
        raise NotFoundError(f"no bytezoo versions on {repo.display_url}: no branch or tag holds {MANIFEST_NAME}")
    return [VersionInfo.of(manifest, sorted(names)) for manifest, names in by_version.values()]


def is_repository_folder(path: str) -> bool:
    """Never: a Hugging Face repository is not a local folder (its snapshots in the cache are plain folders)."""
    return False


# ---------------------------------------------------------------------------------------------------- helpers
def _one_line(error) -> str:
    text = " ".join(str(error).split())
    return text[:300] + ("…" if len(text) > 300 else "")


def _is_transport_error(error: Exception) -> bool:
    """httpx's (huggingface_hub 1.x) or httpx2's (2.x) connection and timeout errors."""
    for module_name in ("httpx2", "httpx"):
        module = sys.modules.get(module_name)
        if module is not None and isinstance(error, module.TransportError):
            return True
    return False


def _bytezoo_version() -> str:
    from bytezoo.version import __version__

    return __version__
