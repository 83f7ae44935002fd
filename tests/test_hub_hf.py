"""The hub on the Hugging Face Hub (``hf://``), against :class:`FakeHuggingFaceHub`: an in-process server on 127.0.0.1
that answers the Hub's HTTP API as huggingface_hub calls it (no package on PyPI serves that API offline, and
huggingface_hub ships no test doubles). Uploads go through the LFS protocol (Xet is disabled: the fake has no CAS)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bytezoo.hub as hub
from bytezoo.cli import main as bytezoo_main
from bytezoo.hub.errors import HubError, IntegrityError, NotFoundError, OfflineError, UnsafeFileError
from bytezoo.hub.hf import MANIFEST_NAME
from bytezoo.hub.testing import write_checkpoint
from bytezoo.hub.testing_hf import FakeHuggingFaceHub

TOKEN = "hf_bytezoo_test"
REPO = "someone/mlstm-tiny"
URL = f"hf://{REPO}"
PUSHED = {"README.md", "config.json", "model.safetensors", "tokenizer_config.json", "training_summary.json"}


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A fresh fake Hub; huggingface_hub pointed at it (HF_ENDPOINT, HF_TOKEN) with its own cache, online."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # read at import; the fake speaks LFS, not Xet
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with FakeHuggingFaceHub(token=TOKEN) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield fake


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return write_checkpoint(tmp_path / "checkpoint", megabytes=0.1)


def error_lines(capsys) -> list[str]:
    """What the command printed on stderr besides huggingface_hub's progress bars: exactly one line."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1, lines
    return lines


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_push_is_one_commit_of_an_ordinary_model_repository_and_a_tag(server, checkpoint, tmp_path):
    version = hub.push(checkpoint, URL, tag="v1")

    commits = server.commits(REPO)
    assert [c.title for c in commits] == ["initial commit", f"bytezoo hub push: version {version} (v1)"]
    files = commits[-1].files
    assert set(files) == PUSHED | {".gitattributes", MANIFEST_NAME}  # where from_pretrained looks, at the top
    assert files["model.safetensors"].is_lfs  # weights went through the LFS protocol, as the Hub wants them
    assert server.tags(REPO) == {"v1": commits[-1].oid}
    readme = server.read(REPO, "README.md").decode()
    assert readme.startswith("---\nlibrary_name: transformers\n")  # the Hub reads the metadata block only at the top
    assert 'from_pretrained("someone/mlstm-tiny", revision="main")' in readme
    manifest = json.loads(server.read(REPO, MANIFEST_NAME))
    assert manifest["version"] == version
    for entry in manifest["files"]:
        assert entry["sha256"] == sha256(server.read(REPO, entry["path"]))
        if entry["path"] != "README.md":
            assert entry["sha256"] == sha256((checkpoint / entry["path"]).read_bytes())

    snapshot = Path(hub.pull(f"{URL}@v1"))
    assert snapshot == tmp_path / "hf-cache" / "models--someone--mlstm-tiny" / "snapshots" / commits[-1].oid
    assert {p.name for p in snapshot.iterdir()} == PUSHED | {MANIFEST_NAME}
    for name in PUSHED - {"README.md"}:
        assert (snapshot / name).read_bytes() == (checkpoint / name).read_bytes()
    assert Path(hub.pull(URL)) == snapshot  # no reference: the main branch
    assert Path(hub.pull(f"{URL}@{commits[-1].oid}")) == snapshot  # a commit id
    exported = Path(hub.pull(f"{URL}@v1", tmp_path / "exported"))
    assert {p.name for p in exported.iterdir()} == PUSHED
    assert [(v.version, v.tags) for v in hub.ls(URL)] == [(version, ("main", "v1"))]


