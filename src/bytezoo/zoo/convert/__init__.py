"""Converters from the original checkpoints to bytezoo checkpoints (config.json + model.safetensors + tokenizer +
``conversion.json``).

* :func:`convert_openai`: the 15 ``.npy`` files released with Radford et al. 2017.
* :func:`convert_nvidia`: NVIDIA sentiment-discovery's PyTorch mLSTM checkpoints (Puri et al. 2018).

Both write all-or-nothing and raise :class:`ConversionError` naming the file (and key) on bad input.
"""
import lazy_loader as _lazy

# Lazy: `bytezoo convert --help` must not import torch.
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_common": ["ConversionError"],
        "nvidia": ["convert_nvidia", "load_nvidia_state"],
        "openai": ["convert_openai", "load_openai_state"],
    },
)
