"""Byte-level LSTM language model on ``torch.nn.LSTM`` (oneDNN/cuDNN), with the mLSTM's interface.

``nn.LSTM`` has no per-position masks, so reset and hold masks are honoured by splitting the time axis where any row's
mask changes: within a segment every row either runs or holds, and rows that reset start it from zeros. Resets (document
boundaries) and padding runs are rare, so the fused library kernel still does nearly all the work.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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

from .configuration_lstm import ByteLSTMConfig

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (num_layers, B, H)


@dataclass
class ByteLSTMModelOutput(ModelOutput):
    """Outputs of :class:`ByteLSTMModel`: ``last_hidden_state`` (B, T, H), ``state`` ``(h, c)`` each
    (num_layers, B, H), and, on request, ``hidden_states`` / ``cell_states`` per layer (B, T, H)."""

    last_hidden_state: Tensor | None = None
    state: LSTMState | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    cell_states: tuple[Tensor, ...] | None = None


@dataclass
class ByteLSTMCausalLMOutput(ModelOutput):
    """Outputs of :class:`ByteLSTMForCausalLM`: ``loss``, ``logits`` (B, T, V), ``state``, ``hidden_states``,
    ``cell_states``."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    state: LSTMState | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    cell_states: tuple[Tensor, ...] | None = None


def _segment_starts(reset: Tensor | None, hold: Tensor | None, steps: int) -> list[int]:
    """Positions where a new segment starts: 0, every reset column, and wherever any row's hold flag changes."""
    starts = torch.zeros(steps, dtype=torch.bool, device=(reset if reset is not None else hold).device)
    starts[0] = True
    if reset is not None:
        starts |= reset.any(dim=0)
    if hold is not None and steps > 1:
        starts[1:] |= (hold[:, 1:] != hold[:, :-1]).any(dim=0)
    return starts.nonzero().flatten().tolist()


class ByteLSTMPreTrainedModel(ByteZooModelMixin, PreTrainedModel):
    config: ByteLSTMConfig
    config_class = ByteLSTMConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _is_stateful = True
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.LSTM):
            hidden = module.hidden_size
            for name, param in module.named_parameters():
                if name.startswith("weight"):
                    init.normal_(param, std=1.0 / math.sqrt(param.shape[1]))
                elif name.startswith("bias_ih"):  # nn.LSTM gate order i, f, g, o; bias_hh stays zero
                    bias = torch.zeros_like(param)
                    bias[hidden : 2 * hidden] = self.config.forget_bias
                    init.copy_(param, bias)
                else:
                    init.zeros_(param)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=1.0 / math.sqrt(module.in_features))
            if module.bias is not None:
                init.zeros_(module.bias)


