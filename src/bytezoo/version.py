"""bytezoo's version, in a module of its own: any layer can name it without importing the package's top (which
registers the models with transformers). pyproject.toml reads it from here."""
__version__ = "0.1.0"
