"""Moved to :mod:`bytezoo.training.run_folder` (the output-folder policy every command shares). This name stays the
very same module object for code that imports it from here."""
import sys

from bytezoo.training import run_folder as _run_folder

sys.modules[__name__] = _run_folder