def test_an_existing_tag_is_refused_unless_moved(server, checkpoint, capsys):
    first = hub.push(checkpoint, URL, tag="v1")
    assert hub.push(checkpoint, URL, tag="v1") == first  # the same files again: nothing to do, no error
    commits = len(server.commits(REPO))

    (checkpoint / "notes.txt").write_text("one more epoch\n")
    with pytest.raises(HubError, match=r"tag 'v1' already exists on hf://someone/mlstm-tiny .*--move-tag"):
        hub.push(checkpoint, URL, tag="v1")
    capsys.readouterr()
    assert bytezoo_main(["hub", "push", str(checkpoint), URL, "--tag", "v1"]) == 2  # a user error: one line, exit 2
    assert error_lines(capsys)[0].startswith("bytezoo hub push: error: tag 'v1' already exists")
    assert len(server.commits(REPO)) == commits  # refused before anything was uploaded

    assert bytezoo_main(["hub", "push", str(checkpoint), URL, "--tag", "v1", "--move-tag"]) == 0
    second = capsys.readouterr().out.strip()
    assert second != first and len(server.commits(REPO)) == commits + 1
    assert server.tags(REPO) == {"v1": server.commits(REPO)[-1].oid}
    assert (Path(hub.pull(f"{URL}@v1")) / "notes.txt").read_text() == "one more epoch\n"
    for reserved in ("latest", "main"):
        with pytest.raises(HubError, match="the 'main' branch always holds the latest push"):
            hub.push(checkpoint, URL, tag=reserved)


def test_each_push_commits_the_folder_as_it_is(server, checkpoint):
    (checkpoint / "notes.txt").write_text("draft\n")
    hub.push(checkpoint, URL)
    (checkpoint / "notes.txt").unlink()
    version = hub.push(checkpoint, URL, tag="v2")
    assert "notes.txt" not in server.commits(REPO)[-1].files  # what an earlier push put there and this one lacks
    assert len(server.commits(REPO)) == 3
    assert hub.push(checkpoint, URL) == version and len(server.commits(REPO)) == 3  # nothing new: no commit
    assert [(v.version, v.tags) for v in hub.ls(URL)] == [(version, ("main", "v2"))]


def test_a_file_changed_on_the_hub_is_refused_and_leaves_the_cache(server, checkpoint, tmp_path, capsys):
    hub.push(checkpoint, URL, tag="v1")
    good = server.read(REPO, "model.safetensors")
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])  # same size: only the sha256 can tell
    server.tamper(REPO, "model.safetensors", bad)

    with pytest.raises(IntegrityError) as caught:
        hub.pull(f"{URL}@v1")
    message = str(caught.value)
    assert "'model.safetensors'" in message and sha256(good) in message and sha256(bad) in message
    assert isinstance(caught.value, HubError)
    cache = tmp_path / "hf-cache" / "models--someone--mlstm-tiny"
    assert not [p for p in cache.rglob("*") if p.is_file() and p.read_bytes() == bad]  # evicted
    capsys.readouterr()
    assert bytezoo_main(["hub", "pull", f"{URL}@v1"]) == 2
    assert error_lines(capsys)[0].startswith("bytezoo hub pull: error: integrity check failed for 'model.safetensors'")

    server.tamper(REPO, "model.safetensors", good)  # repaired: the same pull now succeeds
    snapshot = Path(hub.pull(f"{URL}@v1"))
    assert (snapshot / "model.safetensors").read_bytes() == good

    blob = (snapshot / "config.json").resolve()  # damage to the local copy is caught too
    blob.write_bytes(blob.read_bytes().replace(b"64", b"65"))
    with pytest.raises(IntegrityError, match="'config.json'"):
        hub.pull(f"{URL}@v1")
    assert (Path(hub.pull(f"{URL}@v1")) / "config.json").read_bytes() == (checkpoint / "config.json").read_bytes()


def test_offline_pulls_are_served_from_the_hugging_face_cache(server, checkpoint, monkeypatch):
    hub.push(checkpoint, URL, tag="v1")
    online = hub.pull(f"{URL}@v1")
    served = len(server.requests)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.pull(f"{URL}@v1") == online
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub.pull(f"{URL}@v1", offline=True) == online
    monkeypatch.setenv("BYTEZOO_OFFLINE", "1")
    assert hub.resolve(f"{URL}@v1") == online
    assert len(server.requests) == served  # the server was never asked
    with pytest.raises(OfflineError, match=r"offline mode: hf://someone/mlstm-tiny@v2 is not in the Hugging Face"):
        hub.pull(f"{URL}@v2")


