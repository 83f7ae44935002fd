"""Configuration of the byte-level multiplicative LSTM (Krause et al. 2016; Radford et al. 2017; Puri et al. 2018)."""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

MLSTM_KERNELS = ("auto", "reference", "fused", "triton")


@strict
class MLSTMConfig(PreTrainedConfig):
    r"""Architecture of a byte-level mLSTM language model.

    The defaults reproduce the papers' model: 256 byte values, a 64-d byte embedding, one mLSTM layer of 4096 units,
    weight norm on the recurrent layer's four weight matrices (not on the embedding or the output layer).

    Args:
        vocab_size (`int`, defaults to 256):
            Number of byte values the model reads and predicts. Token id = byte value.
        embedding_size (`int`, defaults to 64):
            Size of the byte embedding fed to the first layer.
        hidden_size (`int`, defaults to 4096):
            Units per mLSTM layer (size of `h`, `c` and the multiplicative state `m`).
        num_layers (`int`, defaults to 1):
            Stacked mLSTM layers; layer `l > 0` reads layer `l - 1`'s hidden states.
        weight_norm (`bool`, defaults to `True`):
            Weight-normalise `W_x`, `W_h`, `W_mx`, `W_mh` (each output column divided by its L2 norm over the input
            axis and scaled by a learned gain), as in the OpenAI release.
        kernel (`str`, defaults to `"auto"`):
            Which recurrence implementation runs: `"auto"` (fastest available for the device and dtype),
            `"reference"` (plain PyTorch loop, always available), `"fused"` (fused CPU/GPU path), `"triton"`
            (Triton kernels, NVIDIA GPUs). A runtime choice: it never changes the weights.
        forget_bias (`float`, defaults to 1.0):
            Initial bias of the forget gate (a common trick that lets gradients flow early in training).
        initializer_range (`float`, defaults to 1.0):
            Standard deviation of the byte embedding at initialisation.
        classifier_pooling (`str`, *optional*):
            The text feature a `MLSTMForSequenceClassification` head reads: a pooling mode the family offers
            (`recurrent_lm.supported_poolings`); `None` = its default, `"final_cell"` (Radford et al.'s).
        classifier_dropout (`float`, defaults to 0.0):
            Dropout on that feature while fine-tuning.

    Example:

    ```python
    >>> from bytezoo.zoo.mlstm import MLSTMConfig, MLSTMForCausalLM
    >>> model = MLSTMForCausalLM(MLSTMConfig(hidden_size=256))
    ```"""

    model_type = "mlstm"

    vocab_size: int = 256
    embedding_size: int = 64
    hidden_size: int = 4096
    num_layers: int = 1
    weight_norm: bool = True
    kernel: str = "auto"
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
                raise ValueError(f"MLSTMConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.kernel not in MLSTM_KERNELS:
            raise ValueError(f"MLSTMConfig.kernel must be one of {MLSTM_KERNELS}; got {self.kernel!r}")
        super().__post_init__(**kwargs)


__all__ = ["MLSTMConfig"]
