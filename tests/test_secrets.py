"""Secrets stay secret (issue 25, item 2): a data URL carrying credentials (``http://user:SECRET@host/...``,
``?token=SECRET``, ``s3://KEY:SECRET@bucket``) is used to read the data, and appears nowhere bytezoo writes (run.json,
summary.json, training_summary.json, the corpus index.json, report.json, the model card, metrics, checkpoints, the
hub and its cache) or prints (every message of the failing cases, one line each).

On main the URL was written verbatim into every one of those files and printed in the errors (tracebacks included).
"""
from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest

import bytezoo.hub as hub
from bytezoo.cli import main as bytezoo_main
from finetune_task import common, make_task
from hostile_server import HostileServer

TINY_PRETRAIN = ["--model", "mlstm-256", "--model-config", "hidden_size=8", "--model-config", "embedding_size=4",
                 "--batch-size", "2", "--seq-len", "8", "--max-steps", "2", "--eval-every", "1", "--no-progress"]


def files_holding(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` (recursively) whose bytes hold ``secret``, in any of the spellings a writer uses."""
    needles = [secret.encode(), secret.encode("utf-16-le")]
    return [str(path) for path in sorted(root.rglob("*")) if path.is_file()
            and any(needle in path.read_bytes() for needle in needles)]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """The tiny fine-tuning task (an LM checkpoint, train/dev/test CSVs) and a text corpus, served over HTTP."""
    root = tmp_path_factory.mktemp("served")
    built = make_task(root)
    (root / "corpus.txt").write_text("a film worth seeing, and a plot worth telling\n" * 200)
    with HostileServer(root) as server:
        yield built, server


def secret_url(server: HostileServer, path: str, secret: str, query: bool = True) -> str:
    return f"http://alice:{secret}@{server.url.split('://')[1]}/{path}" + (f"?token={secret}&sig=x" if query else "")


def test_a_run_a_push_a_transfer_and_a_fine_tune_write_no_credential(task, tmp_path, capsys):
    built, server = task
    secret = f"S{secrets.token_hex(12)}"
    out = tmp_path / "out"

    assert bytezoo_main(["pretrain", *TINY_PRETRAIN, "--data", secret_url(server, "corpus.txt", secret, query=False),
                         "--val-data", secret_url(server, "corpus.txt", secret, query=False),
                         "--output", str(out / "pretrain")]) == 0
    basic = "Basic " + base64.b64encode(f"alice:{secret}".encode()).decode()
    assert any(authorization == basic for _, authorization in server.requests)  # the credentials were used
    assert bytezoo_main(["hub", "push", str(out / "pretrain" / "model"), str(out / "hub" / "m"), "--tag", "v1"]) == 0
    assert bytezoo_main(["hub", "pull", f"{out / 'hub' / 'm'}@v1", str(out / "pulled")]) == 0
    assert bytezoo_main(["transfer", "--model", str(out / "pretrain" / "model"), "--train",
                         secret_url(server, "train.csv", secret), "--test", secret_url(server, "test.csv", secret),
                         "--text-col", "sentence", "--label-col", "label", "--output", str(out / "transfer"),
                         "--baseline", "none", "--curve-points", "0", "--heatmap-texts", "1", "--C", "1",
                         "--no-progress"]) == 0
    finetune = [secret_url(server, Path(arg).name, secret) if str(arg).endswith(".csv") else arg
                for arg in common(built, out / "finetune", "--max-steps", "2", "--test", str(built["test"]))]
    assert bytezoo_main(finetune) == 0
    printed = capsys.readouterr()

    assert (out / "pretrain" / "run.json").is_file() and (out / "transfer" / "report.json").is_file()
    assert (out / "pretrain" / "corpus" / "index.json").is_file() and (out / "finetune" / "summary.json").is_file()
    cache = Path(os.environ["BYTEZOO_CACHE"])
    assert files_holding(out, secret) == [] and files_holding(cache, secret) == []
    assert secret not in printed.out and secret not in printed.err
    assert "alice:***" not in (out / "pretrain" / "run.json").read_text()  # the user part goes too
    host = server.url.split("://")[1]
    assert f'"http://***@{host}/corpus.txt"' in (out / "pretrain" / "run.json").read_text()
    assert f'"http://***@{host}/train.csv?***"' in (out / "transfer" / "report.json").read_text()


def failing_commands(server: HostileServer, secret: str, tmp_path: Path, model: Path) -> dict[str, list[str]]:
    missing = secret_url(server, "missing.txt", secret)
    forbidden = secret_url(server, "status/403/corpus.txt", secret)
    return {
        "data pack, 404": ["data", "pack", missing, "--output", str(tmp_path / "packed"), "--no-progress"],
        "data pack, 403": ["data", "pack", forbidden, "--output", str(tmp_path / "packed"), "--no-progress"],
        "pretrain, 500": ["pretrain", *TINY_PRETRAIN, "--data", secret_url(server, "status/500/c.txt", secret),
                          "--output", str(tmp_path / "p")],
        "transfer, 404": ["transfer", "--model", str(model), "--train", secret_url(server, "missing.csv", secret),
                          "--output", str(tmp_path / "t"), "--no-progress"],
        "data download, 403": ["data", "download", "sst2", "--url", forbidden, "--dir", str(tmp_path / "d")],
        "hub pull, http 401": ["hub", "pull", secret_url(server, "status/401/repo", secret)],
        "hub pull, s3 reference": ["hub", "pull", f"s3://AKIAEXAMPLE:{secret}@bucket/repo@v1"],
        "hub pull, hf id": ["hub", "pull", f"hf://alice:{secret}@someone/model"],
        "hub push, s3 reference": ["hub", "push", str(tmp_path), f"s3://AKIAEXAMPLE:{secret}@bucket/repo"],
    }


@pytest.mark.parametrize("case", ["data pack, 404", "data pack, 403", "pretrain, 500", "transfer, 404",
                                  "data download, 403", "hub pull, http 401", "hub pull, s3 reference",
                                  "hub pull, hf id", "hub push, s3 reference"])
def test_every_message_of_the_failing_cases_is_one_redacted_line(task, tmp_path, case, capsys, monkeypatch):
    built, server = task
    secret = f"S{secrets.token_hex(12)}"
    (tmp_path / "config.json").write_text("{}")
    # S3 requests go to the test server (which answers them as the wrong kind of server), never to the internet.
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    import fsspec.config

    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": server.url})
    code = bytezoo_main(failing_commands(server, secret, tmp_path, built["lm"])[case])
    printed = capsys.readouterr()
    error = printed.err.strip()
    assert code == 2, error
    assert len(error.splitlines()) == 1 and error.count("error:") == 1, error
    assert secret not in error and secret not in printed.out
    assert "***" in error or "hf://" in case or "404" in case, error  # the URL is named, redacted
