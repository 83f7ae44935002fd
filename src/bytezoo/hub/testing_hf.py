"""A stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, for testing ``hf://`` without the network.

No package on PyPI serves the Hub's API offline (``hf-local-hub`` wraps a Go server that its wheel does not ship),
and ``huggingface_hub`` ships no test doubles, so this implements the endpoints that ``huggingface_hub`` calls to
create a repository, commit (files inline and through the LFS batch API), tag, resolve revisions, list trees and
download files, as the Hub answers them (status codes, ``X-Error-Code``, ``X-Repo-Commit``, ``X-Linked-Etag``...).
It keeps every commit, so a test can count them, and it can corrupt a stored file, so a test can see a pull refuse.
Xet storage is not served: run clients with ``HF_HUB_DISABLE_XET=1`` (uploads then use the LFS protocol).

>>> with FakeHuggingFaceHub(token="hf_test") as server:          # doctest: +SKIP
...     os.environ.update(HF_ENDPOINT=server.endpoint, HF_TOKEN="hf_test")
...     push("runs/x", "hf://someone/mlstm", tag="v1")
...     assert len(server.commits("someone/mlstm")) == 2  # the repository's first commit, and the push
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".png", ".jpg", ".jpeg")  # what a new repository sends to LFS
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob (what the Hub reports as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    size: int
    blob_id: str  # git blob id of the content (regular) or of the LFS pointer
    sha256: str | None = None  # LFS files only

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    files: dict[str, StoredFile]
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))


@dataclass
class Repository:
    repo_id: str
    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def commit(self, oid: str) -> Commit:
        return next(commit for commit in self.commits if commit.oid == oid)


class _Reply(Exception):
    """An error answer: status, X-Error-Code, message."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class FakeHuggingFaceHub:
    """Serve the Hub's API for model repositories from memory, on a free port of 127.0.0.1, in a thread.

    ``token``: when set, writes (and reads of private state) need ``Authorization: Bearer <token>``.
    """

    def __init__(self, token: str | None = None):
        self.token = token
        self.repos: dict[str, Repository] = {}
        self.blobs: dict[str, bytes] = {}  # git blob id -> bytes (regular files)
        self.lfs: dict[str, bytes] = {}  # sha256 -> bytes (LFS objects)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request served
        self._lock = threading.RLock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # ------------------------------------------------------------------ life cycle
    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeHuggingFaceHub":
        hub = self

        class Handler(_Handler):
            server_state = hub

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-hf-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self) -> "FakeHuggingFaceHub":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------ for tests
    def commits(self, repo_id: str) -> list[Commit]:
        """Every commit of ``repo_id``, oldest first."""
        return list(self.repos[repo_id].commits)

    def tags(self, repo_id: str) -> dict[str, str]:
        return dict(self.repos[repo_id].tags)

    def read(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        repo = self.repos[repo_id]
        return self._content(self._commit_at(repo, revision).files[path])

    def tamper(self, repo_id: str, path: str, data: bytes, revision: str = "main") -> None:
        """Replace the stored bytes of ``path`` at ``revision`` (and wherever the same content is used), as a
        corrupted storage or a malicious mirror would; the recorded size and hashes stay what they were."""
        with self._lock:
            stored = self._commit_at(self.repos[repo_id], revision).files[path]
            if stored.is_lfs:
                self.lfs[stored.sha256] = data
            else:
                self.blobs[stored.blob_id] = data

    # ------------------------------------------------------------------ the API
    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict, bytes]:
        self.requests.append((method, path))
        with self._lock:
            try:
                return self._route(method, path, query, headers, body)
            except _Reply as reply:
                extra = {"X-Error-Code": reply.code} if reply.code else {}
                return reply.status, {"X-Error-Message": reply.message, **extra}, _json({"error": reply.message})

    def _route(self, method, path, query, headers, body):
        repo = r"(?P<repo>[^/]+/[^/]+)"
        routes = [
            ("POST", r"/api/repos/create", self._create_repo, True),
            ("POST", r"/api/validate-yaml", lambda **_: (200, {}, _json({"errors": [], "warnings": []})), False),
            ("POST", rf"/api/models/{repo}/preupload/(?P<rev>[^/]+)", self._preupload, True),
            ("POST", rf"/{repo}\.git/info/lfs/objects/batch", self._lfs_batch, True),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self._lfs_upload, False),  # a pre-signed URL
            ("POST", r"/lfs-verify", self._lfs_verify, True),
            ("POST", rf"/api/models/{repo}/commit/(?P<rev>[^/]+)", self._commit, True),
            ("GET", rf"/api/models/{repo}/refs", self._refs, False),
            ("POST", rf"/api/models/{repo}/tag/(?P<rev>[^/]+)", self._create_tag, True),
            ("DELETE", rf"/api/models/{repo}/tag/(?P<tag>[^/]+)", self._delete_tag, True),
            ("GET", rf"/api/models/{repo}(?:/revision/(?P<rev>[^/]+))?", self._model_info, False),
            ("GET", rf"/api/models/{repo}/tree/(?P<rev>[^/]+)(?:/(?P<prefix>.*))?", self._tree, False),
            ("HEAD", rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve, False),
            ("GET", rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve, False),
        ]
        for route_method, pattern, action, needs_token in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                if needs_token and self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
                    raise _Reply(401, "Invalid credentials in Authorization header")
                arguments = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                return action(method=method, query=query, body=body, **arguments)
        raise _Reply(404, f"no route for {method} {path}")

    def _repo(self, repo_id: str) -> Repository:
        if repo_id not in self.repos:
            raise _Reply(404, "Repository not found", "RepoNotFound")
        return self.repos[repo_id]

    def _commit_at(self, repo: Repository, revision: str) -> Commit:
        oid = repo.branches.get(revision) or repo.tags.get(revision)
        if oid is None and any(commit.oid == revision for commit in repo.commits):
            oid = revision
        if oid is None:
            raise _Reply(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commit(oid)

    def _content(self, stored: StoredFile) -> bytes:
        return self.lfs[stored.sha256] if stored.is_lfs else self.blobs[stored.blob_id]

    def _new_commit(self, repo: Repository, parent: Commit | None, title: str, files: dict[str, StoredFile]) -> Commit:
        self._counter += 1
        oid = hashlib.sha1(f"{repo.repo_id} {self._counter} {title}".encode()).hexdigest()
        commit = Commit(oid=oid, parent=parent.oid if parent else None, title=title, files=files)
        repo.commits.append(commit)
        repo.branches["main"] = oid
        return commit

    def _store_regular(self, data: bytes) -> StoredFile:
        blob_id = git_blob_id(data)
        self.blobs[blob_id] = data
        return StoredFile(size=len(data), blob_id=blob_id)

    # --- repositories
    def _create_repo(self, body, **_):
        request = json.loads(body)
        if request.get("type") not in (None, "model"):
            raise _Reply(400, "this fake serves model repositories only")
        repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
        url = {"url": f"{self.endpoint}/{repo_id}"}
        if repo_id in self.repos:
            return 409, {}, _json({"error": "You already created this model repo", **url})
        repo = self.repos[repo_id] = Repository(repo_id)
        self._new_commit(repo, None, "initial commit", {".gitattributes": self._store_regular(_GITATTRIBUTES)})
        return 200, {}, _json(url)

    def _model_info(self, repo, rev="main", **_):
        repository = self._repo(repo)
        commit = self._commit_at(repository, rev)
        info = {"id": repo, "modelId": repo, "sha": commit.oid, "private": False, "lastModified": commit.date,
                "tags": [], "downloads": 0, "likes": 0,
                "siblings": [{"rfilename": path} for path in sorted(commit.files)]}
        return 200, {}, _json(info)

    def _refs(self, repo, **_):
        repository = self._repo(repo)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid}
                    for n, oid in repository.branches.items()]
        tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": oid} for n, oid in sorted(repository.tags.items())]
        return 200, {}, _json({"branches": branches, "tags": tags, "converts": []})

    def _create_tag(self, repo, rev, body, **_):
        repository = self._repo(repo)
        tag = json.loads(body)["tag"]
        if tag in repository.tags:
            raise _Reply(409, f"Tag {tag} already exists")
        repository.tags[tag] = self._commit_at(repository, rev).oid
        return 200, {}, _json({})

    def _delete_tag(self, repo, tag, **_):
        repository = self._repo(repo)
        if repository.tags.pop(tag, None) is None:
            raise _Reply(404, f"Tag {tag} not found", "RevisionNotFound")
        return 200, {}, _json({})

    # --- uploads
    def _preupload(self, repo, rev, body, **_):
        repository = self._repo(repo)
        existing = self._commit_at(repository, rev).files
        answers = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["path"].endswith(LFS_SUFFIXES) or b"\0" in sample or item["size"] > 10 * 2**20
            stored = existing.get(item["path"])
            oid = None if stored is None else (stored.sha256 if stored.is_lfs else stored.blob_id)
            answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        return 200, {}, _json({"files": answers, "commitOid": repository.branches.get("main")})

    def _lfs_batch(self, repo, body, **_):
        self._repo(repo)
        objects = []
        for item in json.loads(body)["objects"]:
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.lfs:
                answer["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{item['oid']}", "header": {}},
                                     "verify": {"href": f"{self.endpoint}/lfs-verify", "header": {}}}
            objects.append(answer)
        return 200, {}, _json({"transfer": "basic", "objects": objects})

    def _lfs_upload(self, oid, body, **_):
        if hashlib.sha256(body).hexdigest() != oid:
            raise _Reply(400, "uploaded bytes do not match the object id")
        self.lfs[oid] = body
        return 200, {}, b""

    def _lfs_verify(self, body, **_):
        request = json.loads(body)
        if len(self.lfs.get(request["oid"], b"")) != request["size"]:
            raise _Reply(422, "object not uploaded")
        return 200, {}, _json({})

    def _commit(self, repo, rev, body, **_):
        repository = self._repo(repo)
        if rev not in repository.branches:
            raise _Reply(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        head = repository.commit(repository.branches[rev])
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if header.get("parentCommit") not in (None, head.oid):
            raise _Reply(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = self._store_regular(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                data = self.lfs.get(value["oid"])
                if data is None:
                    raise _Reply(422, f"LFS object {value['oid']} was not uploaded")
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{value['oid']}\nsize {len(data)}\n"
                files[value["path"]] = StoredFile(len(data), git_blob_id(pointer.encode()), value["oid"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise _Reply(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        commit = self._new_commit(repository, head, header["summary"], files)
        return 200, {}, _json({"success": True, "commitOid": commit.oid, "pullRequestUrl": None,
                               "commitUrl": f"{self.endpoint}/{repo}/commit/{commit.oid}"})

    # --- downloads
    def _tree(self, repo, rev, query, prefix="", **_):
        commit = self._commit_at(self._repo(repo), rev)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        base = prefix.rstrip("/") + "/" if prefix else ""
        entries, folders = [], set()
        for path, stored in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            rest = path[len(base):]
            if "/" in rest and not recursive:
                folders.add(base + rest.split("/", 1)[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                folders.update(base + "/".join(parts[: i + 1]) for i in range(len(parts)))
            entry = {"type": "file", "oid": stored.blob_id, "size": stored.size, "path": path}
            if stored.is_lfs:
                entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": 134}
            entries.append(entry)
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": folder} for folder in sorted(folders)]
        return 200, {}, _json(entries)

    def _resolve(self, method, repo, rev, file, **_):
        commit = self._commit_at(self._repo(repo), rev)
        stored = commit.files.get(file)
        if stored is None:
            raise _Reply(404, "Entry not found", "EntryNotFound")
        data = self._content(stored)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.blob_id}"', "Content-Length": str(len(data))}
        if stored.is_lfs:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)})
        return 200, headers, data if method == "GET" else b""


class _Handler(http.server.BaseHTTPRequestHandler):
    server_state: FakeHuggingFaceHub

    def log_message(self, *args) -> None:  # quiet
        pass

    def _serve(self) -> None:
        split = urlsplit(self.path)
        status, headers, body = self.server_state.handle(
            self.command, split.path, parse_qs(split.query), self.headers, self._read_body()
        )
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip(), 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve


def _json(document) -> bytes:
    return json.dumps(document).encode()
