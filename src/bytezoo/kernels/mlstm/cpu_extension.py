"""Builds the compiled CPU time loops (``csrc/mlstm_cpu.cpp``) on first use and loads them from a cache afterwards.

:func:`cpu_ops` returns ``torch.ops.bytezoo_mlstm_cpu`` (operators ``forward`` and ``backward``) or ``None`` when the
extension cannot be had here: no C++ compiler, a failed build, or ``BYTEZOO_CPU_EXTENSION=0``. ``None`` is not an
error: ``kernel="fused"`` then runs the same algorithm as per-step PyTorch ops
(:mod:`bytezoo.kernels.mlstm.fused_torch`, training 1.3-1.6x slower on CPU; see benchmarks/results/kernels-notes.md).
The engine that calls these operators is :mod:`bytezoo.kernels.mlstm.fused_cpu`. The reason is kept in
:func:`unavailable_reason`, and one warning says it unless the user turned the extension off.

The build goes through :func:`torch.utils.cpp_extension.load` (ninja, torch's flags and ABI) in a private temporary
folder; the shared library is then moved atomically into
``$TORCH_EXTENSIONS_DIR/bytezoo/`` (default ``~/.cache/torch_extensions/bytezoo/``) under a name that hashes the
source, the compiler flags, the torch version and this CPU's instruction sets, so a changed source or a home folder
shared by different machines never loads a stale or foreign build. Concurrent first uses (test workers, ranks of a
distributed job) wait on an ``flock`` instead of all compiling; the kernel releases that lock when a process dies, so
a build killed halfway never blocks the next one.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "mlstm_cpu.cpp"
ENV_SWITCH = "BYTEZOO_CPU_EXTENSION"  # "0" turns the compiled loops off
# -O3 -march=native (+ -mprefer-vector-width=512 on x86-64): the pointwise passes vectorised with this CPU's widest
# vectors (AVX-512 here; GCC prefers 256-bit ones otherwise). No -ffast-math: the loops vectorise without it, and it
# would let the compiler assume no NaN or infinity, hiding a diverging run's NaNs.
# -fopenmp (Linux, where torch's CPU builds use libgomp): at::parallel_for in the loops is an OpenMP region only when
# the including file is compiled with OpenMP; without it every "parallel" pass ran on one thread. At run time the
# library's libgomp.so.1 resolves to the copy torch already loaded (same soname), so there is one thread pool.
OPENMP_FLAGS = ("-fopenmp",) if sys.platform.startswith("linux") else ()
CFLAGS = ("-O3", "-march=native", "-std=c++17") + (
    ("-mprefer-vector-width=512",) if platform.machine().lower() in ("x86_64", "amd64") else ()
) + OPENMP_FLAGS
LOCK_TIMEOUT_S = 600.0

_state: dict[str, object] = {}
_state_lock = threading.Lock()  # one build or load per process, whichever thread asks first


def cpu_ops():
    """The compiled operators (``torch.ops.bytezoo_mlstm_cpu``), building them on first use; ``None`` if unavailable."""
    if "ops" in _state:
        return _state["ops"]
    with _state_lock:
        if "ops" not in _state:
            ops, reason = _load()
            _state["reason"], _state["ops"] = reason, ops
            if ops is None and os.environ.get(ENV_SWITCH, "1") != "0":
                warnings.warn(
                    f"bytezoo: the compiled CPU mLSTM loops are unavailable ({reason}); the fused kernel runs its "
                    f"plain-PyTorch loops instead (slower). Set {ENV_SWITCH}=0 to silence this.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _state["ops"]


def unavailable_reason() -> str | None:
    """Why :func:`cpu_ops` returned ``None`` (after a call to it), else ``None``."""
    return _state.get("reason")  # type: ignore[return-value]


def cache_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "torch_extensions")
    return Path(root) / "bytezoo"


def build_key() -> str:
    """Hash of everything the compiled library depends on."""
    parts = [
        SOURCE.read_bytes(),
        " ".join(CFLAGS).encode(),
        torch.__version__.encode(),
        sys.version.split()[0].encode(),
        platform.machine().encode(),
        _cpu_flags().encode(),
        (os.environ.get("CXX") or "c++").encode(),
    ]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def _cpu_flags() -> str:
    """This CPU's instruction-set flags (the build uses -march=native)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    return platform.processor()


def _load():
    """(ops, None) or (None, reason)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None, f"{ENV_SWITCH}=0"
    if hasattr(torch.ops, "bytezoo_mlstm_cpu") and hasattr(torch.ops.bytezoo_mlstm_cpu, "forward"):
        return torch.ops.bytezoo_mlstm_cpu, None  # loaded already (e.g. by a test that built it explicitly)
    if sys.platform == "win32":
        return None, "the compiled loops are built on Linux and macOS only"
    compiler = os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None:
        return None, f"no C++ compiler ({compiler!r} is not on PATH)"
    key = build_key()
    library = cache_dir() / f"bytezoo_mlstm_cpu_{key}.so"
    try:
        if not library.exists():
            library.parent.mkdir(parents=True, exist_ok=True)
            with _exclusive(library.with_suffix(".lock")):
                if not library.exists():  # another process may have built it while we waited
                    print(f"bytezoo: compiling the CPU mLSTM kernel (about 12 s, once; cached in {library.parent})",
                          file=sys.stderr, flush=True)
                    _build_into(library, key)
                    return torch.ops.bytezoo_mlstm_cpu, None  # the build also loaded it
        torch.ops.load_library(str(library))
        return torch.ops.bytezoo_mlstm_cpu, None
    except Exception as error:  # a failed build or load must never stop the model: fall back
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"build or load failed: {first_line}"


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An advisory lock held while building; released by the kernel if this process dies."""
    import fcntl

    with open(lock_path, "a+") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {LOCK_TIMEOUT_S:.0f} s for another process's build ({lock_path})")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_into(library: Path, key: str) -> None:
    """Compiles (and loads) the extension in a private folder, then moves the library to ``library`` atomically."""
    from torch.utils import cpp_extension

    _put_pip_ninja_on_path()
    name = f"bytezoo_mlstm_cpu_{key}"
    with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=library.parent) as build_dir:
        built = cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=list(CFLAGS),
            extra_ldflags=list(OPENMP_FLAGS),
            build_directory=build_dir,
            is_python_module=False,
            verbose=False,
        )
        staged = library.with_name(f".{library.name}.{os.getpid()}.tmp")
        shutil.copyfile(built, staged)
        os.replace(staged, library)


def _put_pip_ninja_on_path() -> None:
    """torch's build runs ``ninja`` from PATH; the pip package's binary is not on it unless the venv is activated."""
    try:
        import ninja  # the PyPI package, a dependency of bytezoo
    except ImportError:
        return
    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
