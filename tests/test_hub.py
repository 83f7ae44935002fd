"""The hub over local folders (plain paths and file://), memory:// and read-only http://.

Server-backed tests (a real S3 server) are in test_hub_s3.py; killed and concurrent pushes in test_hub_faults.py.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import pickle
import subprocess
import sys
import threading
import uuid
import zipfile
from pathlib import Path

import fsspec
import pytest

import bytezoo.hub as hub
from bytezoo.cli import main as bytezoo_main
from bytezoo.hub import remote
from bytezoo.hub.card import GENERATED_MARKER, read_json_documents
from bytezoo.hub.errors import (
    HubError, IntegrityError, ManifestError, NotFoundError, OfflineError, UnsafeFileError,
)
from bytezoo.hub.manifest import FileEntry, Manifest, Tag
from bytezoo.untrusted.names import UnsafeNameError, check_relative_path
from bytezoo.hub.testing import write_checkpoint
from bytezoo.hub.urls import split_ref
from bytezoo.redaction import redact_url

CHILD = Path(__file__).with_name("hub_child.py")


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Every test gets its own cache; no test inherits offline mode from the developer's shell."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("BYTEZOO_CACHE", str(directory))
    monkeypatch.delenv("BYTEZOO_OFFLINE", raising=False)
    return directory


@pytest.fixture(params=["path", "file", "memory"])
def hub_url(request, tmp_path):
    """A repository URL on each backend that needs no server; memory:// roots are unique and removed after."""
    if request.param == "path":
        yield str(tmp_path / "hub" / "mlstm-tiny")
    elif request.param == "file":
        yield f"file://{tmp_path}/hub/mlstm-tiny"
    else:
        root = f"memory://hub-test-{uuid.uuid4().hex}"
        yield f"{root}/mlstm-tiny"
        memory = fsspec.filesystem("memory")
        if memory.exists(root):
            memory.rm(root, recursive=True)


@pytest.fixture(params=["whole", "in-parts"])
def download(request, monkeypatch) -> str:
    """Run a test with blobs downloaded in one request and as large blobs are (normally those over 16 MB)."""
    if request.param == "in-parts":
        monkeypatch.setattr(remote, "PART_SIZE", 50_000)
    return request.param


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return write_checkpoint(tmp_path / "checkpoint", megabytes=0.25)


def hub_fs(url: str):
    return fsspec.core.url_to_fs(url)


def blob_of(url: str, path: str, version: str) -> str:
    """The hub path of the blob holding ``path`` in ``version``."""
    fs, root = hub_fs(url)
    manifest = json.loads(fs.cat_file(f"{root}/versions/{version}.json"))
    sha256 = next(entry["sha256"] for entry in manifest["files"] if entry["path"] == path)
    return f"{root}/blobs/sha256/{sha256}"


def same_files(directory: Path, checkpoint: Path) -> None:
    for source in checkpoint.iterdir():
        assert (Path(directory) / source.name).read_bytes() == source.read_bytes(), source.name


def cache_is_clean(cache_dir: Path) -> None:
    """Nothing left over in the cache's work area."""
    tmp = cache_dir / "hub" / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir())


# ---------------------------------------------------------------------------------------------------- round trips
def test_push_then_pull_gives_back_every_file_with_a_model_card(hub_url, checkpoint, tmp_path, cache_dir, download):
    version = hub.push(checkpoint, hub_url)

    cached = Path(hub.pull(hub_url))
    assert cached == cache_dir / "hub" / "snapshots" / version
    same_files(cached, checkpoint)
    assert GENERATED_MARKER in (cached / "README.md").read_text()
    assert sorted(p.name for p in cached.iterdir()) == sorted([p.name for p in checkpoint.iterdir()] + ["README.md"])

    target = tmp_path / "pulled"
    assert hub.pull(f"{hub_url}@{version}", target) == str(target)
    same_files(target, checkpoint)
    (target / "config.json").write_text("{}")  # an exported copy is the user's to edit; the cache is unaffected
    assert (cached / "config.json").read_bytes() == (checkpoint / "config.json").read_bytes()
    cache_is_clean(cache_dir)


