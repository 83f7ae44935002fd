"""Registration with transformers' Auto classes, so that ``AutoModelForCausalLM.from_pretrained(dir)`` works after
``import bytezoo``, and saved checkpoints carry their code for ``trust_remote_code=True`` where bytezoo is absent.

``import bytezoo`` imports neither torch nor transformers (the command line starts at once). Instead it asks to be
told when transformers loads its Auto modules, and registers there: each registration runs right after its Auto
module has finished loading (at once where it already has), so nothing is registered into a half-loaded module.
The three parts are separate because transformers loads ``configuration_auto`` in the middle of loading
``modeling_utils``, when a model class cannot be imported yet but a config class can.
"""
from __future__ import annotations

import os

from ..untrusted import jsonio
from .modeling_utils import CheckpointError


def family_modules() -> list[tuple[str, str]]:
    """``(configuration module, modeling module)`` of every model family (see :mod:`bytezoo.zoo.families`); nothing is
    imported (``import bytezoo`` stays free of torch)."""
    from .families import families

    return [(family.configuration_module, family.modeling_module) for family in families()]


def _exported_classes(module_name: str) -> list[type]:
    import importlib

    module = importlib.import_module(module_name)
    classes = [getattr(module, name) for name in getattr(module, "__all__", ())]
    return [c for c in classes if isinstance(c, type) and c.__module__ == module.__name__]


def config_classes() -> list[type]:
    """Every family's config class (the ``PreTrainedConfig`` its configuration module exports)."""
    from transformers import PreTrainedConfig

    return [c for config_module, _ in family_modules() for c in _exported_classes(config_module)
            if issubclass(c, PreTrainedConfig)]


def model_classes() -> list[type]:
    """Every family's model classes that name an Auto class (``_auto_class``: ``"AutoModel"``, ...)."""
    return [c for _, modeling_module in family_modules() for c in _exported_classes(modeling_module)
            if getattr(c, "_auto_class", None) and getattr(c, "config_class", None) is not None]


def register_configs() -> None:
    from transformers import AutoConfig

    for config_class in config_classes():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()  # save_pretrained copies the model's files and writes `auto_map`


def register_models() -> None:
    import transformers

    for model_class in model_classes():  # each class says which Auto class serves it
        getattr(transformers, model_class._auto_class).register(model_class.config_class, model_class, exist_ok=True)


def register_tokenizer() -> None:
    from transformers import AutoTokenizer

    from .tokenization_bytes import ByteTokenizer

    for config_class in config_classes():
        AutoTokenizer.register(config_class, tokenizer_class=ByteTokenizer, exist_ok=True)


def register_auto_classes() -> None:
    """Registers everything now (idempotent); for code that already holds transformers fully loaded."""
    register_configs()
    register_models()
    register_tokenizer()


# transformers module -> what to register once it has loaded
_AUTO_MODULE_HOOKS = {
    "transformers.models.auto.configuration_auto": register_configs,
    "transformers.models.auto.modeling_auto": register_models,
    "transformers.models.auto.tokenization_auto": register_tokenizer,
}


def install_auto_class_hooks() -> None:
    """Registers bytezoo with each Auto module of transformers as soon as that module has loaded (post-import hooks
    through wrapt, which also runs a hook at once for a module loaded already)."""
    import wrapt

    for module_name, register in _AUTO_MODULE_HOOKS.items():
        wrapt.register_post_import_hook(lambda _module, register=register: register(), module_name)


def _architectures() -> dict:
    """``{model_type: {Auto class name: model class}}``."""
    classes: dict = {}
    for model_class in model_classes():
        classes.setdefault(model_class.config_class.model_type, {})[model_class._auto_class] = model_class
    return classes


def from_pretrained(path_or_url: str, *, base_model: bool = False, auto_class=None, **kwargs):
    """Load a zoo checkpoint from a directory or any fsspec/hub URL, picking the class from its ``config.json``: the
    class its ``architectures`` names (a fine-tuned ``MLSTMForSequenceClassification``, …), else the causal LM.

    transformers' Auto classes read local folders and Hugging Face names only; for a hub URL this is their
    counterpart: ``bytezoo.from_pretrained(url, auto_class=AutoModelForSequenceClassification, num_labels=2)`` is
    ``AutoModelForSequenceClassification.from_pretrained(url, num_labels=2)``.

    Args:
        path_or_url: a checkpoint directory, or a hub URL (``s3://bucket/models/name``, ``…@latest``, ``…@v3``).
        base_model: load the recurrent body only (``MLSTMModel``) instead.
        auto_class: load as this transformers Auto class, given as the class or its name:
            ``"AutoModelForSequenceClassification"`` (a classifier on the checkpoint's body; from a causal LM's
            checkpoint every body weight is loaded and the head starts fresh: pass ``num_labels=``),
            ``"AutoModelForCausalLM"`` or ``"AutoModel"`` (as ``base_model=True``).
        kwargs: passed to transformers' ``from_pretrained`` (``dtype=``, ``device_map=``, ``num_labels=``, …).

    >>> model = bytezoo.from_pretrained("outputs/demo/model")  # doctest: +SKIP
    """
    from bytezoo.errors import InvalidArgumentError
    from bytezoo.hub import resolve  # URLs and hub folders (``…@tag``) -> a verified local snapshot

    wanted = getattr(auto_class, "__name__", auto_class)  # the class or its name
    if base_model:
        if wanted not in (None, "AutoModel"):
            raise InvalidArgumentError(f"base_model=True loads the body (AutoModel), not {wanted}; pass one of the two")
        wanted = "AutoModel"
    classes = _architectures()
    known = sorted({name for by_auto_class in classes.values() for name in by_auto_class})
    if wanted is not None and wanted not in known:  # checked before a URL is pulled
        raise InvalidArgumentError(f"auto_class={auto_class!r}: bytezoo's models load as {', '.join(known)}; pass one "
                                   "of these (the class or its name)")
    path = resolve(os.fspath(path_or_url))
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, "rb") as handle:
            document = jsonio.loads(handle.read())  # strict: deep nesting, duplicate keys, NaN: one line
        model_type, architectures = document.get("model_type"), document.get("architectures") or []
    except FileNotFoundError:
        raise CheckpointError(f"{config_path}: missing; {path_or_url!r} is not a saved checkpoint") from None
    except (ValueError, AttributeError) as error:
        raise CheckpointError(f"{config_path}: not a valid JSON config ({error})") from None
    if model_type not in classes:
        raise CheckpointError(f"{config_path}: unknown model_type {model_type!r}; bytezoo knows {sorted(classes)}")
    if wanted is not None:
        if wanted not in classes[model_type]:
            raise InvalidArgumentError(f"auto_class={wanted!r}: {model_type} models load as "
                                       f"{', '.join(sorted(classes[model_type]))}; pass one of these")
        return classes[model_type][wanted].from_pretrained(path, **kwargs)
    named = [c for c in classes[model_type].values() if isinstance(architectures, list) and c.__name__ in architectures]
    return (named[0] if named else classes[model_type]["AutoModelForCausalLM"]).from_pretrained(path, **kwargs)
