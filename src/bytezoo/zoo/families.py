"""The model families: every sub-package of ``bytezoo.zoo`` that holds a ``configuration_<x>.py`` and a
``modeling_<x>.py``, beside its ``presets.py`` (the named sizes it registers, as timm keeps ``@register_model`` in each
model's file). Found on disk, so adding a family takes no edit anywhere else: the Auto classes
(:mod:`bytezoo.zoo.auto`), the registry (:mod:`bytezoo.zoo.registry`) and the generated copies
(:mod:`bytezoo.zoo.copies`) all ask here. Looking imports nothing: ``import bytezoo`` stays free of torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

ZOO = Path(__file__).resolve().parent
PACKAGE = __name__.rsplit(".", 1)[0]  # bytezoo.zoo


@dataclass(frozen=True)
class Family:
    """One model family's folder and the modules in it."""

    name: str  # the folder's name: "mlstm", "lstm", ...
    folder: Path
    configuration_module: str  # e.g. "bytezoo.zoo.mlstm.configuration_mlstm"
    modeling_module: str
    presets_module: str | None  # None where the family registers no preset


def families() -> list[Family]:
    """Every family, sorted by folder name."""
    found = []
    for folder in sorted(p for p in ZOO.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        configuration = sorted(folder.glob("configuration_*.py"))
        modeling = sorted(folder.glob("modeling_*.py"))
        if not (configuration and modeling):
            continue
        prefix = f"{PACKAGE}.{folder.name}"
        presets = f"{prefix}.presets" if (folder / "presets.py").is_file() else None
        found.append(Family(folder.name, folder, f"{prefix}.{configuration[0].stem}", f"{prefix}.{modeling[0].stem}",
                            presets))
    return found


def import_presets() -> None:
    """Imports every family's ``presets.py``, whose ``@register_model`` factories fill the registry (importing a module
    twice is a no-op, so this is cheap after the first call)."""
    for family in families():
        if family.presets_module is not None:
            importlib.import_module(family.presets_module)


__all__ = ["Family", "families", "import_presets"]