def test_versions_are_content_addressed_and_tags_move(hub_url, checkpoint):
    first = hub.push(checkpoint, hub_url, tag="first")
    assert hub.push(checkpoint, hub_url) == first  # same files, same version: nothing new
    assert [info.version for info in hub.ls(hub_url)] == [first]

    (checkpoint / "notes.txt").write_text("fine-tuned for one more epoch\n")
    second = hub.push(checkpoint, hub_url, tag="second")
    assert second != first

    versions = hub.ls(hub_url)
    assert [info.version for info in versions] == [second, first]  # newest first
    assert versions[0].tags == ("latest", "second") and versions[1].tags == ("first",)
    assert versions[0].files == 6 and versions[0].size == sum(
        p.stat().st_size for p in Path(hub.pull(hub_url)).iterdir()
    )
    assert Path(hub.pull(hub_url)).name == second
    assert Path(hub.pull(f"{hub_url}@first")).name == first
    assert Path(hub.pull(f"{hub_url}@second")).name == second
    assert Path(hub.pull(f"{hub_url}@{first}")).name == first
    assert Path(hub.pull(f"{hub_url}@{first[:8]}")).name == first  # an unambiguous prefix, like git
    assert not (Path(hub.pull(f"{hub_url}@first")) / "notes.txt").exists()  # old versions never change


def test_missing_repositories_tags_and_versions_are_named(hub_url, checkpoint):
    with pytest.raises(NotFoundError, match="no bytezoo hub repository"):
        hub.ls(hub_url)
    with pytest.raises(NotFoundError, match="no bytezoo hub repository"):
        hub.pull(hub_url)
    hub.push(checkpoint, hub_url)
    with pytest.raises(NotFoundError, match="no tag or version 'nightly'"):
        hub.pull(f"{hub_url}@nightly")
    with pytest.raises(NotFoundError, match="0123456789abcdef not found"):
        hub.pull(f"{hub_url}@0123456789abcdef")


def test_pushing_requires_a_directory_with_files(tmp_path, hub_url):
    with pytest.raises(HubError, match="not a directory"):
        hub.push(tmp_path / "nope", hub_url)
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    (tmp_path / "empty" / ".DS_Store").write_text("")
    with pytest.raises(HubError, match="holds no files"):
        hub.push(tmp_path / "empty", hub_url)
    with pytest.raises(ValueError, match="invalid tag"):
        hub.push(tmp_path / "empty", hub_url, tag="../escape")


def test_hidden_files_are_not_shared_and_subfolders_are(hub_url, checkpoint):
    (checkpoint / ".ipynb_checkpoints").mkdir()
    (checkpoint / ".ipynb_checkpoints" / "x.json").write_text("{}")
    (checkpoint / ".secrets.txt").write_text("do not share")
    (checkpoint / "plots").mkdir()
    (checkpoint / "plots" / "neurons.csv").write_text("unit,weight\n2388,0.9\n")
    pulled = Path(hub.pull(f"{hub_url}@{hub.push(checkpoint, hub_url)}"))
    assert (pulled / "plots" / "neurons.csv").read_text() == "unit,weight\n2388,0.9\n"
    assert not (pulled / ".secrets.txt").exists() and not (pulled / ".ipynb_checkpoints").exists()


