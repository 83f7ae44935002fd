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

**A text's feature** (pooling) is written here once: the modes (:data:`POOLINGS`: the last layer's final cell state,
final hidden state, mean output), which a family offers (:func:`supported_poolings`) and its default
(:func:`default_pooling`), and how every caller reads one (:class:`TextPooling`): the classifier head, bytezoo's
featurizer, fine-tuning's probe, the unit traces and steered generation. A new mode is one entry of ``_POOLING_RULES``.

**What a family writes.** A body class (subclass of :class:`RecurrentModel`) with ``state_shapes(batch)`` and
``_forward_layers(...)``; a causal-LM class (subclass of :class:`RecurrentForCausalLM`) and a sequence-classification
class (subclass of :class:`RecurrentForSequenceClassification`), each naming its body class in ``body_class``; a
config (with the ``classifier_pooling`` and ``classifier_dropout`` fields); one preset registration.
The masks' meaning is the same for every family:
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

try:  # hub URLs, strict loading, user errors; absent when loaded through trust_remote_code without bytezoo
    from bytezoo.errors import InvalidArgumentError as _UserError
    from bytezoo.zoo.modeling_utils import ByteZooModelMixin
except ModuleNotFoundError as error:
    if not (error.name or "").startswith("bytezoo"):
        raise

    class ByteZooModelMixin:
        pass

    _UserError = ValueError


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
class RecurrentSequenceClassifierOutput(ModelOutput):
    """Outputs of a zoo sequence classifier: ``loss`` (scalar, fp32), ``logits`` (B, num_labels), ``pooled`` (B, H) the
    text features the head reads (fp32, before dropout), ``state`` the state after each text's last byte,
    ``hidden_states`` per layer (B, T, H) every byte's output (with ``output_hidden_states=True``)."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    pooled: Tensor | None = None
    state: State | None = None
    hidden_states: tuple[Tensor, ...] | None = None


@dataclass
class RecurrentCausalLMOutput(ModelOutput):
    """Outputs of a zoo causal LM: ``loss`` (scalar, nats per byte), ``logits`` (B, T, V), and the fields of
    :class:`RecurrentModelOutput` except ``last_hidden_state``."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    state: State | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    cell_states: tuple[Tensor, ...] | None = None


