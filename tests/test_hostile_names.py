"""A hub, a packed corpus or a checkpoint may not choose where bytezoo reads or writes: every name that comes from
outside (a tag document's name, manifest paths, shard and checksum names, the weight map) is checked before any file
system call, and names a hub shows are printed with control characters escaped (issue 25, item 1)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import bytezoo.hub as hub
from bytezoo.cli import main as bytezoo_main
from bytezoo.hub import ManifestError, UnsafeFileError
from bytezoo.hub.manifest import FileEntry, Manifest
from bytezoo.hub.testing import write_checkpoint
from hostile_server import HostileServer
from zoo_presets import one_preset_per_family


def every_file(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")} if root.exists() else set()


@pytest.fixture
def pushed(tmp_path):
    """A local hub repository holding one version tagged v1, its folder, and the version id."""
    checkpoint = write_checkpoint(tmp_path / "checkpoint", megabytes=0.01)
    repository = tmp_path / "hub" / "m"
    version = hub.push(checkpoint, str(repository), tag="v1")
    return repository, version


def forge_tag(repository: Path, file_tag: str, written_tag: str) -> None:
    path = repository / "tags" / f"{file_tag}.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "tag": written_tag}))


@pytest.mark.parametrize("served", ["file", "http"])
@pytest.mark.parametrize("written", ["ABSOLUTE", "../../../../victim", "other-tag"])
def test_a_tag_document_cannot_choose_where_the_cache_writes(pushed, tmp_path, served, written, capsys):
    """Today's main recorded the tag under the name written inside its document: an absolute path or a ../ chain
    made the pull create folders and overwrite that file."""
    repository, _ = pushed
    victim = tmp_path / "victim-folder" / "victim"
    written = str(victim) if written == "ABSOLUTE" else written
    forge_tag(repository, "v1", written)
    before = every_file(tmp_path) - every_file(tmp_path / "bytezoo-cache")
    with HostileServer(tmp_path / "hub") as server:
        url = f"{server.url}/m" if served == "http" else str(repository)
        with pytest.raises(ManifestError, match=r"it says it is tag .* not 'v1'|malformed tag .*invalid tag"):
            hub.pull(f"{url}@v1")
        assert bytezoo_main(["hub", "pull", f"{url}@v1"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "tags/v1.json" in error
    assert not victim.exists() and not (tmp_path / "victim-folder").exists()
    cache = Path(os.environ["BYTEZOO_CACHE"])
    assert not list(cache.glob("hub/refs/*/tags/*"))  # nothing recorded under any name
    assert every_file(tmp_path) - every_file(tmp_path / "bytezoo-cache") == before


def test_the_cache_records_the_tag_asked_for(pushed):
    repository, version = pushed
    hub.pull(f"{repository}@v1")
    cache = Path(os.environ["BYTEZOO_CACHE"]) / "hub"
    assert [path.name for path in cache.glob("refs/*/tags/*")] == ["v1"]
    assert hub.pull(f"{repository}@v1", offline=True).endswith(version)


def write_manifest(repository: Path, files: dict[str, bytes]) -> str:
    """Publish a version holding ``files`` (path -> bytes) by hand, as a hostile hub could, and tag it latest."""
    import hashlib

    entries = []
    for path, data in files.items():
        sha256 = hashlib.sha256(data).hexdigest()
        (repository / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (repository / "blobs" / "sha256" / sha256).write_bytes(data)
        entries.append(FileEntry(path, sha256, len(data)))
    manifest = Manifest.for_files(entries, created_by="someone else")
    (repository / "versions").mkdir(parents=True, exist_ok=True)
    (repository / "versions" / f"{manifest.version}.json").write_bytes(manifest.to_json())
    (repository / "tags").mkdir(parents=True, exist_ok=True)
    (repository / "tags" / "latest.json").write_text(json.dumps({
        "format": "bytezoo.hub.tag", "format_version": 1, "tag": "latest", "version": manifest.version, "updated": ""}))
    return manifest.version


@pytest.mark.parametrize("paths, pattern", [
    (["x.json", "x.json/y.json"], r"'x.json' is a file, and 'x.json/y.json' needs a folder"),
    (["README.md", "readme.md"], r"differs from .* only in letter case"),
    (["d/" + "n" * 226 + ".txt"], "longer than 200 bytes"),
    (["/".join(["d" * 120] * 9) + "/x.txt"], "longer than 1024 bytes"),
], ids=["file-and-folder", "letter-case", "long-component", "long-path"])
def test_manifest_paths_that_cannot_all_be_written_are_refused_by_name(tmp_path, paths, pattern, capsys):
    """On main a file beside a folder of the same name stopped the pull with NotADirectoryError mid-snapshot, a
    component of 201-255 bytes broke the copy into a folder (its temporary name is longer), and letter-case twins
    overwrote each other on a case-insensitive disk."""
    repository = tmp_path / "hub" / "m"
    write_manifest(repository, {path: b"{}" if path.endswith(".json") else b"text" for path in paths})
    with pytest.raises(UnsafeFileError, match=pattern):
        hub.pull(str(repository), tmp_path / "out")
    assert bytezoo_main(["hub", "pull", str(repository), str(tmp_path / "out")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert not list((Path(os.environ["BYTEZOO_CACHE"]) / "hub" / "snapshots").glob("*"))


@pytest.fixture
def packed(tmp_path):
    from bytezoo.data import pack

    source = tmp_path / "text.txt"
    source.write_text("a small corpus of bytes\n" * 400)
    pack([str(source)], str(tmp_path / "corpus"), progress=False)
    return tmp_path / "corpus"


@pytest.mark.parametrize("field", ["shard", "crc"])
@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_a_packed_corpus_index_cannot_name_files_outside_its_folder(packed, tmp_path, field, where, capsys):
    """On main the index's shard and CRC names were opened as given: a ../ chain or an absolute path read any file
    whose size matched (here a copy of the shard moved out of the folder)."""
    from bytezoo.data.packed import INDEX, PackedCorpus, PackError

    index = json.loads((packed / INDEX).read_text())
    entry = index["shards"][0] if field == "shard" else index["crc32"]
    outside = tmp_path / "elsewhere" / "secret.bin"
    outside.parent.mkdir()
    shutil.move(packed / entry["name"], outside)
    entry["name"] = str(outside) if where == "absolute" else "../elsewhere/secret.bin"
    (packed / INDEX).write_text(json.dumps(index))
    with pytest.raises(PackError, match=r"file name in .*index.json .*secret.bin"):
        PackedCorpus.open(str(packed)).read(0, 10)
    assert bytezoo_main(["data", "verify", str(packed), "--no-progress"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def save_sharded(model, folder: Path, weight_map: dict[str, str], shards: dict[str, list[str]]) -> None:
    """``model`` saved with its tensors in the named shard files and an index with ``weight_map``."""
    from safetensors.torch import save_file

    model.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    for shard, names in shards.items():
        (folder / shard).parent.mkdir(parents=True, exist_ok=True)
        save_file({name: state[name] for name in names}, str(folder / shard), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("family", one_preset_per_family())
def test_a_weight_map_cannot_point_outside_the_checkpoint(tmp_path, tiny_model, family):
    """On main the index's file names were opened as given, so a checkpoint could load weights from anywhere."""
    import bytezoo
    from bytezoo.zoo.modeling_utils import CheckpointError

    model = tiny_model(family)
    names = list(model.state_dict())
    elsewhere = tmp_path / "elsewhere"
    save_sharded(model, elsewhere, {name: "model.safetensors" for name in names}, {"model.safetensors": names})
    folder = tmp_path / "checkpoint"
    save_sharded(model, folder, {name: "../elsewhere/model.safetensors" for name in names}, {})
    with pytest.raises(CheckpointError, match=r"weight file .*\.\./elsewhere/model.safetensors"):
        bytezoo.from_pretrained(str(folder))