# ---------------------------------------------------------------------------------------------------- integrity
@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate"])
def test_a_corrupt_blob_is_refused_and_never_cached(hub_url, checkpoint, cache_dir, damage, download):
    version = hub.push(checkpoint, hub_url)
    fs, _ = hub_fs(hub_url)
    blob = blob_of(hub_url, "model.safetensors", version)
    good = fs.cat_file(blob)
    bad = good[:100] + bytes([good[100] ^ 0xFF]) + good[101:] if damage == "flip-a-byte" else good[: len(good) // 2]
    fs.pipe_file(blob, bad)

    with pytest.raises(IntegrityError) as caught:
        hub.pull(hub_url)
    message = str(caught.value)
    assert "model.safetensors" in message
    assert hashlib.sha256(good).hexdigest() in message and hashlib.sha256(bad).hexdigest() in message
    assert not (cache_dir / "hub" / "blobs" / "sha256" / hashlib.sha256(good).hexdigest()).exists()
    assert not (cache_dir / "hub" / "blobs" / "sha256" / hashlib.sha256(bad).hexdigest()).exists()
    assert not (cache_dir / "hub" / "snapshots" / version).exists()
    cache_is_clean(cache_dir)

    fs.pipe_file(blob, good)  # repaired: the same pull now succeeds
    same_files(Path(hub.pull(hub_url)), checkpoint)


def test_a_manifest_naming_a_missing_blob_is_a_clear_error(hub_url, checkpoint, cache_dir):
    version = hub.push(checkpoint, hub_url)
    fs, _ = hub_fs(hub_url)
    fs.rm_file(blob_of(hub_url, "config.json", version))
    with pytest.raises(NotFoundError, match=r"lists 'config.json' .* is missing"):
        hub.pull(hub_url)
    assert not (cache_dir / "hub" / "snapshots" / version).exists()
    hub.push(checkpoint, hub_url)  # pushing again puts the missing blob back
    same_files(Path(hub.pull(hub_url)), checkpoint)


def _edit_manifest(url, version, edit):
    fs, root = hub_fs(url)
    path = f"{root}/versions/{version}.json"
    document = json.loads(fs.cat_file(path))
    fs.pipe_file(path, edit(document))


@pytest.mark.parametrize(
    "edit, error, pattern",
    [
        (lambda d: b"{ this is not json", ManifestError, "malformed manifest .*not valid JSON"),
        (lambda d: b"[]", ManifestError, "malformed manifest .*format"),
        (lambda d: json.dumps({**d, "format_version": 99}).encode(), ManifestError, "format_version 99"),
        (lambda d: json.dumps({**d, "files": "all of them"}).encode(), ManifestError, "'files' must be a list"),
        (lambda d: json.dumps({**d, "files": [{**d["files"][0], "size": -1}]}).encode(), ManifestError, "size"),
        (  # a file's recorded hash edited: the version id no longer matches the content listing
            lambda d: json.dumps({**d, "files": [{**f, "sha256": "0" * 64} for f in d["files"]]}).encode(),
            ManifestError, "does not match its contents",
        ),
        (
            lambda d: json.dumps({**d, "files": [{"path": "../../.bashrc", "sha256": "0" * 64, "size": 1}]}).encode(),
            UnsafeFileError, r"'\.\.' components",
        ),
        (
            lambda d: json.dumps({**d, "files": [{"path": "model.pt", "sha256": "0" * 64, "size": 1}]}).encode(),
            UnsafeFileError, "model.pt.*pickle",
        ),
    ],
    ids=["not-json", "not-a-manifest", "future-format", "files-not-a-list", "negative-size", "edited-hash",
         "path-traversal", "pickle-entry"],
)
def test_malformed_manifests_are_refused_with_clear_errors(hub_url, checkpoint, edit, error, pattern):
    version = hub.push(checkpoint, hub_url)
    _edit_manifest(hub_url, version, edit)
    with pytest.raises(error, match=pattern):
        hub.pull(hub_url)
    with pytest.raises(error, match=pattern):
        hub.ls(hub_url)


def test_pushing_again_repairs_a_damaged_manifest(hub_url, checkpoint):
    version = hub.push(checkpoint, hub_url)
    _edit_manifest(hub_url, version, lambda d: b"{ truncated")
    assert hub.push(checkpoint, hub_url) == version  # the version id fixes the content: safe to rewrite
    same_files(Path(hub.pull(hub_url)), checkpoint)


def test_a_tag_pointing_to_a_missing_version_is_a_clear_error(hub_url, checkpoint):
    version = hub.push(checkpoint, hub_url)
    fs, root = hub_fs(hub_url)
    fs.rm_file(f"{root}/versions/{version}.json")
    with pytest.raises(NotFoundError, match=f"tag 'latest' .* points to version {version}, which has no manifest"):
        hub.pull(hub_url)
    fs.pipe_file(f"{root}/tags/latest.json", b'{"format": "bytezoo.hub.tag"')
    with pytest.raises(ManifestError, match="malformed tag"):
        hub.pull(hub_url)


# ---------------------------------------------------------------------------------------------------- safety
def _torch_style_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"weight": [1.0]}))


@pytest.mark.parametrize(
    "name, write, pattern",
    [
        ("pytorch_model.bin", lambda p: p.write_bytes(pickle.dumps({"w": 1})), r"'pytorch_model.bin': \.bin .*pickle"),
        ("model.pt", _torch_style_zip, r"'model.pt': \.pt .*pickle"),
        ("features.npy", lambda p: p.write_bytes(b"\x93NUMPY"), r"'features.npy'.*pickle"),
        ("classifier.json", lambda p: p.write_bytes(pickle.dumps({"w": 1})), "'classifier.json': its content is a"),
        ("model.safetensors", lambda p: p.write_bytes(pickle.dumps([0] * 100)), "'model.safetensors'.*pickle"),
        ("weights.safetensors", _torch_style_zip, "'weights.safetensors'.*zip archive"),
        ("weights.safetensors", lambda p: p.write_bytes(b"\xff" * 64), "'weights.safetensors': not a safetensors"),
        ("config.json", lambda p: p.write_text("{'python': 'literal'}"), "'config.json': not valid UTF-8 JSON"),
        ("run.sh", lambda p: p.write_text("rm -rf ~"), r"'run.sh': \.sh not on the hub's allow-list"),
        ("plot.png", lambda p: p.write_bytes(b"GIF89a"), "'plot.png': not a PNG"),
        ("notes.txt", lambda p: p.write_bytes(b"\x00\xff\xfe"), "'notes.txt': not UTF-8 text"),
    ],
)
def test_pickles_and_other_unsafe_files_are_refused_before_anything_is_written(
    hub_url, checkpoint, name, write, pattern
):
    write(checkpoint / name)
    with pytest.raises(UnsafeFileError, match=pattern):
        hub.push(checkpoint, hub_url)
    fs, root = hub_fs(hub_url)
    assert not fs.exists(root)


