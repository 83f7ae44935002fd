"""Byte Transformers of nanoGPT's and GPT-2 small's sizes, to compare attention with recurrence on the same bytes."""
from __future__ import annotations

from ..papers import GPT2, NANOGPT
from ..registry import register_model
from .configuration_transformer import ByteTransformerConfig
from .modeling_transformer import ByteTransformerForCausalLM

TINY = {"hidden_size": 32, "num_heads": 2, "context_size": 8}  # a window shorter than the tests' texts


def _transformer(hidden_size: int, num_layers: int, num_heads: int, context_size: int,
                 overrides: dict) -> ByteTransformerForCausalLM:
    defaults = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
                "context_size": context_size}
    return ByteTransformerForCausalLM(ByteTransformerConfig(**{**defaults, **overrides}))


@register_model(paper=NANOGPT, test_overrides=TINY)
def transformer_384(**overrides) -> ByteTransformerForCausalLM:
    """Byte Transformer of nanoGPT's character-level size: 6 layers, 6 heads, 384 wide, 256-byte window (≈ 10.8M)."""
    return _transformer(384, 6, 6, 256, overrides)


@register_model(paper=GPT2, test_overrides=TINY)
def transformer_768(**overrides) -> ByteTransformerForCausalLM:
    """Byte Transformer of GPT-2 small's size: 12 layers, 12 heads, 768 wide, 1024-byte window (≈ 85M)."""
    return _transformer(768, 12, 12, 1024, overrides)
