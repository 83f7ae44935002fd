"""bytezoo: byte-level multiplicative-LSTM language models at scale, and their transfer to sentiment.

>>> import bytezoo
>>> model = bytezoo.create_model("mlstm-256")           # a preset from the zoo
>>> bytezoo.list_models("lstm-*")
['lstm-1024', 'lstm-256', 'lstm-4096']

Importing bytezoo registers its models and tokenizer with transformers' Auto classes, so
``AutoModelForCausalLM.from_pretrained(checkpoint_dir)`` and ``AutoTokenizer.from_pretrained(checkpoint_dir)`` work.
"""
__version__ = "0.1.0"

from .zoo import ByteTokenizer, create_model, from_pretrained, get_model_info, list_models, register_model  # noqa: E402

__all__ = ["ByteTokenizer", "create_model", "from_pretrained", "get_model_info", "list_models", "register_model", "__version__"]
