"""bytezoo: byte-level multiplicative-LSTM language models at scale, and their transfer to sentiment.

>>> import bytezoo
>>> model = bytezoo.create_model("mlstm-256")           # a preset from the zoo
>>> bytezoo.list_models("lstm-*")
['lstm-1024', 'lstm-256', 'lstm-4096']

Importing bytezoo registers its models and tokenizer with transformers' Auto classes, so
``AutoModelForCausalLM.from_pretrained(checkpoint_dir)`` and ``AutoTokenizer.from_pretrained(checkpoint_dir)`` work.
"""
from .version import __version__

# Submodules and their names load on first use (SPEC 1, PEP 562), so `bytezoo --help` and `import bytezoo` do not pay
# for torch, accelerate, scikit-learn or matplotlib up front.
import lazy_loader as _lazy

from .zoo.auto import install_auto_class_hooks as _install_auto_class_hooks

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["data", "demo", "finetune", "hub", "kernels", "pretrain", "transfer", "zoo"],
    submod_attrs={
        "zoo": ["ByteTokenizer", "create_model", "from_pretrained", "get_model_info", "list_models", "register_model"],
    },
)
__all__ = [*__all__, "__version__"]

# The Auto classes learn bytezoo's models when transformers loads them: at once if it already has, else right after.
_install_auto_class_hooks()
