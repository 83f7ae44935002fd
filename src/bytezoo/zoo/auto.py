"""Registration with transformers' Auto classes, so that ``AutoModelForCausalLM.from_pretrained(dir)`` works after
``import bytezoo``, and saved checkpoints carry their code for ``trust_remote_code=True`` where bytezoo is absent."""
from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from .lstm import ByteLSTMConfig, ByteLSTMForCausalLM, ByteLSTMModel
from .mlstm import MLSTMConfig, MLSTMForCausalLM, MLSTMModel
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
