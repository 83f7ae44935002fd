"""``python -m bytezoo``: the same command as ``bytezoo``."""
import sys

from .cli import main

sys.exit(main())
