"""The nn.GRU baseline: a recurrent model with no cell state."""
from __future__ import annotations

from ..registry import register_model
from .configuration_gru import ByteGRUConfig
from .modeling_gru import ByteGRUForCausalLM


@register_model(test_overrides={"hidden_size": 32})
def gru_1024(**overrides) -> ByteGRUForCausalLM:
    """1024-unit nn.GRU baseline: a recurrent model with no cell state."""
    return ByteGRUForCausalLM(ByteGRUConfig(**{"hidden_size": 1024, "embedding_size": 64, **overrides}))
