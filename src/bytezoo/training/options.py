"""Command-line value types both training commands (``bytezoo pretrain``, ``bytezoo finetune``) share."""
from __future__ import annotations

import argparse
import json


def key_value(text: str) -> tuple[str, object]:
    """``--model-config KEY=VALUE``: the value parsed as JSON where it is JSON, else kept as text."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def duration(text: str) -> float:
    """``--max-time``: seconds from "3600", "90s", "45m", "4h" or "1.5d"."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1].lower()) if text and text[-1].lower() in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 3600, 90s, 45m, 4h or 1.5d; got {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"the duration must be positive; got {text!r}")
    return seconds


__all__ = ["duration", "key_value"]
