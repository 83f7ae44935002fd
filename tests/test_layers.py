"""The house keeps its shape: ``lint-imports`` (import-linter) checks the contracts in pyproject.toml — imports only
point down the layers, the stages on one layer do not import one another, and no package's modules import each other
in a circle, at any depth."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports() -> str:
    executable = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.skip("import-linter is not installed (it comes with the test extra)")
    return executable


def test_the_layer_contract_holds():
    result = subprocess.run([lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": str(Path(sys.executable).parent)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_contract_lists_every_package(tmp_path):
    """A new top-level package or module must be placed in a layer, or the contract would not check it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    placed = {name.strip() for layer in layers for name in layer.split("#")[0].split("|")}
    package = ROOT / "src" / "bytezoo"
    found = {f"bytezoo.{path.stem if path.is_file() else path.name}" for path in package.iterdir()
             if (path.suffix == ".py" and not path.stem.startswith("_")) or (path / "__init__.py").is_file()}
    assert found - placed == set(), f"place these in a layer of pyproject.toml's import contract: {found - placed}"
