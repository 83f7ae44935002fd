"""JSON from outside, and JSON that bytezoo writes.

In (:func:`loads`): a document from a hub, a checkpoint or a file someone sent is parsed strictly: nesting deeper
than :data:`MAX_DEPTH` (a ``config.json`` nested 100,000 deep makes Python's parser raise ``RecursionError``), keys
given twice in one object (parsers disagree on which one wins: a way to show one reader what another does not see)
and the non-standard ``NaN``/``Infinity`` literals are refused with a :class:`JSONDocumentError`, a ``ValueError``
that every caller turns into its own one-line error naming the file.

Out (:func:`dumps`): every JSON file bytezoo writes (run.json, summaries, reports, indexes, manifests) goes through
it: strings are redacted (:func:`bytezoo.redaction.redact_text`) and a value that is not a number
(``NaN``, infinities) is written as ``null``, so the file is always valid JSON (``allow_nan=False``) and never carries
a credential.
"""
from __future__ import annotations

import json
import math
from typing import Any

from bytezoo.redaction import redact_text

MAX_DEPTH = 100


class JSONDocumentError(ValueError):
    """A JSON document that is malformed or that bytezoo refuses to read (too deep, duplicate keys, NaN)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise JSONDocumentError(f"the key {duplicate!r} is given twice in one object")
    return document


def _refuse_constant(name: str):
    raise JSONDocumentError(f"{name} is not a JSON number")


def loads(data: bytes | str, *, strict: bool = True, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed document, or :class:`JSONDocumentError` (a ``ValueError``) saying what is wrong with it.

    ``strict`` (documents: configs, manifests, indexes, headers) also refuses duplicate keys, ``NaN``/``Infinity``
    and nesting deeper than ``max_depth``; without it (records: one JSON line of a corpus) only what Python cannot
    parse at all is refused, nesting too deep for its parser included."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
        if not strict:
            return json.loads(text)
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
    except RecursionError:
        raise JSONDocumentError("nested too deeply to parse") from None
    except UnicodeDecodeError as error:
        raise JSONDocumentError(f"not UTF-8 ({error.reason} at byte {error.start})") from None
    except JSONDocumentError:
        raise
    except ValueError as error:
        raise JSONDocumentError(str(error)) from None
    _check_depth(document, max_depth)
    return document


def _check_depth(document: Any, max_depth: int) -> None:
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                raise JSONDocumentError(f"nested more than {max_depth} levels deep")
            pending.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))


def public(value: Any, redact: bool = True) -> Any:
    """``value`` as bytezoo writes it: every string redacted (keys too; not with ``redact=False``), every float that
    is not a number (``NaN``, infinities) replaced by ``None``, numpy scalars and arrays as numbers and lists."""
    if isinstance(value, str):
        return redact_text(value) if redact else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {redact_text(key) if redact and isinstance(key, str) else key: public(item, redact)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(item, redact) for item in value]
    if not isinstance(value, (int, bool)) and value is not None and callable(getattr(value, "tolist", None)):
        return public(value.tolist(), redact)  # numpy scalars and arrays
    return value


def dumps(document: Any, *, redact: bool = True, **options) -> str:
    """``json.dumps`` of :func:`public` ``(document)``, with ``allow_nan=False``: valid JSON, redacted. ``redact=False``
    is for data written back to the user as it was read (the texts of ``bytezoo classify``'s predictions)."""
    return json.dumps(public(document, redact), allow_nan=False, **options)


__all__ = ["JSONDocumentError", "MAX_DEPTH", "dumps", "loads", "public"]
