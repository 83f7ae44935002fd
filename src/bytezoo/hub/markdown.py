"""Markdown that shows what a file holds as it is written, never as markup: the model card's building blocks.

Every value a card takes from the folder's files (label names, keys, model types, captions) is untrusted text:
:func:`literal` escapes it for HTML and Markdown (``<script>``, ``[link](…)``, ``**``, a backtick, a ``|`` ending
a table cell), :func:`code` makes a code span that nothing inside can end, and :func:`table` escapes every cell that
is not already Markdown made here.
"""
from __future__ import annotations

import html
import re

MAX_CHARACTERS = 300  # of one value, on one line

_SPECIAL_RE = re.compile(r"([\\`*_\[\]|~])")  # what starts markup mid-line (< > & are HTML-escaped)


class Markdown(str):
    """Text that is Markdown already (a code span made by :func:`code`): table cells take it as it is."""


def literal(text) -> str:
    """One line of text from a file, shown literally: HTML escaped (``<script>`` is text) and Markdown's special
    characters backslash-escaped (no emphasis, link, heading or table cell can start inside it)."""
    text = html.escape(" ".join(str(text).split())[:MAX_CHARACTERS], quote=False)
    return _SPECIAL_RE.sub(r"\\\1", text)


def code(text) -> Markdown:
    """``text`` as an inline code span (taken literally by Markdown renderers); a backtick in it, which would end the
    span, becomes a quote, and a ``|``, which would end a table cell, is escaped."""
    text = " ".join(str(text).split())[:MAX_CHARACTERS].replace("`", "'").replace("|", "\\|")
    return Markdown(f"`{text}`")


def sentence(text: str, end: str = ".") -> str:
    """``text`` as one line of Markdown starting with a capital and ending with ``end``."""
    text = literal(text).rstrip(".:; ")
    return text[:1].upper() + text[1:] + end


def table(header: tuple, rows: list[tuple]) -> list[str]:
    """A Markdown table, one line per row; cells that are not :class:`Markdown` are shown literally."""
    def cell(value) -> str:
        return value if isinstance(value, Markdown) else literal(str(value))

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return lines
