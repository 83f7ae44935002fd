"""One unit at a time: its value after every character of a text (the papers' per-character heatmaps), and what the
classifier's top units say about the classes (the sign of their weights, their range per class, the value to hold
one at to steer generation toward a class).

>>> trace = unit_trace(model, "This film was great fun", unit=2388)   # doctest: +SKIP
>>> trace.characters[-3:], trace.values[-3:]                          # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .featurizer import recurrent_body, text_to_bytes

PERCENTILES = (5.0, 95.0)  # a unit's range per class: robust to the few texts far out in the tails


@dataclass
class UnitTrace:
    """A unit's value after each character of a text.

    Attributes:
        characters: the text the model read (after preprocessing), one entry per character.
        values: (n_characters,) the text's feature unit after the character's last byte: what the feature would be
            if the text ended there.
        unit, pooling: which unit of which feature (a pooling mode: ``"final_cell"``, ``"final_hidden"``, ``"mean"``).
    """

    characters: list[str]
    values: np.ndarray
    unit: int
    pooling: str = "final_cell"


def unit_trace(model, text: str, unit: int, *, pooling: str | None = None, preprocess: str = "openai",
               max_bytes: int | None = None) -> UnitTrace:
    """Unit ``unit`` of the text's feature in ``pooling`` (``None``: the model's own; any mode the model offers, as
    :class:`~bytezoo.zoo.recurrent_lm.TextPooling` reads it) after each character of ``text``: for a final state the
    state there, for ``"mean"`` the mean so far.

    ``max_bytes`` keeps only the start of long texts (a plot can show only so much). Multi-byte characters get the value
    after their last byte; bytes that are not valid UTF-8 show as U+FFFD.
    """
    import torch

    from bytezoo.zoo.recurrent_lm import TextPooling

    body = recurrent_body(model)
    reader = TextPooling(body, pooling)
    if not 0 <= unit < body.config.hidden_size:
        raise ValueError(f"unit {unit} is outside the model's {body.config.hidden_size} units")
    encoded = text_to_bytes(text, preprocess)[:max_bytes]
    if not encoded:
        return UnitTrace([], np.zeros(0), unit, reader.mode)
    ids = torch.tensor([list(encoded)], dtype=torch.long, device=body.device)  # (1, T)
    with torch.inference_mode():
        out = body(ids, return_dict=True, **reader.forward_options())
    sequence = reader.prefix_features(out)[0, :, unit].cpu().numpy()  # (T,)
    characters, values = [], []
    position = 0
    decoded = encoded.decode("utf-8", errors="surrogateescape")
    for character in decoded:
        width = 1 if "\udc80" <= character <= "\udcff" else len(character.encode("utf-8"))
        position += width
        characters.append("\ufffd" if width == 1 and "\udc80" <= character <= "\udcff" else character)
        values.append(sequence[position - 1])
    return UnitTrace(characters, np.asarray(values, dtype=np.float64), unit, reader.mode)


def describe_units(classifier, features: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None,
                   units: Sequence[int] | None = None) -> list[dict]:
    """What each unit (default: the classifier's ``top_units_``) says about the classes, from ``features`` and
    ``labels`` of one split (the training split in ``bytezoo transfer``).

    Per unit: ``unit``, ``importance`` (the L2 norm of its weights), ``weights`` (one per output column: for a binary
    task the weight toward the second class), ``toward`` ({class: +1 or -1 or 0}: whether higher values of the unit
    raise that class's score), ``range`` ({class: [5th, 95th percentile] of the unit over that class's texts}; a
    multi-label "class" is the texts holding that label) and ``steer`` ({class: a value to hold the unit at to push
    generation toward that class: the class's 95th percentile where higher values favour it, its 5th where lower
    values do, its median where the weight is 0}). ``class_names`` names the columns of a multi-label task.
    """
    task = classifier.task_
    classes = ([str(name) for name in class_names] if task == "multilabel" and class_names is not None
               else [str(value) for value in classifier.classes_])
    described = []
    for unit in (classifier.top_units_ if units is None else units):
        unit = int(unit)
        weights = classifier.coef_[:, unit]
        if task == "binary":
            directions = [-np.sign(weights[0]), np.sign(weights[0])]
        else:
            directions = [np.sign(weight) for weight in weights]
        ranges, steer, toward = {}, {}, {}
        for index, name in enumerate(classes):
            members = labels[:, index] == 1 if task == "multilabel" else labels == classifier.classes_[index]
            values = features[members, unit]
            if values.size == 0:
                continue
            low, high = (float(v) for v in np.percentile(values, PERCENTILES))
            ranges[name] = [low, high]
            toward[name] = int(directions[index])
            steer[name] = high if directions[index] > 0 else low if directions[index] < 0 else float(np.median(values))
        described.append({"unit": unit, "importance": float(np.linalg.norm(weights)),
                          "weights": [float(w) for w in weights], "toward": toward, "range": ranges, "steer": steer})
    return described


def format_units(described: list[dict], split: str = "train") -> str:
    """:func:`describe_units`' result as lines to print: each unit's weights with their signs, and its range per
    class."""
    lines = [f"top units: their weights, the classes their higher values favour, and their {PERCENTILES[0]:g}th-"
             f"{PERCENTILES[1]:g}th percentile per class on the {split} split"]
    for entry in described:
        favoured = ", ".join(name for name, sign in entry["toward"].items() if sign > 0) or "none"
        ranges = "  ".join(f"{name} [{low:.3g}, {high:.3g}]" for name, (low, high) in entry["range"].items())
        weights = "/".join(f"{w:+.3g}" for w in entry["weights"])
        lines.append(f"  unit {entry['unit']:>5}  weight {weights}  higher favours {favoured}  |  {ranges}")
    return "\n".join(lines)


__all__ = ["PERCENTILES", "UnitTrace", "describe_units", "format_units", "unit_trace"]
