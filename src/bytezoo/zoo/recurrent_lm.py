"""The recurrent-LM contract, written once: what every zoo model shares (outputs, input checks, the state, the causal-LM
head and its generation hooks).

Each model folder carries a generated copy of this file (``bytezoo/zoo/<family>/recurrent_lm.py``) and imports it
relatively, so that ``save_pretrained`` ships it beside ``modeling_<family>.py`` and ``trust_remote_code`` loads a
checkpoint where bytezoo is not installed (transformers copies a model file's relative imports, not imports from a
parent package). Edit this file, then run ``python -m bytezoo.zoo.copies`` to rewrite the copies;
``tests/test_zoo_copies.py`` fails while a copy differs. Only torch and transformers are imported here.

**The state contract.** A model's ``state`` is a tuple of tensors whose names are the class attribute
``state_names``; dimension 1 of every part is the batch (the text streams), so a state is sliced, reordered for beam
search, and dealt across processes along dimension 1 without knowing the family. ``unit_states`` names the parts of
shape (num_layers, B, hidden_size) that hold one value per unit: those are the per-unit features (``final_cell`` is the
last layer of the part ``"cell"``) and the units steered generation can hold. The state is float32 (float64 for a
float64 model) whatever the compute dtype, so carrying it across calls loses nothing under autocast.

=============  ===========================  ==============================================================
family         ``state_names``              ``unit_states``
=============  ===========================  ==============================================================
mLSTM, LSTM    ``("hidden", "cell")``       both, each (num_layers, B, H)
GRU            ``("hidden",)``              ``("hidden",)``
Transformer    ``("key", "value",           none: a window of cached keys and values, and each slot's
               "position")``                position in its document (-1 = empty)
=============  ===========================  ==============================================================

**What a family writes.** A body class (subclass of :class:`RecurrentModel`) with ``state_shapes(batch)`` and
``_forward_layers(...)``; a causal-LM class (subclass of :class:`RecurrentForCausalLM`) that names its body class in
``body_class``; a config; one preset registration. The masks' meaning is the same for every family:
``attention_mask`` 0 = padding, which leaves the state as it was (left or right padding never changes a text's state);
``reset_mask`` True = a document starts here, read as if from the initial state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

try:  # hub URLs and strict loading; absent when loaded through trust_remote_code without bytezoo
    from bytezoo.zoo.modeling_utils import ByteZooModelMixin
except ModuleNotFoundError as error:
    if not (error.name or "").startswith("bytezoo"):
        raise

    class ByteZooModelMixin:
        pass


State = tuple[Tensor, ...]  # named by the model's ``state_names``; dim 1 of every part is the batch


@dataclass
class RecurrentModelOutput(ModelOutput):
    """Outputs of a zoo model's body.

    Args:
        last_hidden_state: (B, T, H) every step's output of the last layer.
        state: the final state (see ``state_names``); pass it back as ``state=`` to continue the text.
        hidden_states: per layer, (B, T, H) every step's output (when ``output_hidden_states=True``).
        cell_states: per layer, (B, T, H) every step's cell state (when ``output_cell_states=True``; families with a
            ``"cell"`` state only).
    """

    last_hidden_state: Tensor | None = None
    state: State | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    cell_states: tuple[Tensor, ...] | None = None


@dataclass
class RecurrentCausalLMOutput(ModelOutput):
    """Outputs of a zoo causal LM: ``loss`` (scalar, nats per byte), ``logits`` (B, T, V), and the fields of
    :class:`RecurrentModelOutput` except ``last_hidden_state``."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    state: State | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    cell_states: tuple[Tensor, ...] | None = None


# --- the state, for callers that hold one: slicing, joining, naming ----------------------------------------------------
def select_streams(state: State, index: slice | Tensor) -> State:
    """The streams ``index`` (a slice or a (B',) index tensor) of every part: dim 1 is the batch."""
    if isinstance(index, slice):
        return tuple(part[:, index] for part in state)
    return tuple(part.index_select(1, index.to(part.device)) for part in state)


def concat_streams(states: list[State]) -> State:
    """States of disjoint stream sets joined along the batch (dim 1), in the order given."""
    return tuple(torch.cat(parts, dim=1) for parts in zip(*states))


