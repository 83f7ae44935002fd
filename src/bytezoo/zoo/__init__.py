"""The model zoo: byte-level language models of four families (mLSTM, LSTM, GRU, Transformer) as transformers
``PreTrainedModel``s, one folder each (:mod:`bytezoo.zoo.families`), the byte tokenizer, the preset registry, and
converters from the original checkpoints (``bytezoo.zoo.convert``)."""
import lazy_loader as _lazy

# Loaded on first use: `bytezoo.zoo.cli` (part of `bytezoo --help`) must not import torch.
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["convert", "families"],
    submod_attrs={
        "auto": ["from_pretrained", "register_auto_classes"],
        "gru": ["ByteGRUConfig", "ByteGRUForCausalLM", "ByteGRUForSequenceClassification", "ByteGRUModel"],
        "lstm": ["ByteLSTMConfig", "ByteLSTMForCausalLM", "ByteLSTMForSequenceClassification", "ByteLSTMModel"],
        "mlstm": ["MLSTMConfig", "MLSTMForCausalLM", "MLSTMForSequenceClassification", "MLSTMModel"],
        "transformer": ["ByteTransformerConfig", "ByteTransformerForCausalLM",
                        "ByteTransformerForSequenceClassification", "ByteTransformerModel"],
        "modeling_utils": ["CheckpointError"],
        "registry": ["ModelInfo", "create_model", "get_model_info", "is_model", "list_models", "register_model"],
        "tokenization_bytes": ["ByteTokenizer"],
    },
)