# --- the state, for callers that hold one: slicing, joining, naming ---------------------------------------------------
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
    # True where a ``reset_mask`` at any positions costs no more than plain steps (the recurrence restarts per position
    # inside its kernel), so callers may pack many short documents into each row (the featurizer does). False where
    # resets split the time axis (``run_in_segments`` around nn.LSTM/nn.GRU): packed rows would run step by step.
    resets_per_position: bool = False

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
            raise ValueError("input_ids must be a (batch, time) tensor of byte values; "
                             f"got {None if input_ids is None else tuple(input_ids.shape)}")
        batch, steps = input_ids.shape
        if steps == 0:
            raise ValueError("input_ids has no positions (T = 0)")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if output_cell_states and "cell" not in self.state_names:
            raise ValueError(f"{type(self).__name__} has no cell state (its state parts are {self.state_names})")

        # Traced for a graph (torch.export, torch.compile): no decision may read the values of the inputs, so the masks
        # are applied even where they mask nothing and the byte range is not checked (there is nothing to look at).
        traced = torch.compiler.is_compiling()
        hold = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; "
                                 f"input_ids has {tuple(input_ids.shape)}")
            hold = attention_mask == 0  # (B, T)
            input_ids = input_ids.masked_fill(hold, 0)  # padding ids (e.g. <pad> = 256) are never looked up
            if not traced and not hold.any():
                hold = None
        if reset_mask is not None:
            if reset_mask.shape != input_ids.shape:
                raise ValueError(f"reset_mask has shape {tuple(reset_mask.shape)}; "
                                 f"input_ids has {tuple(input_ids.shape)}")
            reset_mask = reset_mask.bool() if traced or reset_mask.any() else None
        if not traced and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
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
    Library recurrences want their state in the activations' dtype (autocast runs them in the autocast dtype), so
    ``run`` sees the state cast to ``inputs``' dtype and the state returned is cast back to the dtype it came in.
    """
    state_dtype = state[0].dtype
    state = tuple(part.to(inputs.dtype) for part in state)
    out, state, hiddens, cells = _segmented(run, inputs, state, reset, hold)
    return out, tuple(part.to(state_dtype) for part in state), hiddens, cells


def run_layers_in_segments(run_layer, num_layers: int, inputs: Tensor, state: State, reset: Tensor | None,
                           hold: Tensor | None):
    """:func:`run_in_segments` one layer at a time, for callers that return every layer's sequence: each layer's
    output, with the masks applied, is exactly what the next layer reads, so the per-layer ``hiddens`` returned are
    the tensors on the path to the loss (``retain_grad()`` on them sees a gradient), never copies beside it.
    ``run_layer(layer, inputs (B, T', I), state) -> (out, new_state, hiddens, cells)`` for one layer, its state
    parts (1, B, H)."""
    outputs, states, hiddens, cells = inputs, [], [], []
    for layer in range(num_layers):
        outputs, layer_state, layer_hiddens, layer_cells = run_in_segments(
            lambda x, s, layer=layer: run_layer(layer, x, s), outputs, tuple(part[layer : layer + 1] for part in state),
            reset, hold)
        states.append(layer_state)
        hiddens.append(outputs)
        cells.extend(layer_cells)
    return outputs, tuple(torch.cat(parts) for parts in zip(*states)), hiddens, cells


def _segmented(run, inputs: Tensor, state: State, reset: Tensor | None, hold: Tensor | None):
    """:func:`run_in_segments` once the state has the activations' dtype."""
    if reset is None and hold is None:
        return run(inputs, state)
    batch, steps = inputs.shape[:2]
    starts = torch.zeros(steps, dtype=torch.bool, device=inputs.device)
    starts[0] = True
    if reset is not None:
        starts |= reset.any(dim=0)
    if hold is not None and steps > 1:
        starts[1:] |= (hold[:, 1:] != hold[:, :-1]).any(dim=0)
    if torch.compiler.is_compiling():  # traced for a graph: no bounds read from the masks; a segment per position
        bounds = list(range(steps + 1))
    else:
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
        reset_mask: Tensor | None = None,
        **kwargs,
    ) -> dict:
        # reset_mask marks documents starting inside the prompt (B, prompt length); generated bytes continue the last
        # document, so it is read where the prompt is read and is False beyond it.
        if next_sequence_length is not None and use_cache and state is not None:  # decoding: feed new bytes only
            input_ids = input_ids[:, -next_sequence_length:]
            if attention_mask is not None:
                attention_mask = attention_mask[:, -next_sequence_length:]
            reset_mask = None
        elif reset_mask is not None and reset_mask.shape[1] != input_ids.shape[1]:  # without the cache: prompt + new
            if reset_mask.shape[1] > input_ids.shape[1]:
                raise ValueError(f"reset_mask has {reset_mask.shape[1]} positions; the prompt has {input_ids.shape[1]}")
            reset_mask = nn.functional.pad(reset_mask.bool(), (0, input_ids.shape[1] - reset_mask.shape[1]))
        model_inputs: dict[str, Any] = {
            "input_ids": input_ids.contiguous(),
            "state": state,
            "attention_mask": attention_mask,
            "reset_mask": reset_mask,
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

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None,
                                      **model_kwargs):
        state = model_kwargs.pop("state", None)
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids,
                                                                        **model_kwargs)
        if state is not None:  # the batch is dim 1 of every part
            model_kwargs["state"] = tuple(part.repeat_interleave(expand_size, dim=1) for part in state)
        return input_ids, model_kwargs

    def _reorder_cache(self, state: State | None, beam_idx: torch.LongTensor) -> State | None:
        if state is None:  # use_cache=False: nothing is carried
            return None
        return select_streams(state, beam_idx)


