"""Test helper shared by the registry-parametrised test files: which presets stand for the model families."""
from __future__ import annotations

import bytezoo


def one_preset_per_family() -> list[str]:
    """The first registered name (alphabetically) of each config class: one model per family."""
    first = {}
    for name in bytezoo.list_models():
        first.setdefault(bytezoo.get_model_info(name).resolved_config_class(), name)
    return sorted(first.values())
