"""The transfer report's figures, as PNG (matplotlib, Agg backend), plus the heatmap as HTML.

* :func:`plot_unit_histogram`: the top unit's value by class (Radford et al. 2017, Figure 3).
* :func:`plot_comparison`: every method's test score against the number of labelled training examples, on the same
  draws (their Figure 2, with the majority class and TF-IDF beside the features); what ``data_efficiency.png`` shows.
* :func:`plot_data_efficiency`: one curve of test accuracy against the number of labels, with reference lines.
* :func:`plot_unit_heatmap` / :func:`unit_heatmap_html`: the unit's value after each character of sample texts.
"""
from __future__ import annotations

import functools
import html
from typing import Sequence

import numpy as np

from .neuron import UnitTrace


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _literal_text(plot):
    """Draw ``plot``'s figure with every text taken literally: labels come from data files, and matplotlib would read
    ``$...$`` in one as mathtext (``$\\undefinedcmd{x}$`` fails deep inside it, after other figures were written)."""
    @functools.wraps(plot)
    def drawn(*args, **kwargs):
        with _pyplot().rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)
    return drawn


def _save(figure, path: str) -> None:
    import fsspec

    with fsspec.open(str(path), "wb") as handle:
        figure.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(figure)


@_literal_text
def plot_unit_histogram(values: np.ndarray, labels: Sequence, unit: int, path: str, title: str | None = None) -> None:
    """Overlaid histograms of one unit's feature value, one per class (``labels`` any hashable values)."""
    plt = _pyplot()
    values, labels = np.asarray(values, dtype=np.float64), np.asarray(labels)
    figure, axes = plt.subplots(figsize=(6, 3.6))
    bins = np.histogram_bin_edges(values, bins=40)
    for cls in sorted(set(labels.tolist()), key=str):
        axes.hist(values[labels == cls], bins=bins, alpha=0.55, label=f"{cls} ({int((labels == cls).sum())})")
    axes.set_xlabel(f"unit {unit} value")
    axes.set_ylabel("texts")
    axes.set_title(title or f"Unit {unit} by class")
    axes.legend(title="class")
    _save(figure, path)


@_literal_text
def plot_data_efficiency(points: Sequence[dict], path: str, references: dict[str, float] | None = None,
                         metric: str = "accuracy") -> None:
    """``points``: ``{"n_train": int, "test_accuracy": float}`` dicts; ``references``: horizontal lines (e.g. the
    TF-IDF baseline on the full training set)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.6))
    points = sorted(points, key=lambda point: point["n_train"])
    axes.plot([p["n_train"] for p in points], [100 * p["test_accuracy"] for p in points], "o-",
              label="L1 logistic regression on features")
    for (name, value), style in zip((references or {}).items(), ("--", ":", "-.")):
        axes.axhline(100 * value, linestyle=style, color="grey", label=name)
    axes.set_xscale("log")
    axes.set_xlabel("labelled training examples")
    axes.set_ylabel(f"test {metric} (%)")
    axes.set_title("Data efficiency")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    _save(figure, path)


@_literal_text
def plot_comparison(comparison: dict, path: str) -> None:
    """``comparison`` (see :mod:`bytezoo.transfer.comparison`): one curve per method over the same label counts (log
    x), error bars of one standard error where the points carry one; a method marked ``constant`` whose points are all
    equal (the majority class) as a horizontal line."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4))
    curves = 0
    for method in comparison["methods"]:
        points = [p for p in method["points"] if p.get("accuracy") is not None]
        if not points:
            continue
        x = [p["n_train"] for p in points]
        y = [100 * p["accuracy"] for p in points]
        if method.get("constant") and len(set(y)) == 1:
            axes.axhline(y[0], linestyle="--", color="grey", label=f"{method['label']} ({y[0]:.1f}%)")
            continue
        errors = [100 * p["stderr"] if p.get("stderr") is not None else 0.0 for p in points]
        marker = "osD^v<>"[curves % 7]
        axes.errorbar(x, y, yerr=errors if any(errors) else None, fmt=f"{marker}-", capsize=3, label=method["label"])
        curves += 1
    axes.set_xscale("log")
    ticks = comparison["n_train"]
    axes.set_xticks(ticks, [f"{n:,}" for n in ticks])
    axes.minorticks_off()
    axes.set_xlabel("labelled training examples (same draws for every method)")
    axes.set_ylabel(f"{comparison['split']} {comparison['metric']} (%)")
    title = f"{comparison['metric'].capitalize()} on {comparison['n_eval']} {comparison['split']} texts"
    if any(p.get("stderr") is not None for m in comparison["methods"] for p in m["points"]):
        title += "; bars: ±1 s.e. of the test set"
    axes.set_title(title, fontsize="medium")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    _save(figure, path)