def state_part(model, state: State, name: str) -> Tensor:
    """The part ``name`` of ``state``; a clear error naming the parts the model has otherwise."""
    names = tuple(model.state_names)
    if name not in names:
        raise ValueError(f"{type(model).__name__} has no {name!r} state; its state parts are {names}")
    return state[names.index(name)]


def _state_dtype(model) -> torch.dtype:
    return torch.promote_types(model.dtype, torch.float32)  # float32 unless the model itself is float64


class RecurrentPreTrainedModel(ByteZooModelMixin, PreTrainedModel):
    """What every zoo model class shares; a family's ``*PreTrainedModel`` subclasses it and sets ``config_class``."""

    base_model_prefix = "model"
    main_input_name = "input_ids"
    _is_stateful = True  # the state is carried in `state`, not in a transformers Cache
    supports_gradient_checkpointing = False

    state_names: tuple[str, ...] = ()  # the parts of `state`, in order
    unit_states: tuple[str, ...] = ()  # parts of shape (num_layers, B, hidden_size): per-unit features

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Embeddings from ``config.initializer_range``; linear layers with 1/sqrt(fan-in) weights and zero bias (the
        output head included). A family handles its own layer types first and defers the rest here."""
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=module.in_features**-0.5)
            if module.bias is not None:
                init.zeros_(module.bias)


class RecurrentModel(RecurrentPreTrainedModel):
    """A family's body: checks the inputs and the state once, then runs ``_forward_layers``.

    A family implements ``state_shapes(batch)`` (one shape per state part; ``None`` for a dimension of any size) and
    ``_forward_layers(input_ids, state, hold, reset, output_hidden_states, output_cell_states)``, which returns
    ``(last_hidden_state, new_state, hidden_states, cell_states)``; ``hold`` and ``reset`` are (B, T) bool or None.
    """

    _auto_class = "AutoModel"

    def state_shapes(self, batch_size: int) -> tuple[tuple[int | None, ...], ...]:
        raise NotImplementedError

    def initial_state(self, batch_size: int, dtype: torch.dtype | None = None) -> State:
        """The state before any byte: zeros of ``state_shapes`` (a dimension of any size starts empty)."""
        dtype = dtype or _state_dtype(self)
        return tuple(
            torch.zeros([0 if size is None else size for size in shape], dtype=dtype, device=self.device)
            for shape in self.state_shapes(batch_size)
        )

    def _check_state(self, state: State, batch: int) -> None:
        expected = self.state_shapes(batch)
        got = tuple(tuple(part.shape) for part in state) if isinstance(state, (tuple, list)) else None
        fits = got is not None and len(got) == len(expected) and all(
            len(g) == len(e) and all(s is None or s == n for s, n in zip(e, g)) for g, e in zip(got, expected)
        )
        if not fits:
            shown = ", ".join(str(tuple("any" if s is None else s for s in shape)) for shape in expected)
            raise ValueError(f"state must be {self.state_names} with shapes {shown}; got {got}")

    def forward(
        self,
        input_ids: torch.LongTensor,
        state: State | None = None,
        attention_mask: Tensor | None = None,
        reset_mask: Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_cell_states: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RecurrentModelOutput | tuple:
        r"""
        Args:
            input_ids: (B, T) byte values.
            state: the state from a previous call (parts named by ``state_names``); the initial state when ``None``.
            attention_mask: (B, T), 1 for real bytes and 0 for padding. Padding positions leave the state unchanged,
                so left or right padding never changes a text's final state.
            reset_mask: (B, T) bool; ``True`` starts a document at that position (read as from the initial state).
            use_cache: return the final ``state`` (default ``config.use_cache``).
            output_hidden_states: also return every layer's outputs.
            output_cell_states: also return every layer's cell states (the papers' features are the final cell).
        """
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a (batch, time) tensor of byte values; got {None if input_ids is None else tuple(input_ids.shape)}")
        batch, steps = input_ids.shape
        if steps == 0:
            raise ValueError("input_ids has no positions (T = 0)")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if output_cell_states and "cell" not in self.state_names:
            raise ValueError(f"{type(self).__name__} has no cell state (its state parts are {self.state_names})")

        hold = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; input_ids has {tuple(input_ids.shape)}")
            hold = attention_mask == 0  # (B, T)
            input_ids = input_ids.masked_fill(hold, 0)  # padding ids (e.g. <pad> = 256) are never looked up
            if not hold.any():
                hold = None
        if reset_mask is not None:
            if reset_mask.shape != input_ids.shape:
                raise ValueError(f"reset_mask has shape {tuple(reset_mask.shape)}; input_ids has {tuple(input_ids.shape)}")
            reset_mask = reset_mask.bool() if reset_mask.any() else None
        if input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size:
            raise ValueError(
                f"input_ids hold values outside [0, {self.config.vocab_size}) at unmasked positions "
                f"(min {int(input_ids.min())}, max {int(input_ids.max())})"
            )
        if state is None:
            state = self.initial_state(batch)
        self._check_state(state, batch)

        last, new_state, hiddens, cells = self._forward_layers(
            input_ids, tuple(state), hold, reset_mask, bool(output_hidden_states), bool(output_cell_states)
        )
        output = RecurrentModelOutput(
            last_hidden_state=last,
            state=new_state if use_cache else None,
            hidden_states=tuple(hiddens) if output_hidden_states else None,
            cell_states=tuple(cells) if output_cell_states else None,
        )
        return output if return_dict else output.to_tuple()


def run_in_segments(run, inputs: Tensor, state: State, reset: Tensor | None, hold: Tensor | None):
    """Honour reset and hold masks around ``run``, a multi-layer recurrence without per-position masks (``nn.LSTM``,
    ``nn.GRU``): the time axis is split wherever any row's mask changes, so that within a segment every row either
    runs or holds, and rows that reset start it from zeros. Resets (document boundaries) and padding runs are rare,
    so the library kernel still does nearly all the work.

    ``run(inputs (B, T', E), state) -> (out (B, T', H), new_state, hiddens, cells)``, every state part
    (num_layers, B, H), ``hiddens``/``cells`` per-layer (B, T', H) lists (possibly empty). Returns the same for all T.
    """
    if reset is None and hold is None:
        return run(inputs, state)
    batch, steps = inputs.shape[:2]
    starts = torch.zeros(steps, dtype=torch.bool, device=inputs.device)
    starts[0] = True
    if reset is not None:
        starts |= reset.any(dim=0)
    if hold is not None and steps > 1:
        starts[1:] |= (hold[:, 1:] != hold[:, :-1]).any(dim=0)
    bounds = starts.nonzero().flatten().tolist() + [steps]
    outs, segment_hiddens, segment_cells = [], [], []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if reset is not None:
            keep = (~reset[:, start]).view(1, batch, 1)
            state = tuple(part * keep.to(part.dtype) for part in state)
        out, new_state, hiddens, cells = run(inputs[:, start:end], state)
        if hold is not None:
            held = hold[:, start]  # constant over the segment for each row
            held_rows = held.view(batch, 1, 1)
            new_state = tuple(torch.where(held.view(1, batch, 1), old, new) for old, new in zip(state, new_state))
            last_hidden = state[0]  # the part "hidden" comes first in both families that use this
            out = torch.where(held_rows, last_hidden[-1].unsqueeze(1), out)
            hiddens = [torch.where(held_rows, last_hidden[i].unsqueeze(1), s) for i, s in enumerate(hiddens)]
            cells = [torch.where(held_rows, state[1][i].unsqueeze(1), s) for i, s in enumerate(cells)]
        state = new_state
        outs.append(out)
        segment_hiddens.append(hiddens)
        segment_cells.append(cells)
    hiddens = [torch.cat(per_layer, dim=1) for per_layer in zip(*segment_hiddens)]
    cells = [torch.cat(per_layer, dim=1) for per_layer in zip(*segment_cells)]
    return torch.cat(outs, dim=1), state, hiddens, cells


class RecurrentForCausalLM(RecurrentPreTrainedModel, GenerationMixin):
    """A family's body plus a linear next-byte head; the state plays the role of the KV cache in ``generate``.

    A family subclasses it together with its ``*PreTrainedModel`` and sets ``body_class``.
    """

    # save_pretrained copies the model's file (and this one) beside the weights and writes `auto_map`, so the
    # checkpoint loads with trust_remote_code where bytezoo is absent.
    _auto_class = "AutoModelForCausalLM"
    _tied_weights_keys: dict[str, str] = {}
    body_class: type[RecurrentModel]

    def __init__(self, config):
        super().__init__(config)
        self.model = self.body_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.body_class.state_names

    @property
    def unit_states(self) -> tuple[str, ...]:
        return self.body_class.unit_states

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor,
        state: State | None = None,
        attention_mask: Tensor | None = None,
        reset_mask: Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_cell_states: bool = False,
        return_dict: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs,
    ) -> RecurrentCausalLMOutput | tuple:
        r"""Arguments as :meth:`RecurrentModel.forward`, plus:

        Args:
            labels: (B, T) next-byte targets in the transformers causal-LM convention (shifted inside; -100 ignored).
                Pass ``shift_labels=`` (already aligned, e.g. the first byte of the next window at the last position)
                to skip the shift, as truncated backprop across windows needs.
            logits_to_keep: compute logits only for the last ``logits_to_keep`` positions (0 = all).
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.model(
            input_ids,
            state=state,
            attention_mask=attention_mask,
            reset_mask=reset_mask,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_cell_states=output_cell_states,
            return_dict=True,
        )
        hidden = outputs.last_hidden_state  # (B, T, H)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])  # (B, T', V)
        loss = None
        if labels is not None or kwargs.get("shift_labels") is not None:
            if kwargs.get("shift_labels") is not None:  # a slice of a window is typical; the loss needs it flat
                kwargs["shift_labels"] = kwargs["shift_labels"].contiguous()
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        output = RecurrentCausalLMOutput(
            loss=loss,
            logits=logits,
            state=outputs.state,
            hidden_states=outputs.hidden_states,
            cell_states=outputs.cell_states,
        )
        return output if return_dict else output.to_tuple()

    # --- generation: the state plays the role of the KV cache -------------------------------------------------------
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # no DynamicCache: the state is carried in the `state` field

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        state: State | None = None,
        attention_mask: Tensor | None = None,
        use_cache: bool = True,
        **kwargs,
    ) -> dict:
        if next_sequence_length is not None and use_cache and state is not None:  # decoding: feed new bytes only
            input_ids = input_ids[:, -next_sequence_length:]
            if attention_mask is not None:
                attention_mask = attention_mask[:, -next_sequence_length:]
        model_inputs: dict[str, Any] = {
            "input_ids": input_ids.contiguous(),
            "state": state,
            "attention_mask": attention_mask,
            "use_cache": use_cache,
        }
        for key in ("logits_to_keep", "output_cell_states", "output_hidden_states"):
            if key in kwargs:
                model_inputs[key] = kwargs[key]
        return model_inputs

    def _update_model_kwargs_for_generation(
        self, outputs, model_kwargs: dict, is_encoder_decoder: bool = False, num_new_tokens: int = 1
    ) -> dict:
        # Carry the state from step t to step t+1 ourselves, as RWKV does inside transformers. Up to 5.23 the base
        # class copied any output field named like a cache (`past_key_values`, `cache_params`, `state`, ...); 5.24
        # copies only `cache`, so without this every step restarted from no state. Why not the `Cache` route (Mamba's
        # `cache=`): its argument was renamed in 5.24 and `cache_utils.py` changed in every minor release 5.17-5.24,
        # while this hook and the tuple `state` have kept their meaning in all of them. The same `state` key is what
        # beam search reorders (`_reorder_cache`) and what `return_dict_in_generate` hands back.
        if "state" in outputs and outputs["state"] is not None:
            model_kwargs["state"] = outputs["state"]
        return super()._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder, num_new_tokens)

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None, **model_kwargs):
        state = model_kwargs.pop("state", None)
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)
        if state is not None:  # the batch is dim 1 of every part
            model_kwargs["state"] = tuple(part.repeat_interleave(expand_size, dim=1) for part in state)
        return input_ids, model_kwargs

    def _reorder_cache(self, state: State | None, beam_idx: torch.LongTensor) -> State | None:
        if state is None:  # use_cache=False: nothing is carried
            return None
        return select_streams(state, beam_idx)


__all__ = [
    "State",
    "RecurrentModelOutput",
    "RecurrentCausalLMOutput",
    "RecurrentPreTrainedModel",
    "RecurrentModel",
    "RecurrentForCausalLM",
    "run_in_segments",
    "select_streams",
    "concat_streams",
    "state_part",
]
