"""Start-up time of the command line and of ``import bytezoo``, against importing torch and transformers in the same
run. Targets: ``bytezoo --help`` and ``bytezoo SUBCOMMAND --help`` under 0.5 s; ``import bytezoo`` no slower than
``import torch, transformers``; and ``import bytezoo`` followed by the Auto classes no slower than the Auto classes
alone plus a little (the registration itself).

Each command is a fresh interpreter, timed by wall clock; the commands run interleaved, ``--repeats`` rounds, and
each is reported by its median (a shared machine is noisy: the load average at the end is recorded, with the CPU
model). Writes benchmarks/results/startup.json.

    .venv/bin/python benchmarks/bench_startup.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_model, machine# noqa: E402  (benchmarks/ is the script's folder)

RESULTS = Path(__file__).parent / "results"
PYTHON = sys.executable
BYTEZOO = str(Path(PYTHON).with_name("bytezoo"))

AUTO = "from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer"
COMMANDS = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "import torch": [PYTHON, "-c", "import torch"],
    "import torch, transformers": [PYTHON, "-c", "import torch, transformers"],
    "import torch + Auto classes": [PYTHON, "-c", f"import torch; {AUTO}"],
    # what any use of a model loads anyway (transformers' modeling_utils and generation): the fair baseline for the
    # next line, where registering bytezoo's models with AutoModel imports their classes
    "import torch + Auto classes + PreTrainedModel": [PYTHON, "-c", f"import torch; {AUTO}; from transformers import PreTrainedModel, GenerationMixin"],
    "import bytezoo": [PYTHON, "-c", "import bytezoo"],
    "import bytezoo + Auto classes": [PYTHON, "-c", f"import bytezoo; {AUTO}; import transformers.models.auto"],
    "import bytezoo + create_model": [PYTHON, "-c", "import bytezoo; bytezoo.create_model('mlstm-256')"],
    "bytezoo --help": [BYTEZOO, "--help"],
    "python -m bytezoo --help": [PYTHON, "-m", "bytezoo", "--help"],
    "bytezoo pretrain --help": [BYTEZOO, "pretrain", "--help"],
    "bytezoo transfer --help": [BYTEZOO, "transfer", "--help"],
    "bytezoo hub --help": [BYTEZOO, "hub", "--help"],
}




def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "accelerate", "bytezoo")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for name, command in COMMANDS.items():  # warm the file cache and the compiled-bytecode cache once
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians["import torch, transformers"]
    result = {
        "benchmark": "startup",
        "machine": machine(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "versions": versions(),
        "repeats": args.repeats,
        "load_average_at_end": os.getloadavg(),
        "median_seconds": {name: round(value, 3) for name, value in medians.items()},
        "all_seconds": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "ratio_to_import_torch_transformers": {name: round(value / baseline, 3) for name, value in medians.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, medians))
    print(f"{result['cpu']}; Python {result['python']}; {result['versions']}")
    for name, value in medians.items():
        print(f"{name:<{width}}  {value:6.3f} s  ({value / baseline:4.2f}x import torch, transformers)")


if __name__ == "__main__":
    main()