def _feature_name(traces: Sequence[UnitTrace]) -> str:
    """The traced feature: its pooling mode, as the text read so far has it."""
    return f"{traces[0].pooling if traces else 'final_cell'} feature"


def _value_range(traces: Sequence[UnitTrace]) -> float:
    values = np.concatenate([trace.values for trace in traces if len(trace.values)] or [np.zeros(1)])
    return float(np.max(np.abs(values))) or 1.0


@_literal_text
def plot_unit_heatmap(traces: Sequence[UnitTrace], path: str, line_width: int = 80) -> None:
    """Each text as lines of ``line_width`` characters, every character on a cell coloured by the unit's value
    (red negative, green positive, white zero; one scale for all texts)."""
    plt = _pyplot()
    from matplotlib import colors

    limit = _value_range(traces)
    norm = colors.Normalize(vmin=-limit, vmax=limit)
    colormap = plt.get_cmap("RdYlGn")
    lines: list[tuple[list[str], np.ndarray]] = []
    for index, trace in enumerate(traces):
        if index:
            lines.append(([], np.zeros(0)))  # a blank line between texts
        for start in range(0, max(len(trace.characters), 1), line_width):
            lines.append((trace.characters[start : start + line_width], trace.values[start : start + line_width]))
    figure, axes = plt.subplots(figsize=(line_width * 0.11 + 1.2, len(lines) * 0.22 + 0.8))
    for row, (characters, values) in enumerate(lines):
        for column, (character, value) in enumerate(zip(characters, values)):
            axes.add_patch(plt.Rectangle((column, -row - 1), 1, 1, color=colormap(norm(value)), linewidth=0))
            shown = {"\n": "↵", "\t": "→"}.get(character, character)
            axes.text(column + 0.5, -row - 0.5, shown, ha="center", va="center", fontsize=7, family="monospace")
    axes.set_xlim(0, line_width)
    axes.set_ylim(-len(lines), 0)
    axes.axis("off")
    unit = traces[0].unit if traces else "?"
    axes.set_title(f"Unit {unit} of the {_feature_name(traces)} after each character", fontsize=9)
    figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=colormap), ax=axes, fraction=0.02, pad=0.01)
    _save(figure, path)


def unit_heatmap_html(traces: Sequence[UnitTrace]) -> str:
    """A standalone HTML page: every character on a background coloured by the unit's value; hover shows it."""
    limit = _value_range(traces)
    blocks = []
    for trace in traces:
        spans = []
        for character, value in zip(trace.characters, trace.values):
            strength = min(abs(value) / limit, 1.0)
            rgb = "0,160,60" if value >= 0 else "210,40,40"
            shown = html.escape({"\n": "↵"}.get(character, character))
            spans.append(f'<span style="background:rgba({rgb},{strength:.3f})" title="{value:.4f}">{shown}</span>')
        blocks.append(f'<p class="text">{"".join(spans)}</p>')
    unit = traces[0].unit if traces else "?"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>bytezoo unit heatmap</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        ".text{font-family:monospace;white-space:pre-wrap;line-height:1.6;border-bottom:1px solid #ddd;"
        "padding-bottom:.8em}</style>"
        f"</head><body><h1>Unit {unit} of the {html.escape(_feature_name(traces))}</h1>"
        "<p>Background: the unit's value after each character; green positive, red negative, full colour at "
        f"±{limit:.3g}.</p>"
        + "\n".join(blocks)
        + "</body></html>\n"
    )


__all__ = ["plot_unit_histogram", "plot_comparison", "plot_data_efficiency", "plot_unit_heatmap", "unit_heatmap_html"]
