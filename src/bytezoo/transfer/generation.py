"""Sampling bytes from a zoo language model, optionally with one unit held at a fixed value (the papers' steered
reviews: Radford et al. 2017 fixed the sentiment unit to +/-1 to write positive or negative reviews).

>>> generate_steered(model, "This movie", neuron=2388, value=1.0, max_new_bytes=200)  # doctest: +SKIP

What is held: the unit of the **cell** state ``c`` of the last layer (``hold="cell"``, as the papers did), or of its
hidden state ``h`` (``hold="hidden"``). After every step, prompt bytes included, the unit is overwritten with ``value``
before the next step reads the state. The step's own prediction was already computed from the state before the
overwrite (``h = o * tanh(c)`` uses the un-held ``c``), so holding the cell acts from the next byte on.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np

from bytezoo.errors import InvalidArgumentError

from .config import HOLDS
from .featurizer import _check_device, load_language_model, recurrent_body


@dataclass
class Generation:
    """Generated texts, and per step the held unit's value in the carried state (to check it was held).

    Attributes:
        texts: prompt + continuation, decoded as UTF-8 (invalid bytes as U+FFFD), one per sample.
        new_bytes: the sampled bytes only, one per sample.
        held_values: (num_samples, steps) the unit in the state carried to the next step, or None without ``neuron``.
    """

    texts: list[str]
    new_bytes: list[bytes]
    held_values: np.ndarray | None = None


def generate_steered(
    model,
    prompt: str = "",
    *,
    neuron: int | None = None,
    value: float = 1.0,
    hold: str = "cell",
    max_new_bytes: int = 200,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    prefix: str = "\n ",
    device: str | None = None,
) -> Generation:
    """Sample ``max_new_bytes`` bytes after ``prompt``, holding ``neuron`` at ``value`` when given.

    Args:
        model: a zoo causal LM, or a checkpoint directory / hub URL.
        prompt: the start of the text.
        neuron, value, hold: the unit to hold, its value, and which state (``"cell"`` or ``"hidden"``).
        num_samples: independent samples, generated as one batch.
        temperature: 0 for greedy; otherwise the softmax temperature.
        top_k: sample among the ``top_k`` likeliest bytes only.
        seed: for reproducible samples.
        prefix: read before the prompt; ``"\\n "`` is what the original encoder put before every review.
        device: run the model (and the held unit) on this torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``); ``None``
            leaves it where it is. A model object on another device is copied there, never moved.
    """
    import torch

    from bytezoo.threads import ensure_threads

    if device is not None:
        _check_device(device)  # before loading: a missing GPU is named before a checkpoint is downloaded
    language_model = load_language_model(model)
    if device is not None:
        target = torch.device(device)
        if target.type == "cuda" and target.index is None:  # "cuda" means the current GPU, which .device names
            target = torch.device("cuda", torch.cuda.current_device())
        if language_model.device != target:
            if not isinstance(model, (str, os.PathLike)):
                language_model = copy.deepcopy(language_model)  # never move the caller's model
            language_model = language_model.to(target)
    language_model = language_model.eval()
    if not hasattr(language_model, "lm_head"):
        raise TypeError("generation needs a causal LM (with an lm_head), not a bare recurrent body")
    body = recurrent_body(language_model)
    ensure_threads(body.device)  # a thread count that holds up when other processes share the cores
    hidden = body.config.hidden_size
    if neuron is not None and not 0 <= neuron < hidden:
        raise InvalidArgumentError(f"neuron {neuron} is outside the model's {hidden} units; choose one in 0..{hidden - 1}")
    if hold not in HOLDS:
        raise InvalidArgumentError(f"hold must be one of {', '.join(HOLDS)}; got {hold!r}")
    if neuron is not None and hold not in body.unit_states:
        raise InvalidArgumentError(
            f"{type(body).__name__} has no per-unit {hold} state to hold (its per-unit states: "
            f"{list(body.unit_states) or 'none'}); steering needs a recurrent model"
        )
    if temperature < 0:
        raise InvalidArgumentError(f"temperature must be >= 0; got {temperature}")
    if top_k is not None and not 1 <= top_k <= 256:
        raise InvalidArgumentError(f"top_k must be in [1, 256]; got {top_k}")
    if num_samples < 1 or max_new_bytes < 0:
        raise InvalidArgumentError(f"num_samples must be >= 1 and max_new_bytes >= 0; got {num_samples} and {max_new_bytes}")
    generator = torch.Generator(device=body.device)
    if seed is not None:
        generator.manual_seed(seed)
    state_index = body.state_names.index(hold) if neuron is not None else None
    context = (prefix + prompt).encode("utf-8")
    if not context:
        context = b" "  # the model needs one byte to predict from
    state = body.initial_state(num_samples)  # parts named by body.state_names; the held one is (L, B, H)
    held: list[np.ndarray] = []

    def step(byte_ids):  # (B,) -> (B, 256) logits of the next byte
        nonlocal state
        out = body(byte_ids.view(-1, 1), state=state, return_dict=True)
        logits = language_model.lm_head(out.last_hidden_state[:, -1])  # (B, V)
        state = tuple(part.clone() for part in out.state)
        if neuron is not None:
            state[state_index][-1, :, neuron] = value
            held.append(state[state_index][-1, :, neuron].float().cpu().numpy())
        return logits

    sampled = []
    with torch.inference_mode():
        # The prompt is read one byte at a time so that the unit is held while reading it too.
        for byte in context:
            logits = step(torch.full((num_samples,), byte, dtype=torch.long, device=body.device))
        for _ in range(max_new_bytes):
            logits = logits[:, :256].float()
            if temperature == 0:
                next_ids = logits.argmax(dim=-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    threshold = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < threshold, float("-inf"))
                next_ids = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)  # (B,)
            sampled.append(next_ids)
            logits = step(next_ids)
    new = torch.stack(sampled, dim=1).cpu().tolist() if sampled else [[] for _ in range(num_samples)]
    new_bytes = [bytes(row) for row in new]
    texts = [(prompt.encode("utf-8") + row).decode("utf-8", errors="replace") for row in new_bytes]
    held_values = np.stack(held, axis=1) if held else None
    return Generation(texts=texts, new_bytes=new_bytes, held_values=held_values)


__all__ = ["Generation", "generate_steered"]
