"""One unit at a time: its value after every character of a text (the papers' per-character heatmaps).

>>> trace = unit_trace(model, "This film was great fun", unit=2388)   # doctest: +SKIP
>>> trace.characters[-3:], trace.values[-3:]                          # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .featurizer import recurrent_body, text_to_bytes


@dataclass
class UnitTrace:
    """A unit's value after each character of a text.

    Attributes:
        characters: the text the model read (after preprocessing), one entry per character.
        values: (n_characters,) the unit after the character's last byte.
        unit, state: which unit, and ``"cell"`` or ``"hidden"``.
    """

    characters: list[str]
    values: np.ndarray
    unit: int
    state: str = "cell"


def unit_trace(model, text: str, unit: int, *, preprocess: str = "openai", state: str = "cell", max_bytes: int | None = None) -> UnitTrace:
    """The last layer's ``state`` (``"cell"`` or ``"hidden"``) unit ``unit`` after each character of ``text``.

    ``max_bytes`` keeps only the start of long texts (a plot can show only so much). Multi-byte characters get the value
    after their last byte; bytes that are not valid UTF-8 show as U+FFFD.
    """
    import torch

    body = recurrent_body(model)
    if not 0 <= unit < body.config.hidden_size:
        raise ValueError(f"unit {unit} is outside the model's {body.config.hidden_size} units")
    if state not in ("cell", "hidden"):
        raise ValueError(f"state must be 'cell' or 'hidden'; got {state!r}")
    encoded = text_to_bytes(text, preprocess)[:max_bytes]
    if not encoded:
        return UnitTrace([], np.zeros(0), unit, state)
    ids = torch.tensor([list(encoded)], dtype=torch.long, device=body.device)  # (1, T)
    with torch.inference_mode():
        out = body(ids, output_cell_states=state == "cell", output_hidden_states=state == "hidden", return_dict=True)
    sequence = (out.cell_states if state == "cell" else out.hidden_states)[-1][0, :, unit].float().cpu().numpy()  # (T,)
    characters, values = [], []
    position = 0
    decoded = encoded.decode("utf-8", errors="surrogateescape")
    for character in decoded:
        width = 1 if "\udc80" <= character <= "\udcff" else len(character.encode("utf-8"))
        position += width
        characters.append("\ufffd" if width == 1 and "\udc80" <= character <= "\udcff" else character)
        values.append(sequence[position - 1])
    return UnitTrace(characters, np.asarray(values, dtype=np.float64), unit, state)


__all__ = ["UnitTrace", "unit_trace"]
