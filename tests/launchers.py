"""Launching process groups from tests: the launchers next to this interpreter, a free port, and a runner that
leaves no process behind. Shared by the pretraining and fine-tuning tests that start 2-process runs."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

TORCHRUN = Path(sys.executable).with_name("torchrun")


def run_process_group(command: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Runs a launcher; past ``timeout`` the launcher and every process it started are killed (the workers of
    torchrun's agent lead sessions of their own, so a process group is not enough), so no test leaves a process
    behind."""
    import psutil

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = [process.pid]
        try:
            tree += [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = process.communicate()
        return subprocess.CompletedProcess(command, -1, out, f"timed out after {timeout} s: {err}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ACCELERATE = Path(sys.executable).with_name("accelerate")