# --- pooling: a text's feature, written once --------------------------------------------------------------------------
# Each mode: (what it reads at every position, how a text's positions combine into its feature). "cell": the last
# layer's cell state; "output": the last layer's output, which is the last layer's hidden state in every family that
# has one. "last": the value after the text's last byte; "mean": the average over its bytes. Every reader of a text's
# feature (the classifier head, the featurizer, fine-tuning's probe, the unit traces, steering) goes through
# TextPooling below, so a new mode is one entry here.
_POOLING_RULES: dict[str, tuple[str, str]] = {
    "final_cell": ("cell", "last"),  # Radford et al.'s feature
    "final_hidden": ("output", "last"),
    "mean": ("output", "mean"),
}
POOLINGS = tuple(_POOLING_RULES)
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


class PoolingError(_UserError):
    """A pooling mode the model does not offer (a ``ValueError``; bytezoo's one-line user error where bytezoo is
    installed): the message names the modes it does offer."""


def _body_class_or_body(model):
    """What holds ``unit_states`` and ``state_names`` for ``model``: a body (class or instance) itself, else the
    ``body_class`` of a causal LM or classifier (class or instance)."""
    return getattr(model, "body_class", model)


def _unit_state_of(value: str, unit_states) -> str | None:
    """The per-unit state part a per-position value belongs to (the output is the hidden state), if the family has
    it."""
    part = "hidden" if value == "output" else value
    return part if part in unit_states else None


def supported_poolings(model) -> tuple[str, ...]:
    """The pooling modes ``model`` (a zoo body, causal LM or classifier; class or instance) offers: those whose
    per-position value it has (a cell state only where the family has one)."""
    unit_states = tuple(_body_class_or_body(model).unit_states)
    return tuple(mode for mode, (value, _) in _POOLING_RULES.items() if value == "output" or value in unit_states)


def default_pooling(model) -> str:
    """``model``'s own pooling: the final cell state where the family has a cell (Radford et al.'s feature), else the
    final hidden state where it has a per-unit hidden state (GRU), else (a family without per-unit states: the
    Transformer) the mean of the outputs, which reads the whole text where the last byte's output sees only its
    attention window."""
    unit_states = tuple(_body_class_or_body(model).unit_states)
    for mode, (value, reduction) in _POOLING_RULES.items():
        if reduction == "last" and _unit_state_of(value, unit_states) is not None:
            return mode
    return "mean"


def check_pooling(model, mode: str | None) -> str:
    """``mode`` checked against ``model`` (``None``: :func:`default_pooling`); a one-line :class:`PoolingError`
    naming the modes the model offers otherwise."""
    if mode is None:
        return default_pooling(model)
    supported = supported_poolings(model)
    if mode in supported:
        return mode
    body = _body_class_or_body(model)
    name = body.__name__ if isinstance(body, type) else type(body).__name__
    offered = f"{name} offers {', '.join(supported)} (default {default_pooling(model)})"
    if isinstance(mode, str) and mode in _POOLING_RULES:
        raise PoolingError(f"pooling {mode!r} reads a per-unit {_POOLING_RULES[mode][0]} state, which {name} does not "
                           f"have; {offered}")
    raise PoolingError(f"pooling {mode!r} is not a pooling mode ({', '.join(POOLINGS)}); {offered}")


Carry = tuple[Tensor, Tensor]  # (values (N + 1, H), byte counts (N + 1,)) fp32; row N collects padding


