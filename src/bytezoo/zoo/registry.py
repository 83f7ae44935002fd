"""The model zoo: named presets behind ``create_model``, in the spirit of timm's registry.

A preset is a factory decorated with :func:`register_model`; its keyword arguments override the preset's config.
Metadata about released weights (source, license, paper) is kept apart from the architecture, in :class:`ModelInfo`.

>>> import bytezoo
>>> bytezoo.list_models("mlstm-*")
['mlstm-1024', 'mlstm-256', 'mlstm-4096', 'mlstm-8192']
>>> model = bytezoo.create_model("mlstm-256", num_layers=2)

Adding an architecture takes one decorator; the zoo's tests (parametrised over ``list_models()``) then cover it::

    @bytezoo.register_model(test_overrides={"hidden_size": 16})
    def my_mlstm_512(**overrides):
        return MLSTMForCausalLM(MLSTMConfig(**{"hidden_size": 512, **overrides}))
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
import typing
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # imported for real only when a model is built: listing presets must not import torch
    from transformers import PreTrainedModel

ModelFactory = Callable[..., "PreTrainedModel"]


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a preset besides its architecture.

    Args:
        name: the registry name, e.g. ``"mlstm-4096"``.
        factory: builds the model; keyword arguments override config fields.
        description: one line for ``bytezoo models``.
        paper: where the architecture/weights were published.
        source: where released weights live (a URL or hub reference), if any.
        license: the license of those weights.
        test_overrides: config overrides that make a tiny instance for the test suite (big presets would not fit the
            suite's time budget); must keep the architecture's structure.
        config_class: the config the factory's keyword arguments override, for checking them; by default read from
            the factory's return annotation.
    """

    name: str
    factory: ModelFactory
    description: str = ""
    paper: str | None = None
    source: str | None = None
    license: str | None = None
    test_overrides: dict[str, Any] = field(default_factory=dict)
    config_class: type | None = None

    def resolved_config_class(self) -> type | None:
        """The config class whose fields the factory's keyword arguments override: given at registration, or read
        from the factory's return annotation (``-> MLSTMForCausalLM`` gives ``MLSTMConfig``); None if unknown."""
        if self.config_class is not None:
            return self.config_class
        try:
            model_class = typing.get_type_hints(self.factory).get("return")
        except Exception:  # an annotation that does not resolve: no check rather than a wrong one
            return None
        return getattr(model_class, "config_class", None)


_REGISTRY: dict[str, ModelInfo] = {}
_PRESETS_LOADING = False


def _registry() -> dict[str, ModelInfo]:
    """The registry, with every family's presets (each family folder's ``presets.py``, found by
    :mod:`bytezoo.zoo.families`) registered on first use: they import the model classes, so listing waits
    until asked."""
    global _PRESETS_LOADING
    if not _PRESETS_LOADING:
        _PRESETS_LOADING = True
        from .families import import_presets

        import_presets()
    return _REGISTRY


def register_model(
    factory: ModelFactory | None = None,
    *,
    name: str | None = None,
    description: str = "",
    paper: str | None = None,
    source: str | None = None,
    license: str | None = None,
    test_overrides: dict[str, Any] | None = None,
    config_class: type | None = None,
):
    """Register a model factory under ``name`` (default: the function name with ``_`` → ``-``).

    Usable bare (``@register_model``) or with metadata (``@register_model(paper=...)``). Registering a name twice is an
    error, so a typo cannot silently replace a preset.
    """

    def decorator(fn: ModelFactory) -> ModelFactory:
        model_name = name or fn.__name__.replace("_", "-")
        if model_name in _registry():
            raise ValueError(f"a model named {model_name!r} is already registered")
        _REGISTRY[model_name] = ModelInfo(
            name=model_name,
            factory=fn,
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            paper=paper,
            source=source,
            license=license,
            test_overrides=dict(test_overrides or {}),
            config_class=config_class,
        )
        return fn

    return decorator(factory) if factory is not None else decorator


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (``"mlstm-*"``), sorted."""
    return sorted(n for n in _registry() if fnmatch.fnmatchcase(n, pattern))


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered name; a clear error (with close matches) otherwise."""
    if name not in _registry():
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; registered: {', '.join(list_models())}"
        raise KeyError(f"no model named {name!r} in the zoo{hint}")
    return _REGISTRY[name]


def is_model(name: str) -> bool:
    return name in _registry()


def create_model(name: str, **config_overrides: Any) -> "PreTrainedModel":
    """A randomly initialised model of the preset ``name``, with config fields overridden by keyword.

    >>> model = create_model("mlstm-1024", num_layers=2, kernel="reference")

    An unknown key or a value of the wrong type raises :class:`~bytezoo.zoo.configuration_utils.ConfigError` naming
    it, before anything is built.
    """
    info = get_model_info(name)
    config_class = info.resolved_config_class()
    if config_class is not None:
        from .configuration_utils import check_config_overrides

        check_config_overrides(config_class, config_overrides, where=f"create_model({name!r})")
    return info.factory(**config_overrides)


__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "get_model_info", "is_model"]
