"""Untrusted bytes at the hub: symbolic links out of a pushed folder are refused by name unless --follow-symlinks (inside
it, or inside the Hugging Face cache repository it is a snapshot of, they are content), safetensors headers are
checked by the library that loads them, and a manifest claiming more than the disk holds fails before downloading."""
from __future__ import annotations

import json
import os
import secrets

from pathlib import Path

import pytest

from bytezoo.cli import main as bytezoo_main
from bytezoo.hub import UnsafeFileError, pull, push


def hub_bytes(hub) -> bytes:
    """Every byte stored in a local hub folder."""
    return b"".join(path.read_bytes() for path in sorted(hub.rglob("*")) if path.is_file())


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "mlstm", "hidden_size": 8}))
    return folder


def test_a_link_out_of_the_folder_is_refused_and_leaks_nothing(model_dir, tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text(f"api key {secrets.token_hex(16)}\n")
    (model_dir / "notes.txt").symlink_to(secret)
    hub = tmp_path / "hub"
    with pytest.raises(UnsafeFileError, match=r"refusing 'notes.txt': a symbolic link to .*secret.txt.*--follow-symlinks"):
        push(model_dir, hub.as_uri() + "/x")
    assert bytezoo_main(["hub", "push", str(model_dir), str(hub / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "notes.txt" in error
    assert not hub.exists() or secret.read_bytes() not in hub_bytes(hub)  # nothing of the secret was stored
    linked_dir = tmp_path / "elsewhere"  # a linked folder out of the model folder: refused the same way
    linked_dir.mkdir()
    (linked_dir / "weights.json").write_text("{}")
    (model_dir / "notes.txt").unlink()
    (model_dir / "extra").symlink_to(linked_dir, target_is_directory=True)
    with pytest.raises(UnsafeFileError, match=r"refusing 'extra': a symbolic link to .*elsewhere"):
        push(model_dir, hub.as_uri() + "/x")


def test_follow_symlinks_shares_the_target_and_says_so(model_dir, tmp_path, caplog):
    shared = tmp_path / "vocab.txt"
    shared.write_text("a shared vocabulary\n")
    (model_dir / "vocab.txt").symlink_to(shared)
    with caplog.at_level("INFO"):
        version = push(model_dir, tmp_path / "hub" / "x", follow_symlinks=True)
    assert "following 1 symbolic link(s) out of" in caplog.text and "vocab.txt ->" in caplog.text
    assert "1 symbolic link(s) followed out of the folder" in caplog.text
    pulled = Path(pull(f"{tmp_path / 'hub' / 'x'}@{version}"))
    assert (pulled / "vocab.txt").read_text() == "a shared vocabulary\n"


def test_links_inside_the_folder_are_content(model_dir, tmp_path):
    (model_dir / "sub").mkdir()
    (model_dir / "sub" / "data.txt").write_text("inside\n")
    (model_dir / "alias.txt").symlink_to(model_dir / "sub" / "data.txt")
    (model_dir / "loop").symlink_to(model_dir, target_is_directory=True)  # a cycle: walked once, never forever
    version = push(model_dir, tmp_path / "hub" / "x")
    pulled = Path(pull(f"{tmp_path / 'hub' / 'x'}@{version}"))
    assert (pulled / "alias.txt").read_text() == "inside\n" and (pulled / "sub" / "data.txt").read_text() == "inside\n"


def test_a_hugging_face_cache_snapshot_of_links_into_its_blobs_is_pushed(tmp_path):
    """The Hub's cache layout: snapshots/REV/* are relative links into ../../blobs/SHA."""
    repo = tmp_path / "hf-cache" / "models--someone--byte-mlstm"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    contents = {"config.json": json.dumps({"model_type": "mlstm"}), "tokenizer_config.json": "{}"}
    for name, text in contents.items():
        blob = blobs / secrets.token_hex(20)
        blob.write_text(text)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    version = push(snapshot, tmp_path / "hub" / "x", model_card=False)
    pulled = Path(pull(f"{tmp_path / 'hub' / 'x'}@{version}"))
    assert {p.name: p.read_text() for p in pulled.iterdir()} == contents
    outside = tmp_path / "hf-cache" / "models--other--repo" / "blobs"  # another repository's blob: not this one's
    outside.mkdir(parents=True)
    (outside / "x").write_text("{}")
    os.symlink(os.path.relpath(outside / "x", snapshot), snapshot / "stray.json")
    with pytest.raises(UnsafeFileError, match="refusing 'stray.json': a symbolic link to"):
        push(snapshot, tmp_path / "hub" / "y", model_card=False)


def test_a_dangling_link_is_named(model_dir, tmp_path):
    (model_dir / "gone.txt").symlink_to(tmp_path / "nothing-here.txt")
    with pytest.raises(UnsafeFileError, match=r"refusing 'gone.txt': a symbolic link to .*which does not exist"):
        push(model_dir, tmp_path / "hub" / "x")


def test_a_safetensors_header_that_claims_more_than_the_file_holds_is_refused(model_dir, tmp_path):
    """The header promises a [100, 100] F32 tensor (40,000 bytes) in 64 bytes of data: safetensors refuses to load
    it, and so does the hub's check now (it used to accept it)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [100, 100], "data_offsets": [0, 64]}}).encode()
    (model_dir / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(64))
    with pytest.raises(UnsafeFileError, match="refusing 'model.safetensors': not a valid safetensors file"):
        push(model_dir, tmp_path / "hub" / "x")
    huge = json.dumps({"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 4 << 40]}}).encode()
    (model_dir / "model.safetensors").write_bytes(len(huge).to_bytes(8, "little") + huge + bytes(64))
    with pytest.raises(UnsafeFileError, match="refusing 'model.safetensors'"):
        push(model_dir, tmp_path / "hub" / "x")


def test_a_manifest_that_claims_more_bytes_than_the_disk_holds_fails_before_downloading(model_dir, tmp_path):
    """A consistent manifest (its version id matches its entries) that lists an exabyte-sized file: refused before
    a byte is fetched, naming the version and the cache."""
    from bytezoo.hub import HubError
    from bytezoo.hub.manifest import FileEntry, Manifest

    version = push(model_dir, tmp_path / "hub" / "x", model_card=False)
    real = next((tmp_path / "hub" / "x").rglob(f"{version}.json"))
    entry = json.loads(real.read_text())["files"][0]
    claimed = Manifest.for_files([FileEntry(entry["path"], entry["sha256"], 1 << 60)], created_by="an attacker")
    (real.parent / f"{claimed.version}.json").write_bytes(claimed.to_json())
    with pytest.raises(HubError, match=rf"version {claimed.version} lists 1,152,921,504,606,846,976 bytes to download, "
                                       r"more than the .* free"):
        pull(f"{tmp_path / 'hub' / 'x'}@{claimed.version}")
