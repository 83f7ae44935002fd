"""The mLSTM presets: the papers' model, its larger sibling from NVIDIA's reproduction, and small CPU sizes."""
from __future__ import annotations

from ..papers import PURI_2018, RADFORD_2017
from ..registry import register_model
from .configuration_mlstm import MLSTMConfig
from .modeling_mlstm import MLSTMForCausalLM

TINY = {"hidden_size": 32, "embedding_size": 8}  # the test suite's size: the structure kept, the widths cut


def _mlstm(hidden_size: int, overrides: dict) -> MLSTMForCausalLM:
    return MLSTMForCausalLM(MLSTMConfig(**{"hidden_size": hidden_size, "embedding_size": 64, "weight_norm": True,
                                           **overrides}))


@register_model(
    paper=RADFORD_2017,
    source="https://github.com/openai/generating-reviews-discovering-sentiment "
           "(15 .npy files; `bytezoo convert openai`)",
    license="MIT",
    test_overrides=TINY,
)
def mlstm_4096(**overrides) -> MLSTMForCausalLM:
    """The papers' model: 64-d byte embedding, one 4096-unit mLSTM with weight norm (≈ 86M parameters)."""
    return _mlstm(4096, overrides)


@register_model(
    paper=PURI_2018,
    source="https://github.com/NVIDIA/sentiment-discovery (PyTorch checkpoints; `bytezoo convert nvidia`)",
    license="see source",
    test_overrides=TINY,
)
def mlstm_8192(**overrides) -> MLSTMForCausalLM:
    """8192-unit mLSTM, the larger model of NVIDIA's large-scale reproduction (≈ 340M parameters)."""
    return _mlstm(8192, overrides)


@register_model(test_overrides={"hidden_size": 32})
def mlstm_1024(**overrides) -> MLSTMForCausalLM:
    """1024-unit mLSTM: a CPU-trainable size for experiments (≈ 5.9M parameters)."""
    return _mlstm(1024, overrides)


@register_model(test_overrides={"hidden_size": 32})
def mlstm_256(**overrides) -> MLSTMForCausalLM:
    """256-unit mLSTM: trains in minutes on a laptop CPU (≈ 0.5M parameters)."""
    return _mlstm(256, overrides)