@pytest.mark.parametrize("family", one_preset_per_family())
def test_a_tensor_named_twice_is_refused(tmp_path, tiny_model, family):
    """Two shards holding the same tensor: which copy loads depends on the loader; main loaded one silently."""
    import bytezoo
    from bytezoo.zoo.modeling_utils import CheckpointError

    model = tiny_model(family)
    names = list(model.state_dict())
    first, rest = names[:1], names[1:]
    folder = tmp_path / "checkpoint"
    save_sharded(model, folder, {**{name: "a.safetensors" for name in names}},
                 {"a.safetensors": names, "b.safetensors": first})
    index = folder / "model.safetensors.index.json"
    document = json.loads(index.read_text())
    document["weight_map"]["zz-extra"] = "b.safetensors"  # b lists the duplicate too
    index.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=f"tensor {first[0]!r} is in both a.safetensors and b.safetensors"):
        bytezoo.from_pretrained(str(folder))
    (index).write_text(index.read_text().replace('"weight_map": {', f'"weight_map": {{"{rest[0]}": "a.safetensors", ', 1))
    with pytest.raises(CheckpointError, match=f"key '{rest[0]}' is given twice"):
        bytezoo.from_pretrained(str(folder))


def test_a_safetensors_header_naming_a_tensor_twice_is_refused_by_the_hub(tmp_path):
    from bytezoo.hub.safety import check_file

    data = np.zeros(2, dtype=np.float32).tobytes()
    entry = '{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}'
    header = f'{{"w": {entry}, "w": {entry}}}'.encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    with pytest.raises(UnsafeFileError, match="'w' is given twice"):
        check_file(path, "model.safetensors")


def test_hub_ls_shows_what_a_hub_wrote_with_control_characters_escaped(tmp_path, capsys):
    """On main a manifest's ``created`` went to the terminal raw: a hub could send terminal escapes."""
    repository = tmp_path / "hub" / "m"
    version = write_manifest(repository, {"notes.txt": b"hello"})
    path = repository / "versions" / f"{version}.json"
    document = json.loads(path.read_text())
    document["created"] = "2026-01-01\x1b]0;owned\x07\x1b[2J\u202e"
    path.write_text(json.dumps(document))
    assert bytezoo_main(["hub", "ls", str(repository)]) == 0
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "2026-01-01\\x1b]0;owned\\x07\\x1b[2J\\u202e" in shown
