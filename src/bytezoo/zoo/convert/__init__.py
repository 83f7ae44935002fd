"""Converters from the original checkpoints to bytezoo checkpoints (config.json + model.safetensors + tokenizer +
``conversion.json``).

* :func:`convert_openai`: the 15 ``.npy`` files released with Radford et al. 2017.
* :func:`convert_nvidia`: NVIDIA sentiment-discovery's PyTorch mLSTM checkpoints (Puri et al. 2018).

Both write all-or-nothing and raise :class:`ConversionError` naming the file (and key) on bad input.
"""
from ._common import ConversionError
from .nvidia import convert_nvidia, load_nvidia_state
from .openai import convert_openai, load_openai_state

__all__ = ["ConversionError", "convert_nvidia", "convert_openai", "load_nvidia_state", "load_openai_state"]
