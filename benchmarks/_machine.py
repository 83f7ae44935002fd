"""What every benchmark records about the machine it ran on (figures from one CPU model do not hold on another)."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name, e.g. "Intel(R) Xeon(R) Processor" or "AMD EPYC 9B14"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
