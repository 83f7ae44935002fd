"""What every benchmark records about the machine it ran on (figures from one CPU model do not hold on another).

Every ``bench_*.py`` puts :func:`machine` in its JSON under ``"machine"``: the CPU model, the instruction-set flags
that decide which kernels are fast (AVX-512 BF16, AMX: oneDNN's bf16 paths differ on CPUs with and without them),
cores, threads, load average, torch's version and parallel backend.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

# The data folder beside the checkout (../shared/data), or BYTEZOO_SHARED_DATA: where the tests look too.
SHARED_DATA = Path(os.environ.get("BYTEZOO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# The flags that change which CPU kernels win (the rest of /proc/cpuinfo's list is kept in "flags_all").
KEY_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8",
             "avx_vnni", "fma")


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name, e.g. "Intel(R) Xeon(R) Processor" or "AMD EPYC 9B14"."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """This CPU's instruction-set flags (x86 ``flags``, Arm ``Features``)."""
    return (_cpuinfo_field("flags") or _cpuinfo_field("Features") or "").split()


def machine(**extra) -> dict:
    """The CPU model, its kernel-relevant flags, cores, load average and torch's threads, for a benchmark's JSON."""
    flags = set(cpu_flags())
    info = {
        "cpu_model": cpu_model(),
        "cpu_flags": {flag: flag in flags for flag in KEY_FLAGS},
        "cpu_vendor": _cpuinfo_field("vendor_id"),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    info.update(extra)
    return info