def test_only_the_code_that_auto_map_names_is_committed_and_never_pulled(server, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    config = {"model_type": "toy", "auto_map": {"AutoModel": "modeling_toy.ToyModel", "AutoConfig": "other--repo.x.Y"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_toy.py").write_text("from .helpers_toy import f\nclass ToyModel: ...\n")
    (folder / "helpers_toy.py").write_text("def f(): ...\n")
    (folder / "train_script.py").write_text("print('not part of the model')\n")
    hub.push(folder, URL, model_card=False)
    assert set(server.commits(REPO)[-1].files) == {".gitattributes", "config.json", "modeling_toy.py",
                                                   "helpers_toy.py", MANIFEST_NAME}
    assert [e["path"] for e in json.loads(server.read(REPO, MANIFEST_NAME))["files"]] == ["config.json"]
    assert {p.name for p in Path(hub.pull(URL)).iterdir()} == {"config.json", MANIFEST_NAME}


def test_the_safetensors_library_checks_pulled_weights(server, tmp_path):
    """A repository written by something else: its manifest matches, but the header claims a [100, 100] F32 tensor
    (40,000 bytes) in 64 bytes. The safetensors library refuses it; so does the pull."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from bytezoo.hub.manifest import FileEntry, Manifest

    header = json.dumps({"w": {"dtype": "F32", "shape": [100, 100], "data_offsets": [0, 64]}}).encode()
    weights = len(header).to_bytes(8, "little") + header + bytes(64)
    manifest = Manifest.for_files([FileEntry("model.safetensors", sha256(weights), len(weights))], created_by="else")
    api = HfApi(endpoint=server.endpoint, token=TOKEN)
    api.create_repo(REPO)
    api.create_commit(REPO, [CommitOperationAdd("model.safetensors", weights),
                             CommitOperationAdd(MANIFEST_NAME, manifest.to_json())], commit_message="by hand")
    with pytest.raises(UnsafeFileError, match="refusing 'model.safetensors': not a valid safetensors file"):
        hub.pull(URL)


def test_refusals_name_the_repository(server, checkpoint, monkeypatch):
    with pytest.raises(NotFoundError, match="no model repository hf://someone/mlstm-tiny"):
        hub.pull(URL)
    hub.push(checkpoint, URL, tag="v1")
    with pytest.raises(NotFoundError, match="has no tag, branch or commit 'v9'"):
        hub.pull(f"{URL}@v9")
    with pytest.raises(HubError, match="not a Hugging Face model repository: expected hf://USER/NAME"):
        hub.push(checkpoint, f"{URL}/sub/folder")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubError, match=r"not allowed \(401.*set HF_TOKEN"):
        hub.push(checkpoint, "hf://someone/other")

    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=server.endpoint, token=TOKEN)
    api.create_repo("someone/plain")
    api.create_commit("someone/plain", [CommitOperationAdd("config.json", b"{}")], commit_message="not bytezoo")
    with pytest.raises(NotFoundError, match=f"has no {MANIFEST_NAME}: it was not pushed with `bytezoo hub push`"):
        hub.pull("hf://someone/plain")


@pytest.mark.slow  # starts a Python process that imports torch and transformers (about 6 s of the test's 10-25 s)
def test_transformers_and_bytezoo_load_the_pushed_model(server, tmp_path):
    """The users' two ways in: bytezoo with an hf:// URL, and transformers alone (bytezoo not importable) with the
    repository id, a tag and trust_remote_code."""
    import bytezoo
    import torch

    model = bytezoo.create_model("mlstm-256", **bytezoo.get_model_info("mlstm-256").test_overrides).eval()
    model.save_pretrained(tmp_path / "checkpoint")
    bytezoo.ByteTokenizer().save_pretrained(tmp_path / "checkpoint")
    hub.push(tmp_path / "checkpoint", URL, tag="v1")
    committed = set(server.commits(REPO)[-1].files)
    assert {"model.safetensors", "config.json", "tokenizer_config.json", "modeling_mlstm.py"} <= committed

    loaded = bytezoo.from_pretrained(f"{URL}@v1")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    ids = torch.tensor([list("héllo".encode())])
    with torch.no_grad():
        torch.save(model(ids).logits, tmp_path / "expected.pt")

    script = textwrap.dedent(f"""
        import sys
        sys.modules["bytezoo"] = None  # transformers installed, bytezoo not
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({REPO!r}, revision="v1", trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained({REPO!r}, revision="v1", trust_remote_code=True)
        ids = tokenizer("héllo", return_tensors="pt").input_ids
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, torch.load({str(tmp_path / "expected.pt")!r}))
        print("loaded", type(model).__module__)
    """)
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_DISABLE_XET="1", HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded transformers_modules" in result.stdout
