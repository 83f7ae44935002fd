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
    """A labelled dataset file (transfer's reader) and the same file as pretraining text (the data layer's)."""
    from bytezoo.data.formats import SourceError, iter_source_bytes
    from bytezoo.transfer.data import DatasetError, read_dataset

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
