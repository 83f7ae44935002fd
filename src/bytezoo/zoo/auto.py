"""Registration with transformers' Auto classes, so that ``AutoModelForCausalLM.from_pretrained(dir)`` works after
``import bytezoo``, and saved checkpoints carry their code for ``trust_remote_code=True`` where bytezoo is absent."""
from __future__ import annotations

import json
import os

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from .lstm import ByteLSTMConfig, ByteLSTMForCausalLM, ByteLSTMModel
from .mlstm import MLSTMConfig, MLSTMForCausalLM, MLSTMModel
from .modeling_utils import CheckpointError
from .tokenization_bytes import ByteTokenizer

ARCHITECTURES = (
    (MLSTMConfig, MLSTMModel, MLSTMForCausalLM),
    (ByteLSTMConfig, ByteLSTMModel, ByteLSTMForCausalLM),
)


def register_auto_classes() -> None:
    for config_class, base_class, causal_lm_class in ARCHITECTURES:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, base_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, causal_lm_class, exist_ok=True)
        AutoTokenizer.register(config_class, tokenizer_class=ByteTokenizer, exist_ok=True)
        # save_pretrained then copies the model's files next to the weights and writes `auto_map`.
        config_class.register_for_auto_class()
        base_class.register_for_auto_class("AutoModel")
        causal_lm_class.register_for_auto_class("AutoModelForCausalLM")
    ByteTokenizer.register_for_auto_class("AutoTokenizer")


def from_pretrained(path_or_url: str, *, base_model: bool = False, **kwargs) -> PreTrainedModel:
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
    classes = {config.model_type: (base, causal) for config, base, causal in ARCHITECTURES}
    if model_type not in classes:
        raise CheckpointError(f"{config_path}: unknown model_type {model_type!r}; bytezoo knows {sorted(classes)}")
    base_class, causal_lm_class = classes[model_type]
    return (base_class if base_model else causal_lm_class).from_pretrained(path, **kwargs)
