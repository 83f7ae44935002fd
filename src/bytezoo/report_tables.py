"""Run reports as table cells, read once for every place that shows them.

``report.json``'s ``comparison`` (every method's test score at the same label counts, written by
:mod:`bytezoo.transfer.comparison` for ``bytezoo transfer`` and ``bytezoo finetune --test``) is shown twice: as the text
table the commands print (:func:`bytezoo.transfer.comparison.format_table`) and as the hub's model card's Markdown table
(:mod:`bytezoo.hub.card`). Both take their caption, rows and footnote from :func:`comparison_cells`, which sits below
both layers so the hub renders a report without importing the stage that wrote it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def comparison_cells(comparison: Any) -> dict | None:
    """The comparison as text cells: ``{"caption": str, "columns": [label count], "rows": [(method label, [score in %
    or "n/a", ...])], "footnote": str | None}``; ``None`` when it compares nothing (no test split), or when its shape is
    not one this version knows (a report read from a hub may be anything: whoever shows it skips the table)."""
    if not isinstance(comparison, Mapping) or not comparison.get("methods"):
        return None
    try:
        methods = comparison["methods"]
        caption = (f"test {comparison['metric']} (%) by training labels, on {comparison['n_eval']} "
                   f"{comparison['split']} texts (same draws, seed {comparison['draws']['seed']})")
        columns = [int(n) for n in comparison["n_train"]]
        rows = [(str(method["label"]), ["n/a" if point.get("accuracy") is None else f"{100 * point['accuracy']:.1f}"
                                        for point in method["points"]])
                for method in methods]
        errors = [float(point["stderr"]) for method in methods for point in method["points"]
                  if point.get("stderr") is not None]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    footnote = (f"one standard error from the test set alone: {100 * min(errors):.1f} to {100 * max(errors):.1f} "
                "points") if errors else None
    return {"caption": caption, "columns": columns, "rows": rows, "footnote": footnote}


__all__ = ["comparison_cells"]
