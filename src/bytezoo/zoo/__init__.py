"""The model zoo: byte-level mLSTM and LSTM language models as transformers ``PreTrainedModel``s, the byte tokenizer,
the preset registry, and converters from the original checkpoints (``bytezoo.zoo.convert``)."""
import lazy_loader as _lazy

# Loaded on first use: `bytezoo.zoo.cli` (part of `bytezoo --help`) must not import torch.
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["convert", "presets"],
    submod_attrs={
        "auto": ["from_pretrained", "register_auto_classes"],
        "lstm": ["ByteLSTMConfig", "ByteLSTMForCausalLM", "ByteLSTMModel"],
        "mlstm": ["MLSTMConfig", "MLSTMForCausalLM", "MLSTMModel"],
        "modeling_utils": ["CheckpointError"],
        "registry": ["ModelInfo", "create_model", "get_model_info", "is_model", "list_models", "register_model"],
        "tokenization_bytes": ["ByteTokenizer"],
    },
)
