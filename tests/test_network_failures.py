"""The network fails politely (issue 25, item 4): against servers on 127.0.0.1 started inside the test, HTTP 401, 403,
404 and 500, a refused connection and a server trickling bytes each end, in bounded time, in one line naming the
redacted URL, the status and what to do (exit 2); the timeouts have defaults and the environment overrides them.

On main each of these was an aiohttp traceback, and a trickling server held ``hub pull`` for ever.
"""
from __future__ import annotations

import socket
import threading

import pytest

from bytezoo.cli import main as bytezoo_main
from hostile_server import HostileServer


@pytest.fixture
def server(tmp_path):
    (tmp_path / "corpus.txt").write_text("some text\n" * 100)
    with HostileServer(tmp_path) as running:
        yield running


def one_line(capsys) -> str:
    """The one error line (a download's progress bar may come before it on stderr), and no traceback."""
    printed = capsys.readouterr().err.strip()
    assert "Traceback" not in printed and printed.count("error:") == 1, printed
    error = printed.splitlines()[-1]
    assert error.count("error:") == 1, printed
    return error


COMMANDS = {
    "hub pull": lambda url, tmp: ["hub", "pull", f"{url}/repo"],
    "hub ls": lambda url, tmp: ["hub", "ls", f"{url}/repo"],
    "data pack": lambda url, tmp: ["data", "pack", f"{url}/corpus.txt", "--output", str(tmp / "p"), "--no-progress"],
    "data download": lambda url, tmp: ["data", "download", "sst2", "--url", f"{url}/SST-2.zip", "--dir", str(tmp / "d")],
}
STATUSES = {401: "not allowed: check the credentials", 403: "not allowed: check the credentials",
            404: "not found", 500: "the server failed: try again later"}


@pytest.mark.parametrize("status", sorted(STATUSES))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_http_status_is_one_line_with_the_url_the_status_and_what_to_do(server, tmp_path, capsys, command, status):
    base = f"http://reader:pw-{status}@{server.url.split('://')[1]}/status/{status}"
    assert bytezoo_main(COMMANDS[command](base, tmp_path)) == 2
    error = one_line(capsys)
    if command.startswith("hub") and status == 404:  # a missing tag or listing: a missing repository, told as such
        assert "no bytezoo hub repository" in error
    elif command == "data pack" and status == 404:  # a missing source, told as for a local path
        assert "no data at" in error and "no such file" in error
    else:
        assert f"HTTP {status}" in error and STATUSES[status] in error, error
    assert f"http://***@{server.url.split('://')[1]}/status/{status}/" in error and f"pw-{status}" not in error


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_refused_connection_is_one_line(tmp_path, capsys, command):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert bytezoo_main(COMMANDS[command](f"http://127.0.0.1:{port}", tmp_path)) == 2
    error = one_line(capsys)
    assert "cannot connect" in error and "check the URL and that the server is up" in error, error


@pytest.mark.parametrize("command", ["hub pull", "data pack", "data download"])
def test_a_trickling_server_ends_in_the_idle_timeout(server, tmp_path, capsys, monkeypatch, command):
    """One byte every 50 ms: never idle for long, never done. A whole idle period (0.5 s here) that brings less than
    1 KiB ends the read. Main read on for ever; the command runs in a thread so that this test cannot hang: after
    60 s the server stops trickling and the thread ends either way."""
    monkeypatch.setenv("BYTEZOO_IDLE_TIMEOUT", "0.5")
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("code", bytezoo_main(
        COMMANDS[command](f"{server.url}/trickle", tmp_path))), daemon=True)
    worker.start()
    worker.join(timeout=60)
    ended = not worker.is_alive()
    server.stopping.set()  # unblock a command that did not end (main), then let it finish
    worker.join(timeout=30)
    assert ended, f"{command} was still reading from the trickling server after 60 s"
    assert outcome["code"] == 2
    error = one_line(capsys)
    assert "less than 1,024 bytes in 0.5 s (BYTEZOO_IDLE_TIMEOUT)" in error and f"{server.url}/trickle/" in error


def test_the_timeouts_have_defaults_and_the_environment_overrides_them(monkeypatch):
    import aiohttp

    from bytezoo.errors import InvalidArgumentError
    from bytezoo.untrusted import network

    assert network.timeouts() == (30.0, 60.0)
    monkeypatch.setenv("BYTEZOO_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("BYTEZOO_IDLE_TIMEOUT", "7")
    options = network.storage_options("https://example.com/x")
    assert options["client_kwargs"]["timeout"] == aiohttp.ClientTimeout(total=None, sock_connect=2.5, sock_read=7.0)
    assert network.storage_options("s3://bucket/x")["config_kwargs"] == {"connect_timeout": 2.5, "read_timeout": 7.0}
    mine = aiohttp.ClientTimeout(total=1)
    assert network.storage_options("http://h/x", {"client_kwargs": {"timeout": mine}})["client_kwargs"]["timeout"] is mine
    assert network.storage_options("simplecache::s3://b/x")["s3"]["config_kwargs"]["read_timeout"] == 7.0
    assert network.storage_options("/local/path") == {}
    monkeypatch.setenv("BYTEZOO_IDLE_TIMEOUT", "soon")
    with pytest.raises(InvalidArgumentError, match="BYTEZOO_IDLE_TIMEOUT='soon': expected a positive number"):
        network.timeouts()