class ByteLSTMModel(ByteLSTMPreTrainedModel):
    """Byte embedding followed by a multi-layer ``nn.LSTM``; same inputs and outputs as ``MLSTMModel``."""

    # save_pretrained copies this file beside the weights and writes `auto_map`, so the checkpoint loads with
    # trust_remote_code where bytezoo is absent (what `register_for_auto_class("AutoModel")` would set).
    _auto_class = "AutoModel"

    def __init__(self, config: ByteLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.lstm = nn.LSTM(config.embedding_size, config.hidden_size, num_layers=config.num_layers, batch_first=True)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def initial_state(self, batch_size: int, dtype: torch.dtype | None = None) -> LSTMState:
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        zeros = torch.zeros(shape, dtype=dtype or self.dtype, device=self.device)
        return zeros, zeros.clone()

    def _run_layers(self, x: Tensor, state: LSTMState, layerwise: bool) -> tuple[Tensor, LSTMState, list, list]:
        """nn.LSTM over (B, T', E) from ``state``; per-layer (B, T', H) hidden and cell sequences only when asked
        (``layerwise``): nn.LSTM exposes those only layer by layer and step by step."""
        if not layerwise:
            out, new_state = self.lstm(x, state)
            return out, new_state, [], []
        hiddens, cells, h_last, c_last = [], [], [], []
        layer_input = x
        for layer in range(self.config.num_layers):
            weights = [getattr(self.lstm, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h, c = state[0][layer], state[1][layer]
            hs, cs = [], []
            for t in range(layer_input.shape[1]):  # the step-wise path runs only when cell states are requested
                h, c = torch._VF.lstm_cell(layer_input[:, t], (h, c), *weights)
                hs.append(h)
                cs.append(c)
            layer_input = torch.stack(hs, dim=1)
            hiddens.append(layer_input)
            cells.append(torch.stack(cs, dim=1))
            h_last.append(h)
            c_last.append(c)
        return layer_input, (torch.stack(h_last), torch.stack(c_last)), hiddens, cells

    def forward(
        self,
        input_ids: torch.LongTensor,
        state: LSTMState | None = None,
        attention_mask: Tensor | None = None,
        reset_mask: Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_cell_states: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ByteLSTMModelOutput | tuple:
        """Same arguments as ``MLSTMModel.forward``: ``state``, ``attention_mask`` (0 = padding, which holds the
        state), ``reset_mask`` (True zeroes the state before that position), ``output_cell_states``."""
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a (batch, time) tensor of byte values; got {None if input_ids is None else tuple(input_ids.shape)}")
        batch, steps = input_ids.shape
        if steps == 0:
            raise ValueError("input_ids has no positions (T = 0)")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        hold = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; input_ids has {tuple(input_ids.shape)}")
            hold = attention_mask == 0
            input_ids = input_ids.masked_fill(hold, 0)
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
        expected = (self.config.num_layers, batch, self.config.hidden_size)
        if tuple(state[0].shape) != expected or tuple(state[1].shape) != expected:
            raise ValueError(f"state must be (h, c) with shapes {expected}; got {tuple(state[0].shape)} and {tuple(state[1].shape)}")
        embedded = self.embeddings(input_ids)  # (B, T, E)
        # nn.LSTM wants its state in the activations' dtype (autocast runs it in the autocast dtype).
        state_dtype = state[0].dtype
        run_dtype = embedded.dtype
        layerwise = output_cell_states or output_hidden_states  # per-layer sequences need the layer-by-layer path
        h, c = state[0].to(run_dtype), state[1].to(run_dtype)

        if reset_mask is None and hold is None:
            out, (h, c), hiddens, cells = self._run_layers(embedded, (h, c), layerwise)
        else:
            starts = _segment_starts(reset_mask, hold, steps) + [steps]
            outs, layer_hiddens, layer_cells = [], [], []
            for start, end in zip(starts[:-1], starts[1:]):
                if reset_mask is not None:
                    keep = (~reset_mask[:, start]).to(h.dtype).view(1, batch, 1)
                    h, c = h * keep, c * keep
                seg_out, (seg_h, seg_c), seg_hiddens, seg_cells = self._run_layers(embedded[:, start:end], (h, c), layerwise)
                if hold is not None:
                    held = hold[:, start]  # constant over the segment for each row
                    held_state = held.view(1, batch, 1)
                    seg_h = torch.where(held_state, h, seg_h)
                    seg_c = torch.where(held_state, c, seg_c)
                    seg_out = torch.where(held.view(batch, 1, 1), h[-1].unsqueeze(1), seg_out)
                    seg_hiddens = [torch.where(held.view(batch, 1, 1), h[i].unsqueeze(1), s) for i, s in enumerate(seg_hiddens)]
                    seg_cells = [torch.where(held.view(batch, 1, 1), c[i].unsqueeze(1), s) for i, s in enumerate(seg_cells)]
                h, c = seg_h, seg_c
                outs.append(seg_out)
                layer_hiddens.append(seg_hiddens)
                layer_cells.append(seg_cells)
            out = torch.cat(outs, dim=1)
            hiddens = [torch.cat(per_layer, dim=1) for per_layer in zip(*layer_hiddens)]
            cells = [torch.cat(per_layer, dim=1) for per_layer in zip(*layer_cells)]

        output = ByteLSTMModelOutput(
            last_hidden_state=out,
            state=(h.to(state_dtype), c.to(state_dtype)) if use_cache else None,
            hidden_states=tuple(hiddens) if output_hidden_states else None,
            cell_states=tuple(cells) if output_cell_states else None,
        )
        return output if return_dict else output.to_tuple()


class ByteLSTMForCausalLM(ByteLSTMPreTrainedModel, GenerationMixin):
    """LSTM byte language model: :class:`ByteLSTMModel` plus a linear next-byte head; the mLSTM's interface.

    Example:

    ```python
    >>> import torch, bytezoo
    >>> model = bytezoo.create_model("lstm-256")
    >>> out = model(torch.tensor([list(b"Hello")]))
    ```"""

    # save_pretrained copies this file beside the weights and writes `auto_map`, so the checkpoint loads with
    # trust_remote_code where bytezoo is absent (what `register_for_auto_class("AutoModelForCausalLM")` would set).
    _auto_class = "AutoModelForCausalLM"

    _tied_weights_keys: dict[str, str] = {}

    def __init__(self, config: ByteLSTMConfig):
        super().__init__(config)
        self.model = ByteLSTMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor,
        state: LSTMState | None = None,
        attention_mask: Tensor | None = None,
        reset_mask: Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_cell_states: bool = False,
        return_dict: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs,
    ) -> ByteLSTMCausalLMOutput | tuple:
        """Same arguments as ``MLSTMForCausalLM.forward``."""
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
        output = ByteLSTMCausalLMOutput(
            loss=loss,
            logits=logits,
            state=outputs.state,
            hidden_states=outputs.hidden_states,
            cell_states=outputs.cell_states,
        )
        return output if return_dict else output.to_tuple()

    # Generation plumbing: the recurrent state plays the KV cache's role. Kept in sync with MLSTMForCausalLM (each model
    # file must stand alone for trust_remote_code; tests/test_zoo_copies.py keeps the two copies identical).
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        state: LSTMState | None = None,
        attention_mask: Tensor | None = None,
        use_cache: bool = True,
        **kwargs,
    ) -> dict:
        if next_sequence_length is not None and use_cache and state is not None:
            input_ids = input_ids[:, -next_sequence_length:]
            if attention_mask is not None:
                attention_mask = attention_mask[:, -next_sequence_length:]
        model_inputs = {"input_ids": input_ids.contiguous(), "state": state, "attention_mask": attention_mask, "use_cache": use_cache}
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
        if state is not None:
            model_kwargs["state"] = tuple(part.repeat_interleave(expand_size, dim=1) for part in state)
        return input_ids, model_kwargs

    def _reorder_cache(self, state: LSTMState | None, beam_idx: torch.LongTensor) -> LSTMState | None:
        if state is None:
            return None
        return tuple(part.index_select(1, beam_idx.to(part.device)) for part in state)


__all__ = ["ByteLSTMForCausalLM", "ByteLSTMModel", "ByteLSTMPreTrainedModel", "ByteLSTMModelOutput", "ByteLSTMCausalLMOutput"]
