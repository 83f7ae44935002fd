"""The table of hub backends: one entry sends a URL scheme's push, pull, ls and resolve to its backend, after the
checks every backend shares (names before any call)."""
from __future__ import annotations

import types
from pathlib import Path

import pytest

import bytezoo.hub as hub
from bytezoo.hub import backends, fsspec_backend, hf
from bytezoo.hub.errors import HubError
from bytezoo.hub.local import read_folder
from bytezoo.hub.manifest import VersionInfo
from bytezoo.hub.testing import write_checkpoint


@pytest.mark.parametrize("url, backend", [
    ("hf://someone/mlstm", hf), ("s3://bucket/mlstm", fsspec_backend), ("memory://x/y", fsspec_backend),
    ("file:///tmp/x", fsspec_backend), ("runs/mlstm@v1", fsspec_backend), ("simplecache::hf://a/b", fsspec_backend),
    ("HF://someone/mlstm", fsspec_backend),  # schemes are matched as written, as before the table
])
def test_each_url_goes_to_the_backend_of_its_scheme(url, backend):
    assert backends.backend_for(url) is backend


def test_a_new_scheme_is_one_table_entry(tmp_path, monkeypatch):
    """A toy backend registered under ``toy`` gets every operation, with the checks done before it is called."""
    calls = []
    folder = write_checkpoint(tmp_path / "run", megabytes=0.01)
    snapshot = write_checkpoint(tmp_path / "snapshot", megabytes=0.01)
    manifest = read_folder(snapshot, model_card=False, follow_symlinks=False).manifest()
    older = VersionInfo("0" * 16, "2026-01-01T00:00:00.000000Z", 1, 1, ())
    newer = VersionInfo(manifest.version, "2026-02-01T00:00:00.000000Z", len(manifest.files), manifest.total_size,
                        ("latest",))

    def push(directory, url, tag, **options):
        calls.append(("push", directory, url, tag, options["move_tag"]))
        return "f" * 16

    def pull(url, selector, **options):
        calls.append(("pull", url, selector, options["offline"]))
        return snapshot, manifest

    toy = types.SimpleNamespace(push=push, pull=pull, ls=lambda url, storage_options: [older, newer],
                                is_repository_folder=lambda path: False)
    monkeypatch.setitem(backends.BACKENDS, "toy", toy)

    assert hub.push(folder, "toy://team/mlstm", tag="v1", move_tag=True) == "f" * 16
    assert calls.pop() == ("push", Path(folder), "toy://team/mlstm", "v1", True)
    for tag in ("../v1", "v1/x", "-v1"):  # names are checked once, before any backend sees them
        with pytest.raises(ValueError):
            hub.push(folder, "toy://team/mlstm", tag=tag)
    with pytest.raises(HubError, match="may not contain '@'"):
        hub.push(folder, "toy://team/mlstm@v1")
    assert not calls

    assert hub.resolve("toy://team/mlstm@v1") == str(snapshot)
    assert hub.pull("toy://team/mlstm", tmp_path / "out", offline=True) == str(tmp_path / "out")
    assert calls == [("pull", "toy://team/mlstm", "v1", False), ("pull", "toy://team/mlstm", None, True)]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(e.path for e in manifest.files)
    assert hub.ls("toy://team/mlstm") == [newer, older]  # newest first, whatever order the backend gave