def test_a_hub_that_serves_a_pickle_under_a_safe_name_is_refused_on_pull(hub_url, cache_dir):
    """A hub written by something other than bytezoo may skip the push-side checks; pull checks content again."""
    fs, root = hub_fs(hub_url)
    payload = pickle.dumps({"weights": [1.0]})
    sha256 = hashlib.sha256(payload).hexdigest()
    manifest = Manifest.for_files([FileEntry("classifier.json", sha256, len(payload))], created_by="someone else")
    put_bytes(fs, f"{root}/blobs/sha256/{sha256}", payload)
    put_bytes(fs, f"{root}/versions/{manifest.version}.json", manifest.to_json())
    put_bytes(fs, f"{root}/tags/latest.json", Tag("latest", manifest.version, "").to_json())
    with pytest.raises(UnsafeFileError, match="'classifier.json': its content is a Python pickle"):
        hub.pull(hub_url)
    assert not (cache_dir / "hub" / "snapshots" / manifest.version).exists()
    cache_is_clean(cache_dir)


def put_bytes(fs, path: str, data: bytes) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../up", "a/../../b", "a//b", "a\\b", ".hidden", "dir/.git/config", "", "a\nb"]
)
def test_unsafe_relative_paths_are_refused(path):
    with pytest.raises(UnsafeNameError):
        check_relative_path(path)


# ---------------------------------------------------------------------------------------------------- cache
def test_offline_mode_serves_pulled_versions_from_the_cache(hub_url, checkpoint, monkeypatch):
    version = hub.push(checkpoint, hub_url, tag="paper")
    online = hub.pull(f"{hub_url}@paper")
    fs, root = hub_fs(hub_url)
    fs.rm(root, recursive=True)  # the hub is gone (or the network is)

    assert hub.pull(f"{hub_url}@paper", offline=True) == online
    assert hub.pull(f"{hub_url}@{version}", offline=True) == online
    assert hub.pull(f"{hub_url}@{version[:7]}", offline=True) == online
    monkeypatch.setenv("BYTEZOO_OFFLINE", "1")
    assert hub.pull(f"{hub_url}@paper") == online
    if "://" in hub_url:  # a plain path whose hub folder is gone is just a path again
        assert hub.resolve(f"{hub_url}@paper") == online
    with pytest.raises(OfflineError, match="tag 'latest' .* never pulled"):
        hub.pull(hub_url)
    with pytest.raises(OfflineError, match="version 'abcdef12' is not in the cache"):
        hub.pull(f"{hub_url}@abcdef12")


def test_a_cached_version_is_served_without_asking_the_hub(hub_url, checkpoint):
    version = hub.push(checkpoint, hub_url)
    first = hub.pull(f"{hub_url}@{version}")
    fs, root = hub_fs(hub_url)
    fs.rm(root, recursive=True)
    assert hub.pull(f"{hub_url}@{version}") == first  # versions are immutable: the cache is authoritative
    with pytest.raises(NotFoundError):
        hub.pull(hub_url)  # a tag may have moved: that needs the hub


