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


ADAPT_THREADS_HELP = ("follow the machine's load with the CPU thread count while the run goes (re-measured every few "
                      "seconds). Off by default: a run keeps the count it started with (--threads, or the cores the "
                      "load left free at its start), on --resume too, because another count changes the sums; with "
                      "this option the summary says the run is not bit-reproducible")


def ending_lines(summary: dict) -> list[str]:
    """The lines a training command ends with: why the run is not bit-reproducible (when it is not), then how it
    ended (the last line)."""
    lines = []
    if summary.get("not_bit_reproducible_because"):
        lines.append(f"not bit-reproducible: {summary['not_bit_reproducible_because']}")
    return lines + [summary["ended"]]


__all__ = ["ADAPT_THREADS_HELP", "duration", "ending_lines", "key_value"]
