"""The parsers of untrusted input, each wrapped as a fuzz target: given arbitrary bytes (or a structure), the parser
either succeeds or raises the error type it declares, with a message naming the file. Anything else (another
exception type, a message without the file's name, a write outside the target folder) is a finding.

Shared by tests/test_fuzz_parsers.py (a few hundred examples per parser, in CI) and benchmarks/fuzz_parsers.py (many
more, with a time limit per input and a memory bound).
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

import zstandard


class Finding(AssertionError):
    """A parser raised something other than its declared error, or misbehaved otherwise."""


def expect(call, declared: tuple[type[BaseException], ...], name: str):
    """Runs ``call``; its result, or None if it raised a declared error whose message names ``name``."""
    try:
        return call()
    except declared as error:
        if name not in str(error):
            raise Finding(f"{type(error).__name__} without the file's name {name!r}: {error}") from error
        return None
    except Exception as error:  # noqa: BLE001  (exactly what a fuzzer looks for)
        raise Finding(f"undeclared {type(error).__name__}: {error}") from error


def manifest(data: bytes, folder: Path):
    from bytezoo.hub.errors import HubError
    from bytezoo.hub.manifest import Manifest, Tag

    expect(lambda: Manifest.from_json(data, source="versions/x.json"), (HubError,), "versions/x.json")
    expect(lambda: Tag.from_json(data, source="tags/t.json"), (HubError,), "tags/t.json")


def hub_reference(text: str, folder: Path):
    from bytezoo.hub.urls import split_ref

    try:
        split_ref(text)
    except ValueError as error:
        if "invalid hub reference" not in str(error):
            raise Finding(f"ValueError not naming the reference: {error}") from error
    except Exception as error:  # noqa: BLE001
        raise Finding(f"undeclared {type(error).__name__}: {error}") from error


def safetensors_file(data: bytes, folder: Path):
    """The hub's content check, and loading it as a model's weights."""
    from bytezoo.hub.errors import UnsafeFileError
    from bytezoo.hub.safety import check_file

    path = folder / "model.safetensors"
    path.write_bytes(data)
    expect(lambda: check_file(path, "model.safetensors"), (UnsafeFileError,), "model.safetensors")


_TINY_CHECKPOINTS: dict[str, tuple[dict, bytes]] = {}


def tiny_checkpoint(model_type: str) -> tuple[dict, bytes]:
    """(config.json, model.safetensors) of a tiny saved model of the family: fuzzed configs are laid over a real
    one, so parsing gets past the weights check and into the config."""
    if model_type not in _TINY_CHECKPOINTS:
        import tempfile

        import bytezoo

        preset = {"mlstm": "mlstm-256", "byte_lstm": "lstm-256"}[model_type]
        with tempfile.TemporaryDirectory() as folder:
            bytezoo.create_model(preset, hidden_size=4, embedding_size=2).save_pretrained(folder)
            _TINY_CHECKPOINTS[model_type] = (json.loads(Path(folder, "config.json").read_text()),
                                             Path(folder, "model.safetensors").read_bytes())
    return _TINY_CHECKPOINTS[model_type]


def checkpoint(model_type: str, overrides: dict, weights: bytes | None, folder: Path):
    """A checkpoint folder through bytezoo.from_pretrained: a tiny model's config with ``overrides`` laid over it,
    and its weights (or ``weights``, if given)."""
    import bytezoo
    from bytezoo.zoo.configuration_utils import ConfigError
    from bytezoo.zoo.modeling_utils import CheckpointError

    config, real_weights = tiny_checkpoint(model_type)
    (folder / "config.json").write_text(json.dumps({**config, **overrides}))
    (folder / "model.safetensors").write_bytes(real_weights if weights is None else weights)
    expect(lambda: bytezoo.from_pretrained(str(folder)), (CheckpointError, ConfigError), str(folder))


def classifier(metadata: bytes, weights: bytes, folder: Path):
    from bytezoo.transfer.classifier import ClassifierFormatError, SparseLogisticClassifier

    (folder / "classifier.json").write_bytes(metadata)
    (folder / "classifier.safetensors").write_bytes(weights)
    expect(lambda: SparseLogisticClassifier.load(str(folder)), (ClassifierFormatError,), str(folder))


COMPRESSORS = {
    "": lambda data: data,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def dataset(data: bytes, fmt: str, compression: str, compress: bool, folder: Path):
    """A labelled dataset file (the labelled-set reader) and the same file as pretraining text (the packer's)."""
    from bytezoo.data.formats import SourceError, iter_source_bytes
    from bytezoo.data.errors import DatasetError
    from bytezoo.data.labelled import read_dataset

    path = folder / f"data.{fmt}{compression}"
    path.write_bytes(COMPRESSORS[compression](data) if compress else data)
    expect(lambda: read_dataset(str(path)), (DatasetError,), str(path))
    expect(lambda: b"".join(iter_source_bytes(str(path))), (SourceError,), str(path))


def archive(names: list[str], kind: str, folder: Path):
    """An archive whose members have these names, through the downloader's member walk: every name it yields must
    stay inside the archive's folder."""
    from bytezoo.data.archives import archive_files
    from bytezoo.data.errors import DatasetError

    names = list(dict.fromkeys(name or "x" for name in names))  # one member per name
    path = folder / f"a.{'zip' if kind == 'zip' else 'tar.gz'}"
    try:  # building the archive is the harness's part: a name zipfile or tarfile cannot write is no input at all
        if kind == "zip":
            with zipfile.ZipFile(path, "w") as bundle:
                for name in names:
                    bundle.writestr(name, b"data")
        else:
            with tarfile.open(path, "w:gz") as bundle:
                for name in names:
                    info = tarfile.TarInfo(name)
                    info.size = 4
                    bundle.addfile(info, io.BytesIO(b"data"))
    except (ValueError, IndexError, OSError, UnicodeError):
        return
    def walk():
        for name, _ in archive_files(path):
            parts = name.replace("\\", "/").split("/")
            if name.startswith("/") or ".." in parts:
                raise Finding(f"archive member {name!r} escapes the extraction folder")
    expect(walk, (DatasetError,), path.name)
    stray = [p for p in folder.parent.iterdir() if p != folder]
    if stray:
        raise Finding(f"files written outside the target folder: {stray}")


def packed_index(index: bytes, folder: Path):
    from bytezoo.data.packed import PackedCorpus, PackError

    (folder / "index.json").write_bytes(index)
    expect(lambda: PackedCorpus.open(str(folder)), (PackError,), str(folder))


# ---------------------------------------------------------------------------------------------------- issue 25's classes
# Hostile names, lying sizes, deep JSON, huge records, credentials planted in URLs. Each target states the guarantee
# (names stay inside their folder, reads stop at the claimed size + 1, one declared error, records bounded, no secret
# in anything written or printed) and raises Finding when it does not hold.

def _inside(folder: Path, path: str) -> bool:
    import os

    return os.path.realpath(folder / path).startswith(os.path.realpath(folder) + os.sep)


def manifest_paths(paths: list[str], folder: Path):
    """A manifest listing these paths: refused by name, or every path can be written side by side inside the
    folder, under a temporary name too (what a pull does)."""
    from bytezoo.hub.errors import HubError
    from bytezoo.hub.manifest import FileEntry, Manifest

    document = json.loads(Manifest.for_files([FileEntry("a.txt", "0" * 64, 1)], created_by="fuzz").to_json())
    document["files"] = [{"path": path, "sha256": "0" * 64, "size": 1} for path in paths]
    from bytezoo.hub.manifest import compute_version_id

    try:
        document["version"] = compute_version_id(FileEntry(path, "0" * 64, 1) for path in paths)
    except (TypeError, UnicodeEncodeError):  # a path no manifest can hold: the harness's limit, not the parser's
        pass
    manifest = expect(lambda: Manifest.from_json(json.dumps(document).encode(), "versions/x.json"), (HubError,),
                      "versions/x.json")
    if manifest is None:
        return
    for entry in manifest.files:
        if not _inside(folder, entry.path):
            raise Finding(f"manifest path {entry.path!r} leaves the folder")
        target = folder / entry.path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.with_name(f".{target.name}.{'0' * 32}.partial").write_bytes(b"x")
            target.with_name(f".{target.name}.{'0' * 32}.partial").rename(target)
        except OSError as error:
            raise Finding(f"accepted manifest paths {paths!r} cannot all be written: {error}") from error


def tag_document(file_name: str, written: object, folder: Path):
    """A tag read as ``file_name``: refused, or its name is a valid tag equal to ``file_name``."""
    from bytezoo.hub.errors import HubError
    from bytezoo.hub.manifest import Tag, is_tag_name

    data = json.dumps({"format": "bytezoo.hub.tag", "format_version": 1, "tag": written,
                       "version": "0123456789abcdef", "updated": ""}).encode()
    tag = expect(lambda: Tag.from_json(data, "tags/t.json", file_name), (HubError,), "tags/t.json")
    if tag is not None and (tag.name != file_name or not is_tag_name(tag.name)):
        raise Finding(f"tag document read as {file_name!r} accepted with name {tag.name!r}")


def packed_index_names(names: list, folder: Path):
    """A packed-corpus index naming these shard files: refused by name, or every name is a plain file beside it
    (the corpus then opens nothing else)."""
    from bytezoo.data.packed import PackError, read_index

    shards = [{"name": name, "bytes": 1, "sha256": "0" * 64} for name in names]
    index = {"format": "bytezoo-packed-corpus", "format_version": 1, "total_bytes": len(names), "block_bytes": 4096,
             "shard_bytes": 4096, "shards": shards, "crc32": {"name": "blocks.crc32", "bytes": 4, "sha256": "0" * 64},
             "documents": [0], "sources": [], "text_field": None}
    (folder / "index.json").write_text(json.dumps(index))
    accepted = expect(lambda: read_index(str(folder)), (PackError,), str(folder))
    for shard in (accepted or {}).get("shards", []):
        if not (isinstance(shard["name"], str) and _inside(folder, shard["name"]) and "/" not in shard["name"]):
            raise Finding(f"the index's shard name {shard['name']!r} was accepted")


def weight_map(mapping: dict, folder: Path):
    """A checkpoint index whose weight map holds ``mapping``: refused by name, or every file it names is a
    .safetensors file inside the checkpoint folder."""
    from bytezoo.zoo.modeling_utils import CheckpointError, _weight_files

    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": mapping}))
    files = expect(lambda: _weight_files(str(folder)), (CheckpointError,), "model.safetensors.index.json")
    for name in files or ():
        if not _inside(folder, name) or not name.endswith(".safetensors"):
            raise Finding(f"weight map accepted {name!r}")


def lying_blob(claimed: int, actual: int, folder: Path):
    """A blob of ``actual`` bytes whose manifest entry claims ``claimed``: at most claimed + 1 bytes are read and
    written, and a mismatch is refused (as pull does)."""
    import uuid

    import fsspec

    from bytezoo.hub.manifest import FileEntry
    from bytezoo.hub.remote import HubRepo

    root = f"memory://fuzz-{uuid.uuid4().hex}/repo"
    data = bytes(actual)
    import hashlib

    sha256 = hashlib.sha256(data[:claimed]).hexdigest()
    memory = fsspec.filesystem("memory")
    memory.pipe_file(f"{root}/blobs/sha256/{sha256}", data)
    try:
        digest, size = HubRepo(root).download_blob(FileEntry("x.bin", sha256, claimed), str(folder / "blob"))
    finally:
        memory.rm(root.rsplit("/", 1)[0], recursive=True)
    written = (folder / "blob").stat().st_size
    if size > claimed + 1 or written > claimed + 1:
        raise Finding(f"read {size} and wrote {written} bytes of a blob whose entry claims {claimed}")
    if (digest == sha256 and size == claimed) != (actual == claimed):
        raise Finding(f"a blob of {actual} bytes claiming {claimed} was taken for {size} bytes")


def deep_json(depth: int, container: str, folder: Path):
    """A document nested ``depth`` deep, given to every parser of JSON from outside: each raises its declared error
    naming the file (never RecursionError)."""
    from bytezoo.data.packed import PackedCorpus, PackError
    from bytezoo.hub.errors import HubError
    from bytezoo.hub.manifest import Manifest, Tag
    from bytezoo.hub.safety import check_file
    from bytezoo.transfer.classifier import ClassifierFormatError, SparseLogisticClassifier
    from bytezoo.zoo.modeling_utils import CheckpointError, _weight_files

    opening, closing = ("[", "]") if container == "list" else ('{"a": ', "}")
    document = '{"format": "x", "nested": ' + opening * depth + closing * depth + "}"
    data = document.encode()
    expect(lambda: Manifest.from_json(data, "versions/x.json"), (HubError,), "versions/x.json")
    expect(lambda: Tag.from_json(data, "tags/t.json", "t"), (HubError,), "tags/t.json")
    (folder / "config.json").write_bytes(data)
    expect(lambda: check_file(folder / "config.json", "config.json"), (HubError,), "config.json")
    (folder / "classifier.json").write_bytes(data)
    expect(lambda: SparseLogisticClassifier.load(str(folder)), (ClassifierFormatError,), str(folder))
    (folder / "index.json").write_bytes(data)
    expect(lambda: PackedCorpus.open(str(folder)), (PackError,), str(folder))
    (folder / "model.safetensors.index.json").write_bytes(data)
    expect(lambda: _weight_files(str(folder)), (CheckpointError,), "model.safetensors.index.json")
    header = data
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    expect(lambda: check_file(folder / "model.safetensors", "model.safetensors"), (HubError,), "model.safetensors")


def records_with_a_limit(data: bytes, fmt: str, compression: str, limit: int, folder: Path):
    """A record file read with a small record limit: records come out no longer than the limit, or the reader
    refuses with its declared error naming the file."""
    from bytezoo.data.formats import SourceError, iter_records

    path = folder / f"data.{fmt}{compression}"
    path.write_bytes(COMPRESSORS[compression](data))
    records = expect(lambda: list(iter_records(str(path), max_record_bytes=limit)), (SourceError,), str(path))
    for row, record in records or ():
        size = sum(len(str(key)) + len(str(value)) for key, value in record.items())
        if size > 4 * limit + 64:  # the limit counts characters of the line; fields are a part of it
            raise Finding(f"record at row {row} holds {size} characters, past the limit of {limit}")


def planted_credentials(parts: dict, folder: Path):
    """A URL with a secret planted in every credential field (the password, query values, a fragment, an hf_
    token), alone, inside a message, inside a JSON document written by bytezoo, and inside an error: the secret is
    never in what comes out."""
    from bytezoo.errors import ByteZooError
    from bytezoo.untrusted import jsonio
    from bytezoo.redaction import redact_text, redact_url

    import re

    secret = parts["secret"]
    url = (f"{parts['scheme']}://{parts['user']}:{secret}@{parts['host']}/{parts['path']}"
           f"?{parts['key']}={secret}&x=1#{secret}")
    chained = f"simplecache::{url}"
    token = re.sub(r"[^A-Za-z0-9]", "", secret).ljust(34, "0")  # a Hugging Face token's shape: hf_ + 34 letters
    for text in (url, chained, f"cannot open '{url}': no such bucket", f"{url}, line 3", f"(url={url})",
                 f"token hf_{token} was refused"):
        for shown in (redact_url(text) if text in (url, chained) else redact_text(text), redact_text(text),
                      str(ByteZooError(text)), jsonio.dumps({"data": [text], text: 1})):
            if secret in shown or token in shown:
                raise Finding(f"the secret survived in {shown!r}")
