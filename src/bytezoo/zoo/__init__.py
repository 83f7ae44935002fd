"""The model zoo: byte-level mLSTM and LSTM language models as transformers ``PreTrainedModel``s, the byte tokenizer,
the preset registry, and converters from the original checkpoints (``bytezoo.zoo.convert``)."""
from .auto import from_pretrained, register_auto_classes
from .lstm import ByteLSTMConfig, ByteLSTMForCausalLM, ByteLSTMModel
from .mlstm import MLSTMConfig, MLSTMForCausalLM, MLSTMModel
from .modeling_utils import CheckpointError
from .registry import ModelInfo, create_model, get_model_info, is_model, list_models, register_model
from .tokenization_bytes import ByteTokenizer
from . import presets  # noqa: F401  (registers the presets)

register_auto_classes()

__all__ = [
    "ByteTokenizer",
    "CheckpointError",
    "from_pretrained",
    "MLSTMConfig",
    "MLSTMModel",
    "MLSTMForCausalLM",
    "ByteLSTMConfig",
    "ByteLSTMModel",
    "ByteLSTMForCausalLM",
    "ModelInfo",
    "create_model",
    "get_model_info",
    "is_model",
    "list_models",
    "register_model",
]
