"""Moved to :mod:`bytezoo.training.checkpoint` (the runtime pretraining and fine-tuning share). This name stays the
very same module object, so code that imports it from here, or replaces a function in it, still reaches the one in
use."""
import sys

from bytezoo.training import checkpoint as _checkpoint

sys.modules[__name__] = _checkpoint
