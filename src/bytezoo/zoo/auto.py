"""Registration with transformers' Auto classes, so that ``AutoModelForCausalLM.from_pretrained(dir)`` works after
``import bytezoo``, and saved checkpoints carry their code for ``trust_remote_code=True`` where bytezoo is absent.

``import bytezoo`` imports neither torch nor transformers (the command line starts at once). Instead it asks to be
told when transformers loads its Auto modules, and registers there: each registration runs right after its Auto
module has finished loading (at once where it already has), so nothing is registered into a half-loaded module.
The three parts are separate because transformers loads ``configuration_auto`` in the middle of loading
``modeling_utils``, when a model class cannot be imported yet but a config class can.
"""
from __future__ import annotations

import json
import os

from .modeling_utils import CheckpointError

# (config, base model, causal LM) per architecture, as import paths: resolved only when registering.
ARCHITECTURE_PATHS = (
    ("bytezoo.zoo.mlstm.configuration_mlstm:MLSTMConfig", "bytezoo.zoo.mlstm.modeling_mlstm:MLSTMModel",
     "bytezoo.zoo.mlstm.modeling_mlstm:MLSTMForCausalLM"),
    ("bytezoo.zoo.lstm.configuration_lstm:ByteLSTMConfig", "bytezoo.zoo.lstm.modeling_lstm:ByteLSTMModel",
     "bytezoo.zoo.lstm.modeling_lstm:ByteLSTMForCausalLM"),
)


def _load(path: str):
    """The class at ``"module:Name"``."""
    import pkgutil

    return pkgutil.resolve_name(path)


def register_configs() -> None:
    from transformers import AutoConfig

    for config_path, _, _ in ARCHITECTURE_PATHS:
        config_class = _load(config_path)
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()  # save_pretrained copies the model's files and writes `auto_map`


def register_models() -> None:
    from transformers import AutoModel, AutoModelForCausalLM

    for config_path, base_path, causal_lm_path in ARCHITECTURE_PATHS:
        config_class, base_class, causal_lm_class = _load(config_path), _load(base_path), _load(causal_lm_path)
        AutoModel.register(config_class, base_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, causal_lm_class, exist_ok=True)


def register_tokenizer() -> None:
    from transformers import AutoTokenizer

    from .tokenization_bytes import ByteTokenizer

    for config_path, _, _ in ARCHITECTURE_PATHS:
        AutoTokenizer.register(_load(config_path), tokenizer_class=ByteTokenizer, exist_ok=True)


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
    """``{model_type: (base class, causal-LM class)}``."""
    classes = {}
    for config_path, base_path, causal_lm_path in ARCHITECTURE_PATHS:
        classes[_load(config_path).model_type] = (_load(base_path), _load(causal_lm_path))
    return classes


def from_pretrained(path_or_url: str, *, base_model: bool = False, **kwargs):
    """Load a zoo checkpoint from a directory or any fsspec/hub URL, picking the class from its ``config.json``.

    Args:
        path_or_url: a checkpoint directory, or a hub URL (``s3://bucket/models/name``, ``…@latest``, ``…@v3``).
        base_model: load the recurrent body only (``MLSTMModel``) instead of the causal LM.
        kwargs: passed to transformers' ``from_pretrained`` (``dtype=``, ``device_map=``, …).

    >>> model = bytezoo.from_pretrained("outputs/demo/model")  # doctest: +SKIP
    """
    from bytezoo.hub import resolve  # URLs and hub folders (``…@tag``) -> a verified local snapshot

    path = resolve(os.fspath(path_or_url))
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
    except FileNotFoundError:
        raise CheckpointError(f"{config_path}: missing; {path_or_url!r} is not a saved checkpoint") from None
    except (ValueError, AttributeError) as error:
        raise CheckpointError(f"{config_path}: not a valid JSON config ({error})") from error
    classes = _architectures()
    if model_type not in classes:
        raise CheckpointError(f"{config_path}: unknown model_type {model_type!r}; bytezoo knows {sorted(classes)}")
    base_class, causal_lm_class = classes[model_type]
    return (base_class if base_model else causal_lm_class).from_pretrained(path, **kwargs)