class TextPooling:
    """A text's feature in one pooling mode of one model, and every way bytezoo reads it: whole texts in chunks
    (:meth:`pool`: the classifier head), one text per row chunk by chunk (:meth:`read_rows`: the featurizer's sorted
    batches), texts packed back to back in rows (:meth:`read`: the featurizer's packed rows), the feature of every
    prefix (:meth:`prefix_features`: the unit traces), and the state part whose units it is (:attr:`unit_state`: what
    steering holds).

    Args:
        model: a zoo body, causal LM or classifier (class or instance).
        mode: one of :data:`POOLINGS` that the model offers (:func:`supported_poolings`); ``None``: its default
            (:func:`default_pooling`). Checked here: :class:`PoolingError` otherwise.

    Attributes:
        mode: the checked mode.
        unit_state: the per-unit state part whose units are the feature's units (``"cell"``, ``"hidden"``), or
            ``None`` for a family without per-unit states (the Transformer's units are its outputs').
        from_state: a text alone in its row has its feature in the final state (the last value of a per-unit state,
            which padding holds), so :meth:`read_rows` needs no per-position values.

    Sums are carried between chunks as a :data:`Carry` from :meth:`new_carry`; :meth:`features` turns it into
    (N, H). Every step is out of place, so autograd and activation checkpointing see plain functions of tensors. A text
    without bytes gets zeros.
    """

    def __init__(self, model, mode: str | None = None):
        self.mode = check_pooling(model, mode)
        self.value, self.reduction = _POOLING_RULES[self.mode]
        body = _body_class_or_body(model)
        self.unit_state = _unit_state_of(self.value, tuple(body.unit_states))
        self.from_state = self.reduction == "last" and self.unit_state is not None
        self._state_index = tuple(body.state_names).index(self.unit_state) if self.unit_state else None

    def __repr__(self) -> str:
        return f"TextPooling({self.mode!r})"

    def forward_options(self, rows: bool = False) -> dict:
        """Keyword arguments for the body's forward so that :meth:`values` can read ``out`` (for :meth:`read_rows`,
        ``rows=True``: nothing per position where the feature is in the final state)."""
        return {"output_cell_states": self.value == "cell" and not (rows and self.from_state)}

    def values(self, out) -> Tensor:
        """(B, T, H) what the mode reads at every position of ``out`` (a body's output, run with
        :meth:`forward_options`)."""
        return out.cell_states[-1] if self.value == "cell" else out.last_hidden_state

    def prefix_features(self, out) -> Tensor:
        """(B, T, H) fp32: at every position, the feature the text would have if it ended there (``out`` read from the
        text's first byte on, without padding)."""
        values = self.values(out).float()
        if self.reduction == "mean":
            read = torch.arange(1, values.shape[1] + 1, device=values.device, dtype=values.dtype)  # (T,)
            return values.cumsum(1) / read.view(1, -1, 1)
        return values

    @staticmethod
    def new_carry(n_texts: int, hidden_size: int, device=None) -> Carry:
        return (torch.zeros(n_texts + 1, hidden_size, dtype=torch.float32, device=device),
                torch.zeros(n_texts + 1, dtype=torch.float32, device=device))

    def read(self, carry: Carry, out, owner: Tensor) -> Carry:
        """``carry`` plus one chunk: ``owner`` (B, T) long holds the text each position belongs to (N, the carry's
        last row, for padding); a text's positions are contiguous within its row, and its chunks come in order."""
        totals, counts = carry
        values = self.values(out).float()  # (B, T, H)
        flat = owner.reshape(-1)
        counts = counts.index_add(0, flat, torch.ones(flat.shape, dtype=counts.dtype, device=counts.device))
        if self.reduction == "mean":
            return totals.index_add(0, flat, values.reshape(flat.shape[0], -1)), counts
        # "last": each text's latest position in the chunk, where the row moves on to another owner or the chunk ends
        latest = torch.ones_like(owner, dtype=torch.bool)  # (B, T)
        latest[:, :-1] = owner[:, 1:] != owner[:, :-1]
        latest &= owner != totals.shape[0] - 1
        return totals.index_copy(0, owner[latest], values[latest]), counts

    def read_rows(self, carry: Carry, out, attention_mask: Tensor | None = None) -> Carry:
        """``carry`` plus one chunk of texts read one per row (text r in row r, padded where ``attention_mask`` is 0
        on either side; rows beyond ``out``'s batch untouched)."""
        hidden = out.last_hidden_state  # (B, T, H)
        batch, steps = hidden.shape[:2]
        rows = torch.arange(batch, device=hidden.device).unsqueeze(1).expand(batch, steps)  # (B, T)
        spare = carry[0].shape[0] - 1
        owner = (rows if attention_mask is None
                 else torch.where(attention_mask.bool(), rows, torch.full_like(rows, spare)))
        if not self.from_state:
            return self.read(carry, out, owner)
        totals, counts = carry
        flat = owner.reshape(-1)
        counts = counts.index_add(0, flat, torch.ones(flat.shape, dtype=counts.dtype, device=counts.device))
        final = out.state[self._state_index][-1].float()  # (B, H) the last layer after the chunk: padding held it
        return totals.index_copy(0, rows[:, 0], final), counts

    def features(self, carry: Carry) -> Tensor:
        """(N, H) fp32: the texts' features."""
        totals, counts = carry
        if self.reduction == "mean":
            return totals[:-1] / counts[:-1].clamp(min=1.0).unsqueeze(1)
        return totals[:-1]

    def pool(self, body, input_ids: Tensor, attention_mask: Tensor | None = None, chunk_size: int = 256, *,
             output_hidden_states: bool = False) -> tuple[Tensor, State, tuple[Tensor, ...] | None]:
        """(B, H) fp32 features of B texts, one per row of ``input_ids`` (padded where ``attention_mask`` is 0, either
        side), the state after each text's last byte, and (``output_hidden_states``) every layer's (B, T, H) outputs,
        else ``None``. The texts are read ``chunk_size`` bytes at a time with the state carried (the result equals
        reading them at once); with gradients on and more than one chunk, each chunk is recomputed in the backward pass
        (activation checkpointing), so training memory holds one chunk's activations plus the state and sums at each
        chunk boundary, while the gradient reaches the first byte. Layer outputs are kept for the whole text: memory
        then grows with its length. With one chunk they are the body's own tensors, on the path to the loss."""
        batch, steps = input_ids.shape  # T = 0 (empty texts): the initial state's features, as an all-padding row's
        state = body.initial_state(batch)
        carry = self.new_carry(batch, body.config.hidden_size, input_ids.device)
        parts, options = len(state), self.forward_options(rows=True)
        recompute = torch.is_grad_enabled() and steps > chunk_size and any(p.requires_grad for p in body.parameters())
        layer_outputs: list[tuple[Tensor, ...]] = []  # per chunk, every layer's (B, T', H) outputs

        def read_chunk(ids: Tensor, mask: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
            out = body(ids, state=tensors[:parts], attention_mask=mask, use_cache=True, return_dict=True,
                       output_hidden_states=output_hidden_states, **options)
            return (*out.state, *self.read_rows(tensors[parts:], out, mask), *(out.hidden_states or ()))

        for start in range(0, steps, chunk_size):
            ids = input_ids[:, start : start + chunk_size]
            mask = attention_mask[:, start : start + chunk_size] if attention_mask is not None else None
            if recompute:  # the backward pass recomputes this chunk from the state and sums it started with
                from torch.utils.checkpoint import checkpoint

                tensors = checkpoint(read_chunk, ids, mask, *state, *carry, use_reentrant=False)
            else:
                tensors = read_chunk(ids, mask, *state, *carry)
            state, carry = tuple(tensors[:parts]), tuple(tensors[parts : parts + 2])
            layer_outputs.append(tuple(tensors[parts + 2 :]))
        hidden_states = None
        if output_hidden_states and layer_outputs:
            hidden_states = layer_outputs[0] if len(layer_outputs) == 1 else \
                tuple(torch.cat(chunks, dim=1) for chunks in zip(*layer_outputs))
        return self.features(carry), state, hidden_states


def pool(model, input_ids: Tensor, attention_mask: Tensor | None = None, *, pooling: str | None = None,
         chunk_size: int = 256) -> Tensor:
    """(B, H) fp32 features of the texts in ``input_ids`` (one per row, padded where ``attention_mask`` is 0) from a
    zoo body or causal LM, in ``pooling`` (``None``: the model's default): :meth:`TextPooling.pool`."""
    body = getattr(model, "model", model)
    return TextPooling(model, pooling).pool(body, input_ids, attention_mask, chunk_size)[0]


class RecurrentForSequenceClassification(RecurrentPreTrainedModel):
    """A family's body plus a linear head on a pooled text feature: binary, multi-class and multi-label
    classification, and regression (``config.problem_type`` as transformers defines it, with its standard losses).

    A family subclasses it together with its ``*PreTrainedModel`` and sets ``body_class``.

    * **Pooling** (``config.classifier_pooling``): one of :data:`POOLINGS` the family offers (``"final_cell"``: the
      last layer's cell state after each text's last real byte; ``"final_hidden"``: its hidden state there, or for a
      family without a per-unit hidden state the output at the last real byte; ``"mean"``: the last layer's outputs
      averaged over the real bytes), read by :class:`TextPooling`. ``None`` picks :func:`default_pooling` and writes
      it into the config. Then ``config.classifier_dropout``, then ``score``, a linear layer to ``config.num_labels``
      logits.
    * **Padding** (``attention_mask`` 0) holds the state, so a text's logits do not depend on its batch, left or right
      padding alike.
    * **Chunks.** A text is read ``chunk_size`` bytes at a time (default :attr:`chunk_size`) with the state carried:
      the result equals reading it at once, and inference memory is that of one chunk whatever the length. With
      gradients on and more than one chunk, each chunk is recomputed in the backward pass (activation checkpointing):
      the gradient flows through every chunk back to the first byte, exactly as without chunks, while training memory
      holds one chunk's activations plus the state at each chunk boundary (B x state size per chunk), at the cost of
      one more forward pass over the chunks.
    * **Loading** a causal LM's checkpoint of the same family
      (``AutoModelForSequenceClassification.from_pretrained(lm_dir, num_labels=3)``) loads every body weight and
      initialises the head fresh; transformers' loading info lists the head under ``missing_keys`` and the LM head
      under ``unexpected_keys`` (bytezoo's loader allows only that: a checkpoint that holds part of the head, or was
      saved by this class without it, is refused, as is any missing body weight).
    """

    _auto_class = "AutoModelForSequenceClassification"  # save_pretrained ships the model's files (see above)
    _fresh_head_prefixes = ("score.",)  # weights a checkpoint of another head (a causal LM's) may lack: made fresh
    accepts_loss_kwargs = False  # transformers.Trainer: the loss is the batch mean (no num_items_in_batch)
    body_class: type[RecurrentModel]
    chunk_size = 256  # bytes per forward call of the body when none is given

    def __init__(self, config):
        super().__init__(config)
        self.pooling = TextPooling(self.body_class, getattr(config, "classifier_pooling", None))
        dropout = getattr(config, "classifier_dropout", 0.0) or 0.0
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1); got {dropout}")
        if config.problem_type is not None and config.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type={config.problem_type!r}; choose one of {PROBLEM_TYPES}")
        # saved explicitly: a later default cannot change what a checkpoint reads
        config.classifier_pooling = self.pooling.mode
        self.num_labels = config.num_labels
        self.model = self.body_class(config)
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.body_class.state_names

    @property
    def unit_states(self) -> tuple[str, ...]:
        return self.body_class.unit_states

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        chunk_size: int | None = None,
        output_pooled: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RecurrentSequenceClassifierOutput | tuple:
        r"""
        Args:
            input_ids: (B, T) byte values, each row one text (padded where ``attention_mask`` is 0).
            attention_mask: (B, T), 1 for real bytes and 0 for padding (either side).
            labels: (B,) class indices (single-label), (B, num_labels) 0/1 (multi-label), or (B,) / (B, 1) values
                (regression); the loss follows ``config.problem_type``, inferred as transformers does when unset.
            chunk_size: bytes per forward call of the body (default :attr:`chunk_size`); never changes the result.
            output_pooled: also return ``pooled`` (B, H) and the final ``state``.
            output_hidden_states: also return every layer's outputs, (B, T, H) each (default
                ``config.output_hidden_states``); they are kept for the whole text, so memory grows with its length.
        """
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError("input_ids must be a (batch, time) tensor of byte values; "
                             f"got {None if input_ids is None else tuple(input_ids.shape)}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; "
                             f"input_ids has {tuple(input_ids.shape)}")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        output_hidden_states = bool(self.config.output_hidden_states if output_hidden_states is None
                                    else output_hidden_states)
        chunk = int(chunk_size or self.chunk_size)
        if chunk < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        if self.pooling.mode != self.config.classifier_pooling:  # the config was changed after construction
            self.pooling = TextPooling(self.body_class, self.config.classifier_pooling)
        pooled, state, hidden_states = self.pooling.pool(self.model, input_ids, attention_mask, chunk,
                                                         output_hidden_states=output_hidden_states)  # (B, H) fp32
        logits = self.score(self.dropout(pooled).to(self.score.weight.dtype))  # (B, num_labels)
        loss = self.classification_loss(logits, labels) if labels is not None else None
        output = RecurrentSequenceClassifierOutput(
            loss=loss, logits=logits, pooled=pooled if output_pooled else None, state=state if output_pooled else None,
            hidden_states=hidden_states,
        )
        return output if return_dict else output.to_tuple()

    def classification_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The standard loss of ``config.problem_type`` in fp32: mean squared error (regression), cross-entropy
        (single label; -100 ignored), binary cross-entropy with logits (multi-label). An unset problem type is
        inferred as transformers does (1 label: regression; integer labels: single label; else multi-label) and
        written into the config."""
        config, num_labels = self.config, self.config.num_labels
        labels = labels.to(logits.device)
        if config.problem_type is None:
            if num_labels == 1:
                config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int) and labels.dim() == 1:
                config.problem_type = "single_label_classification"
            else:
                config.problem_type = "multi_label_classification"
        logits = logits.float()
        if config.problem_type == "regression":
            if num_labels == 1:
                return nn.functional.mse_loss(logits.view(-1), labels.float().view(-1))
            return nn.functional.mse_loss(logits, labels.float())
        if config.problem_type == "single_label_classification":
            labels = labels.long().view(-1)
            if labels.numel() != logits.shape[0]:
                raise ValueError("single-label classification takes one class index per text; "
                                 f"labels have shape {tuple(labels.shape)}")
            counted = labels[labels != -100]
            if counted.numel() and (counted.min() < 0 or counted.max() >= num_labels):
                raise ValueError(f"labels hold class indices in [{int(counted.min())}, {int(counted.max())}] but the "
                                 f"head has num_labels={num_labels}")
            return nn.functional.cross_entropy(logits, labels)
        if labels.shape != logits.shape:
            raise ValueError(f"multi-label classification takes (batch, num_labels={num_labels}) 0/1 labels; "
                             f"got {tuple(labels.shape)}")
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())


__all__ = [
    "State",
    "RecurrentModelOutput",
    "RecurrentCausalLMOutput",
    "RecurrentPreTrainedModel",
    "RecurrentModel",
    "RecurrentForCausalLM",
    "RecurrentForSequenceClassification",
    "RecurrentSequenceClassifierOutput",
    "POOLINGS",
    "PoolingError",
    "TextPooling",
    "check_pooling",
    "default_pooling",
    "pool",
    "supported_poolings",
    "run_in_segments",
    "run_layers_in_segments",
    "select_streams",
    "concat_streams",
    "state_part",
]
