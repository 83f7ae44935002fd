"""Sampling bytes from a zoo language model, optionally with one unit held at a fixed value (the papers' steered
reviews: Radford et al. 2017 fixed the sentiment unit to +/-1 to write positive or negative reviews).

>>> generate_steered(model, "This movie", neuron=2388, value=1.0, max_new_bytes=200)  # doctest: +SKIP

What is held: the unit of a per-unit state of the last layer (``model.unit_states``): the **cell** state ``c``
(``hold="cell"``, as the papers did) or the hidden state ``h`` (``hold="hidden"``; the GRU's only one). By default the
state the model's own feature reads (:func:`bytezoo.zoo.recurrent_lm.default_pooling`: the cell where the family has
one, else the hidden state). A family without per-unit states (the Transformer, whose state is its attention window's
keys and values) cannot be steered this way and is refused. After every step, prompt bytes included, the unit is
overwritten with ``value`` before the next step reads the state. The step's own prediction was already computed from
the state before the overwrite (``h = o * tanh(c)`` uses the un-held ``c``), so holding the cell acts from the next
byte on.

Which value: it depends on the unit. A unit whose classifier weight is negative is *low* for the class it points to,
so +1 may steer the wrong way, and a unit's usual range may lie far from +/-1. ``bytezoo transfer`` prints each top
unit's weights and its 5th-95th percentile per class, and stores a value per class in ``report.json``
(``steering``); :func:`steering_from_pipeline` (``bytezoo generate --pipeline DIR``) reads it.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np

from bytezoo.errors import InvalidArgumentError

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


def held_state(body, hold: str | None = None) -> str:
    """The per-unit state part of ``body`` to hold a unit in: ``hold`` if the family has it, by default the one its own
    feature reads (:class:`~bytezoo.zoo.recurrent_lm.TextPooling`'s ``unit_state``); a one-line refusal otherwise."""
    from bytezoo.zoo.recurrent_lm import TextPooling

    name, states = type(body).__name__, tuple(body.unit_states)
    if not states:
        raise InvalidArgumentError(f"{name} has no per-unit state to hold a unit in (its state is "
                                   f"{', '.join(body.state_names)}): steering needs a family with per-unit states, "
                                   "such as the mLSTM, LSTM or GRU")
    if hold is None:
        return TextPooling(body).unit_state or states[0]
    if hold not in states:
        options = " or ".join(f"--hold {state}" for state in states)
        raise InvalidArgumentError(f"{name} has no per-unit {hold} state to hold; its per-unit states: "
                                   f"{', '.join(states)} ({options}; hold= in Python)")
    return hold


def steering_from_pipeline(dir_or_url: str, toward: str | None = None) -> dict:
    """What a ``bytezoo transfer`` folder (or its hub URL) says to steer with: ``{"model", "unit", "state", "value",
    "class", "why"}``: its model, its top unit, the per-unit state its feature reads (``None`` where the family has
    none), and the value toward ``toward`` (a class; default: the one the unit's high values favour), from its
    report's ``steering``."""
    from bytezoo.untrusted import jsonio

    from .classifier import SparseLogisticClassifier
    from .pipeline import PipelineError, _resolve_directory, pipeline_model

    directory = _resolve_directory(dir_or_url)
    _, metadata = SparseLogisticClassifier.load(directory)
    try:
        with open(os.path.join(directory, "report.json"), "rb") as handle:  # maybe from a hub: read strictly
            steering = jsonio.loads(handle.read()).get("steering")
    except FileNotFoundError:
        steering = None
    except (ValueError, AttributeError) as error:
        raise PipelineError(f"{dir_or_url}: report.json is not a bytezoo transfer report ({error})") from None
    if not isinstance(steering, dict) or not isinstance(steering.get("values"), dict):
        raise PipelineError(f"{dir_or_url}: no steering values (report.json written by `bytezoo transfer` since they "
                            "were added); give --model, --neuron and --value instead, or run bytezoo transfer again")
    values = steering["values"]
    chosen = steering.get("class") if toward is None else str(toward)
    if chosen not in values:
        raise InvalidArgumentError(f"--toward {chosen!r}: the pipeline's classes are {', '.join(values)}")
    sign = (steering.get("toward") or {}).get(chosen, 0)
    why = (f"toward {chosen!r}: that class's {'95th' if sign > 0 else '5th' if sign < 0 else '50th'} percentile on the "
           f"{steering.get('split', 'train')} split, from {dir_or_url}")
    return {"model": pipeline_model(directory, metadata, shown=dir_or_url), "unit": int(steering["unit"]),
            "state": steering.get("state"), "value": float(values[chosen]), "class": chosen, "why": why}


def generate_steered(
    model,
    prompt: str = "",
    *,
    neuron: int | None = None,
    value: float = 1.0,
    hold: str | None = None,
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
        neuron, value, hold: the unit to hold, its value, and which per-unit state (``"cell"`` or ``"hidden"``;
            ``None``: the one the model's own feature reads).
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

    _check_sampling(temperature, top_k, num_samples, max_new_bytes)
    language_model = _causal_lm_on(model, device)
    body = recurrent_body(language_model)
    ensure_threads(body.device)  # a thread count that holds up when other processes share the cores
    hidden = body.config.hidden_size
    if neuron is not None and not 0 <= neuron < hidden:
        raise InvalidArgumentError(
            f"neuron {neuron} is outside the model's {hidden} units; choose one in 0..{hidden - 1}")
    if neuron is not None:
        hold = held_state(body, hold)
    generator = torch.Generator(device=body.device)
    if seed is not None:
        generator.manual_seed(seed)
    state_index = body.state_names.index(hold) if neuron is not None else None  # hold: checked above
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
            next_ids = _next_bytes(logits, temperature, top_k, generator)  # (B,)
            sampled.append(next_ids)
            logits = step(next_ids)
    new = torch.stack(sampled, dim=1).cpu().tolist() if sampled else [[] for _ in range(num_samples)]
    new_bytes = [bytes(row) for row in new]
    texts = [(prompt.encode("utf-8") + row).decode("utf-8", errors="replace") for row in new_bytes]
    held_values = np.stack(held, axis=1) if held else None
    return Generation(texts=texts, new_bytes=new_bytes, held_values=held_values)


def _check_sampling(temperature: float, top_k: int | None, num_samples: int, max_new_bytes: int) -> None:
    if temperature < 0:
        raise InvalidArgumentError(f"temperature must be >= 0; got {temperature}")
    if top_k is not None and not 1 <= top_k <= 256:
        raise InvalidArgumentError(f"top_k must be in [1, 256]; got {top_k}")
    if num_samples < 1 or max_new_bytes < 0:
        raise InvalidArgumentError(
            f"num_samples must be >= 1 and max_new_bytes >= 0; got {num_samples} and {max_new_bytes}")


def _causal_lm_on(model, device: str | None):
    """The causal LM ``model`` names (an object, a checkpoint directory or a hub URL), in eval mode, on ``device``
    (``None``: where it is). A model object on another device is copied there, never moved."""
    import torch

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
    if not hasattr(language_model, "lm_head"):
        raise TypeError("generation needs a causal LM (with an lm_head), not a bare recurrent body")
    return language_model.eval()


def _next_bytes(logits, temperature: float, top_k: int | None, generator):
    """(B,) the next byte of each sample from its (B, V) logits: the likeliest at temperature 0, else sampled at
    ``temperature`` among the ``top_k`` likeliest (all 256 bytes without it)."""
    import torch

    logits = logits[:, :256].float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        threshold = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


__all__ = ["Generation", "generate_steered", "held_state", "steering_from_pipeline"]
