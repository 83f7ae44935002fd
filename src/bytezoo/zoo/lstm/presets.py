"""The nn.LSTM baselines (cuDNN on GPU, oneDNN on CPU), at the mLSTM's sizes."""
from __future__ import annotations

from ..papers import PURI_2018
from ..registry import register_model
from .configuration_lstm import ByteLSTMConfig
from .modeling_lstm import ByteLSTMForCausalLM


def _lstm(hidden_size: int, overrides: dict) -> ByteLSTMForCausalLM:
    return ByteLSTMForCausalLM(ByteLSTMConfig(**{"hidden_size": hidden_size, "embedding_size": 64, **overrides}))


@register_model(paper=PURI_2018, test_overrides={"hidden_size": 32, "embedding_size": 8})
def lstm_4096(**overrides) -> ByteLSTMForCausalLM:
    """4096-unit nn.LSTM baseline (cuDNN on GPU, oneDNN on CPU)."""
    return _lstm(4096, overrides)


@register_model(test_overrides={"hidden_size": 32})
def lstm_1024(**overrides) -> ByteLSTMForCausalLM:
    """1024-unit nn.LSTM baseline."""
    return _lstm(1024, overrides)


@register_model(test_overrides={"hidden_size": 32})
def lstm_256(**overrides) -> ByteLSTMForCausalLM:
    """256-unit nn.LSTM baseline."""
    return _lstm(256, overrides)
