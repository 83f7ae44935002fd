"""The zoo's presets: the papers' mLSTM, its larger sibling, small CPU sizes, the nn.LSTM baseline, and byte
Transformers of nanoGPT's and GPT-2 small's sizes to compare attention with recurrence on the same bytes."""
from __future__ import annotations

from .gru import ByteGRUConfig, ByteGRUForCausalLM
from .lstm import ByteLSTMConfig, ByteLSTMForCausalLM
from .mlstm import MLSTMConfig, MLSTMForCausalLM
from .registry import register_model
from .transformer import ByteTransformerConfig, ByteTransformerForCausalLM

RADFORD_2017 = "Radford, Jozefowicz, Sutskever. Learning to Generate Reviews and Discovering Sentiment. arXiv:1704.01444 (2017)"
PURI_2018 = "Puri, Kirby, Yakovenko, Catanzaro. Large Scale Language Modeling: Converging on 40GB of Text in Four Hours. arXiv:1808.01371 (2018)"
NANOGPT = "Karpathy. nanoGPT (2022), https://github.com/karpathy/nanoGPT: the shakespeare_char configuration"
GPT2 = "Radford, Wu, Child, Luan, Amodei, Sutskever. Language Models are Unsupervised Multitask Learners (2019)"
TINY = {"hidden_size": 32, "embedding_size": 8}


def _mlstm(hidden_size: int, overrides: dict) -> MLSTMForCausalLM:
    return MLSTMForCausalLM(MLSTMConfig(**{"hidden_size": hidden_size, "embedding_size": 64, "weight_norm": True, **overrides}))


def _lstm(hidden_size: int, overrides: dict) -> ByteLSTMForCausalLM:
    return ByteLSTMForCausalLM(ByteLSTMConfig(**{"hidden_size": hidden_size, "embedding_size": 64, **overrides}))


@register_model(
    paper=RADFORD_2017,
    source="https://github.com/openai/generating-reviews-discovering-sentiment (15 .npy files; `bytezoo convert openai`)",
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


@register_model(paper=PURI_2018, test_overrides=TINY)
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


def _transformer(hidden_size: int, num_layers: int, num_heads: int, context_size: int, overrides: dict) -> ByteTransformerForCausalLM:
    defaults = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads, "context_size": context_size}
    return ByteTransformerForCausalLM(ByteTransformerConfig(**{**defaults, **overrides}))


TINY_TRANSFORMER = {"hidden_size": 32, "num_heads": 2, "context_size": 8}  # a window shorter than the tests' texts


@register_model(paper=NANOGPT, test_overrides=TINY_TRANSFORMER)
def transformer_384(**overrides) -> ByteTransformerForCausalLM:
    """Byte Transformer of nanoGPT's character-level size: 6 layers, 6 heads, 384 wide, 256-byte window (≈ 10.8M)."""
    return _transformer(384, 6, 6, 256, overrides)


@register_model(paper=GPT2, test_overrides=TINY_TRANSFORMER)
def transformer_768(**overrides) -> ByteTransformerForCausalLM:
    """Byte Transformer of GPT-2 small's size: 12 layers, 12 heads, 768 wide, 1024-byte window (≈ 85M)."""
    return _transformer(768, 12, 12, 1024, overrides)


@register_model(test_overrides={"hidden_size": 32})
def gru_1024(**overrides) -> ByteGRUForCausalLM:
    """1024-unit nn.GRU baseline: a recurrent model with no cell state."""
    return ByteGRUForCausalLM(ByteGRUConfig(**{"hidden_size": 1024, "embedding_size": 64, **overrides}))
