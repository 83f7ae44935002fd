"""Checks of the config values a user passes by hand (``create_model(name, **overrides)``, ``--model-config KEY=VALUE``,
``from_pretrained(dir, **kwargs)``): an unknown key or a value of the wrong type is an error that names the key, the
nearest valid key and the expected type, never a silently ignored typo.

Configs themselves stay permissive, as transformers wants: ``config.json`` files legitimately carry keys that a
class no longer declares, so the check runs where a person typed the values, not where a file is read.
"""
from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from typing import Any

from bytezoo.errors import ByteZooError


class ConfigError(ByteZooError, ValueError):
    """A config override with an unknown key or a value of the wrong type."""


def declared_fields(config_class: type) -> dict[str, Any]:
    """``{field name: type}`` of a config dataclass, its transformers base's fields included."""
    hints: dict[str, Any] = {}
    for cls in reversed(config_class.__mro__):  # per class, so one unresolvable base annotation spoils nothing else
        namespace = vars(sys.modules.get(cls.__module__, object()))
        for name, annotation in vars(cls).get("__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
            except Exception:  # a name that only type checkers see: check no type for this field
                hints[name] = Any
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_class) if not f.name.startswith("_")}


def _own_fields(config_class: type) -> list[str]:
    """The fields the model's own config declares (not transformers' base ones), in order."""
    base_names = {f.name for cls in config_class.__mro__[1:] if dataclasses.is_dataclass(cls)
                  for f in dataclasses.fields(cls)}
    return [f.name for f in dataclasses.fields(config_class) if f.name not in base_names and not f.name.startswith("_")]


def _matches(value: Any, expected: Any) -> bool:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is Any or expected is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if expected is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict or expected is dict:
        return isinstance(value, dict)
    return True  # a type this check does not model: the config's own validation decides


def _type_name(expected: Any) -> str:
    text = str(expected) if typing.get_origin(expected) else getattr(expected, "__name__", str(expected))
    return text.replace("typing.", "").replace("NoneType", "None")


def unknown_key_error(config_class: type, key: str, where: str) -> ConfigError:
    valid = list(declared_fields(config_class))
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    own = ", ".join(_own_fields(config_class))
    return ConfigError(f"{where}: unknown key {key!r} for {config_class.__name__}; {hint}"
                       f"valid keys: {own} (and transformers' PreTrainedConfig keys)")


def check_config_overrides(config_class: type, overrides: dict[str, Any], where: str = "model config") -> None:
    """Raises :class:`ConfigError` for the first key of ``overrides`` that ``config_class`` does not declare, or whose
    value does not have the declared type."""
    fields = declared_fields(config_class)
    for key, value in overrides.items():
        if key not in fields:
            raise unknown_key_error(config_class, key, where)
        if not _matches(value, fields[key]):
            raise ConfigError(f"{where}: {key!r} of {config_class.__name__} expects {_type_name(fields[key])}; "
                              f"got {value!r} ({type(value).__name__})")


__all__ = ["ConfigError", "check_config_overrides", "declared_fields", "unknown_key_error"]
