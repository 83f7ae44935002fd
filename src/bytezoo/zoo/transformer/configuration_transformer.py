"""Configuration of the byte-level decoder-only Transformer, the attention baseline beside the recurrent models."""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class ByteTransformerConfig(PreTrainedConfig):
    r"""Architecture of a byte-level decoder-only Transformer (pre-LayerNorm blocks, rotary positions, GELU MLP).

    Attention reaches back ``context_size`` bytes: a sliding window, so a text of any length is read in chunks with the
    window's keys and values carried as the state, exactly as if it had been read at once (Transformer-XL's memory,
    without its gradient).

    Args:
        vocab_size (`int`, defaults to 256): byte values read and predicted (token id = byte value).
        hidden_size (`int`, defaults to 384): width of the residual stream (and of the byte embedding).
        num_layers (`int`, defaults to 6): Transformer blocks.
        num_heads (`int`, defaults to 6): attention heads; `hidden_size / num_heads` must be even (rotary positions).
        intermediate_size (`int`, defaults to 0): width of each block's MLP; 0 means `4 * hidden_size`.
        context_size (`int`, defaults to 256): how many earlier bytes of its document each byte attends to.
        rope_theta (`float`, defaults to 10000.0): base of the rotary position frequencies.
        dropout (`float`, defaults to 0.0): dropout on attention and MLP outputs while training.
        layer_norm_eps (`float`, defaults to 1e-5): LayerNorm epsilon.
        initializer_range (`float`, defaults to 0.02): standard deviation of the weights at initialisation (GPT-2's).
        classifier_pooling (`str`, *optional*): the text feature a `*ForSequenceClassification` head reads: a
            pooling mode the family offers (`recurrent_lm.supported_poolings`); `None` = its default (`"mean"`).
        classifier_dropout (`float`, defaults to 0.0): dropout on that feature while fine-tuning.

    Example:

    ```python
    >>> from bytezoo.zoo.transformer import ByteTransformerConfig, ByteTransformerForCausalLM
    >>> model = ByteTransformerForCausalLM(ByteTransformerConfig(hidden_size=128, num_heads=4, num_layers=2))
    ```"""

    model_type = "byte_transformer"

    vocab_size: int = 256
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 6
    intermediate_size: int = 0
    context_size: int = 256
    rope_theta: float = 10000.0
    dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    classifier_pooling: str | None = None
    classifier_dropout: float = 0.0
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_cache: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "context_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ByteTransformerConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"ByteTransformerConfig.hidden_size ({self.hidden_size}) must be num_heads ({self.num_heads}) times an "
                "even head size (rotary positions rotate pairs of features)"
            )
        if self.intermediate_size < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("ByteTransformerConfig.intermediate_size must be >= 0 and dropout in [0, 1)")
        super().__post_init__(**kwargs)


__all__ = ["ByteTransformerConfig"]