def test_concurrent_processes_share_one_cache_safely(tmp_path, cache_dir):
    hub_dir = tmp_path / "hub" / "model"
    checkpoint = write_checkpoint(tmp_path / "checkpoint", megabytes=2)
    version = hub.push(checkpoint, hub_dir)
    children = [
        subprocess.Popen([sys.executable, str(CHILD), "pull", str(hub_dir)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": _pythonpath()})
        for _ in range(4)
    ]
    results = [child.communicate(timeout=60) for child in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err.decode()
        assert json.loads(out)["result"] == str(cache_dir / "hub" / "snapshots" / version)
    same_files(cache_dir / "hub" / "snapshots" / version, checkpoint)
    cache_is_clean(cache_dir)


def _pythonpath() -> str:
    """The directory bytezoo is imported from, for child processes (works before and after `pip install -e`)."""
    package_parent = str(Path(hub.__file__).resolve().parents[2])
    return os.pathsep.join([package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


# ---------------------------------------------------------------------------------------------------- resolve
def test_resolve_passes_local_checkpoints_through_and_pulls_urls(tmp_path, checkpoint, hub_url):
    assert hub.resolve(str(checkpoint)) == str(checkpoint)
    assert hub.resolve(checkpoint) == str(checkpoint)
    assert hub.resolve("mlstm-4096") == "mlstm-4096"  # a preset or Hugging Face name is for from_pretrained
    assert hub.resolve("someone@example/model") == "someone@example/model"
    assert hub.resolve(f"file://{checkpoint}") == str(checkpoint)  # a plain folder, written as a URL
    version = hub.push(checkpoint, hub_url, tag="v1")
    resolved = hub.resolve(f"{hub_url}@v1")
    assert Path(resolved).name == version
    same_files(Path(resolved), checkpoint)


def test_resolve_pulls_a_local_hub_folder(tmp_path, checkpoint):
    version = hub.push(checkpoint, tmp_path / "hub" / "model", tag="v1")
    assert Path(hub.resolve(tmp_path / "hub" / "model")).name == version
    assert Path(hub.resolve(f"{tmp_path}/hub/model@v1")).name == version


def test_zoo_checkpoints_load_straight_from_a_hub_url(tmp_path, caplog):
    import bytezoo
    import torch
    from bytezoo.zoo import MLSTMForCausalLM

    model = bytezoo.create_model("mlstm-256", **bytezoo.get_model_info("mlstm-256").test_overrides)
    model.save_pretrained(tmp_path / "checkpoint")
    bytezoo.ByteTokenizer().save_pretrained(tmp_path / "checkpoint")
    url = f"file://{tmp_path}/hub/mlstm-256"
    hub.push(tmp_path / "checkpoint", url, tag="v1")
    assert "not sharing" in caplog.text and "modeling_mlstm.py" in caplog.text  # remote code stays behind

    for loaded in (bytezoo.from_pretrained(f"{url}@v1"), MLSTMForCausalLM.from_pretrained(url)):
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    assert not list(Path(hub.resolve(url)).glob("*.py"))


def test_a_classifier_loads_from_a_hub_url_through_bytezoo_from_pretrained(tmp_path):
    import bytezoo
    import torch
    from transformers import AutoModelForSequenceClassification

    from bytezoo.errors import InvalidArgumentError
    from bytezoo.zoo.mlstm.modeling_mlstm import MLSTMForSequenceClassification

    language_model = bytezoo.create_model("mlstm-256", **bytezoo.get_model_info("mlstm-256").test_overrides)
    language_model.save_pretrained(tmp_path / "lm")
    url = f"file://{tmp_path}/hub/mlstm-256"
    hub.push(tmp_path / "lm", url, tag="v1")

    # A causal LM's URL as a classifier: every body weight loaded, the head fresh (what the Auto class does locally).
    for auto_class in (AutoModelForSequenceClassification, "AutoModelForSequenceClassification"):
        model = bytezoo.from_pretrained(f"{url}@v1", auto_class=auto_class, num_labels=3)
        assert type(model) is MLSTMForSequenceClassification and model.config.num_labels == 3
        for name, tensor in language_model.model.state_dict().items():
            torch.testing.assert_close(model.model.state_dict()[name], tensor, rtol=0, atol=0)
    assert type(bytezoo.from_pretrained(url)) is type(language_model)  # without auto_class: what config.json names

    # A fine-tuned classifier's URL loads as the classifier, its head included, with no auto_class.
    model.save_pretrained(tmp_path / "classifier")
    hub.push(tmp_path / "classifier", f"file://{tmp_path}/hub/classifier", tag="v1")
    again = bytezoo.from_pretrained(f"file://{tmp_path}/hub/classifier@v1")
    assert type(again) is MLSTMForSequenceClassification
    torch.testing.assert_close(again.score.weight, model.score.weight, rtol=0, atol=0)

    with pytest.raises(InvalidArgumentError, match=r"auto_class='AutoModelForSeqClassification': bytezoo's models "
                                                   r"load as AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification"):
        bytezoo.from_pretrained(f"{tmp_path}/hub/never-pushed", auto_class="AutoModelForSeqClassification")
    with pytest.raises(InvalidArgumentError, match="base_model=True loads the body"):
        bytezoo.from_pretrained(url, base_model=True, auto_class=AutoModelForSequenceClassification)


# ---------------------------------------------------------------------------------------------------- model cards
def test_the_model_card_summarises_architecture_parameters_training_and_transfer(tmp_path, checkpoint):
    (checkpoint / "report.json").write_text(json.dumps({  # the shape bytezoo.transfer writes
        "task": "binary", "accuracy": {"train": 0.95, "dev": 0.9, "test": 0.9134},
        "top_units": [{"unit": 2388, "importance": 3.1}, {"unit": 17, "importance": 0.4}],
        "timings": {"total_s": 12.5},
    }))
    (checkpoint / "classifier.json").write_text(json.dumps({"type": "logistic", "C": 0.25, "api_token": "hunter2"}))
    url = f"file://{tmp_path}/hub/mlstm-tiny"
    card = (Path(hub.pull(f"{url}@{hub.push(checkpoint, url)}")) / "README.md").read_text()

    parameters = 256 * 16 + _rows(checkpoint) * 256 + 256
    assert f"| `model.safetensors` | {parameters:,}" in card
    for expected in ["# mlstm-tiny", "multiplicative LSTM", "| hidden size | 64 |", "| layers | 1 |",
                     "**Training data:** amazon-reviews (tiny sample)", "**Characters seen:** 123,456,789 (123.46M)",
                     "**Validation BPC:** 1.2345", "**Optimizer steps:** 1000", "`throughput.bytes_per_second`",
                     "**Test accuracy:** 0.9134", "**Top units:** 2388, 17", "`timings.total_s` | 12.5", "`C` | 0.25", f'bytezoo.from_pretrained("{url}")',
                     f'AutoTokenizer.from_pretrained(bytezoo.hub.resolve("{url}"))', "SentimentPipeline.from_pretrained", "tokenizer_config.json"]:
        assert expected in card, expected
    assert "hunter2" not in card and "api_token" not in card


def _rows(checkpoint: Path) -> int:
    header_size = int.from_bytes((checkpoint / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((checkpoint / "model.safetensors").read_bytes()[8: 8 + header_size])
    return header["layers.0.wh"]["shape"][0]


def test_hand_written_cards_are_kept_and_generated_ones_refreshed(tmp_path, checkpoint):
    url = str(tmp_path / "hub" / "m")
    pulled = Path(hub.pull(f"{url}@{hub.push(checkpoint, url)}", tmp_path / "work"))
    summary = json.loads((pulled / "training_summary.json").read_text())
    (pulled / "training_summary.json").write_text(json.dumps({**summary, "val_bpc": 1.1}))
    card = (Path(hub.pull(f"{url}@{hub.push(pulled, url)}")) / "README.md").read_text()
    assert "**Validation BPC:** 1.1000" in card  # the pulled, generated card was regenerated

    (checkpoint / "README.md").write_text("# My model\n\nHand-written.\n")
    assert (Path(hub.pull(f"{url}@{hub.push(checkpoint, url)}")) / "README.md").read_text().startswith("# My model")
    (checkpoint / "README.md").unlink()
    assert not (Path(hub.pull(f"{url}@{hub.push(checkpoint, url, model_card=False)}")) / "README.md").exists()


def _comparison_report() -> dict:
    """A report.json as `bytezoo transfer` (schema 2) writes one, its comparison built by the functions it uses."""
    import numpy as np

    from bytezoo.transfer import comparison as compare

    y_train, y_test = np.array(["pos", "neg", "pos"] * 8), np.array(["pos", "neg"] * 20)
    comparison = compare.new_comparison("test", "accuracy", len(y_test), [10, 24], seed=0)
    majority = [{"n_train": n, **compare.majority_point("binary", y_train[compare.training_subset(y_train, n, 0)], y_test)}
                for n in (10, 24)]
    compare.add_method(comparison, compare.MAJORITY, "majority class", majority, constant=True)
    compare.add_method(comparison, compare.TFIDF, "TF-IDF word 1-2grams + L2 LR",
                       [{"n_train": 10, "accuracy": 0.625, "C": 1.0}, {"n_train": 24, "accuracy": 0.8, "C": 4.0}])
    compare.add_method(comparison, compare.PROBE, "frozen mlstm features + L1 LR",
                       [{"n_train": 10, "accuracy": None}, {"n_train": 24, "accuracy": 0.875}])
    return {"schema_version": 2, "task": "binary", "metric": "accuracy", "accuracy": {"train": 1.0, "dev": 0.9, "test": 0.875},
            "comparison": comparison}


def _val_compression() -> dict:
    """A pretraining summary's ``val_compression``, measured by the function the trainer calls on its held-out bytes."""
    import numpy as np

    from bytezoo.pretrain.compression import held_out_compression
    from bytezoo.pretrain.data import StreamLayout

    data = b"the same bytes the validation windows read, a few times over. " * 20

    class HeldOut:  # the packed corpus's one method the compressors use
        def read_many(self, ranges):
            return [np.frombuffer(data[offset:offset + length], dtype=np.uint8) for offset, length in ranges]

    return held_out_compression(HeldOut(), StreamLayout.plan(len(data), 2, 1 << 20), 16, predicted_bytes=len(data) - 2)


def test_the_model_card_shows_the_comparison_and_the_compressors_as_tables(checkpoint, monkeypatch):
    from bytezoo.report_tables import comparison_cells

    report = _comparison_report()
    printed = comparison_cells(report["comparison"])  # what `bytezoo transfer` prints
    summary = {**json.loads((checkpoint / "training_summary.json").read_text()), "val_compression": _val_compression()}
    (checkpoint / "report.json").write_text(json.dumps(report))
    (checkpoint / "training_summary.json").write_text(json.dumps(summary))
    names = {path.name: path.stat().st_size for path in checkpoint.iterdir()}
    for stage in ("bytezoo.transfer", "bytezoo.transfer.comparison", "bytezoo.pretrain", "bytezoo.finetune"):
        monkeypatch.setitem(sys.modules, stage, None)  # the card reads the documents, not the stages that wrote them
    card = hub.make_model_card("m", names, read_json_documents(checkpoint, names), {})
    lines = card.splitlines()
    assert lines[0] == GENERATED_MARKER and lines[1] == "---"  # the metadata block stays first

    comparison = report["comparison"]
    assert "Test accuracy (%) by training labels, on 40 test texts (same draws, seed 0):" in card
    for text, end in ((printed["caption"], ":"), (printed["footnote"], ".")):  # the words the command prints
        assert text[0].upper() + text[1:] + end in card
    assert all(f"| {label} | {' | '.join(values)} |" in lines for label, values in printed["rows"])
    assert "| method | 10 labels | 24 labels |" in lines
    for method in comparison["methods"]:
        cells = ["n/a" if p["accuracy"] is None else f"{100 * p['accuracy']:.1f}" for p in method["points"]]
        assert f"| {method['label']} | {' | '.join(cells)} |" in lines, method["label"]
    assert "| frozen mlstm features + L1 LR | n/a | 87.5 |" in lines  # worked out by hand: None, then 0.875
    assert "Every method is fitted on the same rows" in card and "One standard error from the test set alone" in card
    assert "`comparison." not in card  # shown once, as the table

    compression = summary["val_compression"]
    assert f"on the same {compression['raw_bytes']:,} held-out bytes" in card
    assert "| this model (validation BPC) | 1.2345 |  |" in lines
    for name, entry in compression["compressors"].items():
        row = f"| {name} {entry['setting']} | {entry['bits_per_byte']:.4f} | {entry['compressed_bytes']:,} |"
        assert row in lines, row
    assert [line.split(" | ")[0] for line in lines if line.startswith(("| gzip", "| bz2", "| xz", "| zstd"))] == [
        "| gzip -9", "| bz2 -9", "| xz -9", "| zstd -19"]
    assert "`val_compression." not in card and "**Validation BPC:** 1.2345" in card


@pytest.mark.parametrize("report, compression", [
    ({"task": "binary", "accuracy": {"test": 0.9}}, None),  # before the comparison (schema 1), no validation data
    ({"comparison": {"split": None, "metric": "accuracy", "n_eval": None, "n_train": [10], "methods": [],
                     "note": "no test split: nothing to compare on"}}, {"raw_bytes": 10**9, "skipped": "too many bytes"}),
    ({"comparison": {"n_train": [10], "methods": [{"label": "x", "points": "?"}]}},  # a shape this version does not know
     {"compressors": {"gzip": {"setting": "-9", "bits_per_byte": "?"}}, "raw_bytes": "many"}),
])
def test_the_model_card_is_written_without_the_tables_or_with_unknown_shapes(checkpoint, report, compression):
    summary = {**json.loads((checkpoint / "training_summary.json").read_text()), "val_compression": compression}
    card = hub.make_model_card("m", {"config.json": 2}, {"report.json": report, "training_summary.json": summary}, {})
    assert card.startswith(GENERATED_MARKER + "\n---\n") and "**Validation BPC:** 1.2345" in card
    assert "Compared at the same numbers of labels" not in card
    if isinstance(report.get("comparison"), dict):
        assert "`comparison.n_train` | 10" in card  # still shown, as fields
    if compression and "skipped" in compression:
        assert "Standard compressors on the held-out bytes: skipped (too many bytes)." in card
    elif compression:
        assert "| gzip -9 | n/a |  |" in card and "on the same held-out bytes" in card


def test_credentials_never_reach_cards_messages_or_manifests(tmp_path, checkpoint, caplog):
    summary = json.loads((checkpoint / "training_summary.json").read_text())
    summary.update(data="s3://AKIAEXAMPLE:wJalrXUtnFEMI@corpora/amazon", aws_secret_access_key="wJalrXUtnFEMI")
    (checkpoint / "training_summary.json").write_text(json.dumps(summary))
    card = hub.make_model_card("m", {"config.json": 2}, {"training_summary.json": summary}, {},
                               url="https://alice:wJalrXUtnFEMI@models.example.com/m?token=wJalrXUtnFEMI")
    assert "wJalrXUtnFEMI" not in card and "s3://\\*\\*\\*@corpora/amazon" in card  # (*** escaped for Markdown)
    assert redact_url("https://alice:pw@host/x?sig=1") == "https://***@host/x?***"

    caplog.set_level("DEBUG", logger="bytezoo.hub")
    url = str(tmp_path / "hub" / "m")
    version = hub.push(checkpoint, url)
    manifest = (tmp_path / "hub" / "m" / "versions" / f"{version}.json").read_text()
    generated = (Path(hub.pull(url)) / "README.md").read_text()
    for text in (manifest, generated, caplog.text):
        assert "wJalrXUtnFEMI" not in text


# ---------------------------------------------------------------------------------------------------- references
@pytest.mark.parametrize(
    "ref, expected",
    [
        ("s3://bucket/models/m", ("s3://bucket/models/m", None)),
        ("s3://bucket/models/m@v2", ("s3://bucket/models/m", "v2")),
        ("s3://bucket/models/m@0123abcd", ("s3://bucket/models/m", "0123abcd")),
        ("https://user@host.example/models/m", ("https://user@host.example/models/m", None)),
        ("https://user@host.example/models/m@paper", ("https://user@host.example/models/m", "paper")),
        ("hf://someone/repo@main/sub", ("hf://someone/repo@main/sub", None)),
        ("/data/hub/m@sst2-best", ("/data/hub/m", "sst2-best")),
    ],
)
def test_references_split_into_url_and_selector(ref, expected):
    assert split_ref(ref) == expected


def test_a_malformed_selector_is_a_clear_error():
    with pytest.raises(ValueError, match="invalid hub reference .*invalid tag"):
        split_ref("s3://bucket/m@not a tag")


# ---------------------------------------------------------------------------------------------------- http
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_hub(tmp_path):
    """A local folder served read-only over http://127.0.0.1:<free port>."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_hubs_can_be_pulled_from_but_not_pushed_to(http_hub, tmp_path, download):
    root, base = http_hub  # "in-parts": large blobs over http stream through a reader thread (no ranges)
    checkpoint = write_checkpoint(tmp_path / "checkpoint", megabytes=2)
    version = hub.push(checkpoint, root / "mlstm-tiny", tag="paper")
    same_files(Path(hub.pull(f"{base}/mlstm-tiny@paper")), checkpoint)
    assert [(info.version, info.tags) for info in hub.ls(f"{base}/mlstm-tiny")] == [(version, ("latest", "paper"))]
    with pytest.raises(HubError, match="read-only"):
        hub.push(checkpoint, f"{base}/mlstm-tiny")


# ---------------------------------------------------------------------------------------------------- command line
def run_cli(*argv, capsys) -> tuple[int, str, str]:
    code = bytezoo_main(list(argv))  # the command as users run it: user errors are printed by bytezoo.cli.main
    out, err = capsys.readouterr()
    return code, out, err


def test_command_line_push_ls_pull(tmp_path, checkpoint, capsys):
    url = f"file://{tmp_path}/hub/m"
    code, out, _ = run_cli("hub", "push", str(checkpoint), url, "--tag", "paper", capsys=capsys)
    version = out.strip()
    assert code == 0 and len(version) == 16

    code, out, _ = run_cli("hub", "ls", url, capsys=capsys)
    assert code == 0 and version in out and "latest, paper" in out
    code, out, _ = run_cli("hub", "ls", url, "--json", capsys=capsys)
    assert json.loads(out)[0]["tags"] == ["latest", "paper"]

    code, out, _ = run_cli("hub", "pull", f"{url}@paper", str(tmp_path / "out"), capsys=capsys)
    assert code == 0 and out.strip() == str(tmp_path / "out")
    same_files(tmp_path / "out", checkpoint)
    code, out, _ = run_cli("hub", "pull", f"{url}@paper", "--offline", capsys=capsys)
    assert code == 0 and Path(out.strip()).name == version


def test_command_line_reports_refusals_as_one_line_errors(tmp_path, checkpoint, capsys):
    (checkpoint / "model.ckpt").write_bytes(pickle.dumps({}))
    code, _, err = run_cli("hub", "push", str(checkpoint), str(tmp_path / "hub"), capsys=capsys)
    assert code == 2 and err.startswith("bytezoo hub push: error: refusing 'model.ckpt'") and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("hub", "pull", f"{tmp_path}/nothing-here@v1", capsys=capsys)
    assert code == 2 and "no bytezoo hub repository" in err and len(err.strip().splitlines()) == 1
