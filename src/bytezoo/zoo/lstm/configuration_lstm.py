"""Configuration of the byte-level LSTM baseline (``torch.nn.LSTM``: oneDNN on CPU, cuDNN on NVIDIA GPUs)."""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class ByteLSTMConfig(PreTrainedConfig):
    r"""Architecture of a byte-level LSTM language model, the baseline beside the mLSTM.

    Args:
        vocab_size (`int`, defaults to 256): byte values read and predicted (token id = byte value).
        embedding_size (`int`, defaults to 64): size of the byte embedding.
        hidden_size (`int`, defaults to 4096): units per LSTM layer.
        num_layers (`int`, defaults to 1): stacked LSTM layers.
        forget_bias (`float`, defaults to 1.0): initial forget-gate bias.
        initializer_range (`float`, defaults to 1.0): standard deviation of the byte embedding at initialisation.
        classifier_pooling (`str`, *optional*): the text feature a `*ForSequenceClassification` head reads: a
            pooling mode the family offers (`recurrent_lm.supported_poolings`); `None` = its default (`"final_cell"`).
        classifier_dropout (`float`, defaults to 0.0): dropout on that feature while fine-tuning.

    Example:

    ```python
    >>> from bytezoo.zoo.lstm import ByteLSTMConfig, ByteLSTMForCausalLM
    >>> model = ByteLSTMForCausalLM(ByteLSTMConfig(hidden_size=256))
    ```"""

    model_type = "byte_lstm"

    vocab_size: int = 256
    embedding_size: int = 64
    hidden_size: int = 4096
    num_layers: int = 1
    forget_bias: float = 1.0
    initializer_range: float = 1.0
    classifier_pooling: str | None = None
    classifier_dropout: float = 0.0
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_cache: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"ByteLSTMConfig.{name} must be >= 1; got {getattr(self, name)}")
        super().__post_init__(**kwargs)


__all__ = ["ByteLSTMConfig"]
