"""The one text preprocessing that both stages share: what a language model is pretrained on and what the featurizer
feeds it must be the same bytes for the same text."""
from __future__ import annotations

import html


def model_text(text: str) -> str:
    """A document as one line of model text: HTML entities unescaped (``&#039;`` -> ``'``), and every kind of line
    break (``\\n``, ``\\r\\n``, ``\\r``, and the rest of ``str.splitlines``' list) a single space."""
    return " ".join(html.unescape(text).splitlines())


def openai_bytes(text: str) -> bytes:
    """Radford et al.'s encoder input: :func:`model_text`, stripped, with ``"\\n "`` before and ``" "`` after, as
    UTF-8 (lone surrogates from undecodable input bytes go back to those bytes)."""
    return ("\n " + model_text(text).strip() + " ").encode("utf-8", errors="surrogateescape")


__all__ = ["model_text", "openai_bytes"]
