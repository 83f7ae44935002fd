"""Byte-level multiplicative LSTM (mLSTM) language model, as a transformers ``PreTrainedModel``.

Per layer and step t (gate order i, f, o, u as in Radford et al. 2017)::

    m_t = (x_t @ W_mx) * (h_{t-1} @ W_mh)
    z_t = x_t @ W_x + b + m_t @ W_h
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(u);   h_t = sigmoid(o) * tanh(c_t)

The recurrence runs in :func:`bytezoo.kernels.mlstm_scan`. Input projections are hoisted out of the time loop: for the
first layer they are row gathers from ``(256, 4H)`` and ``(256, H)`` tables (embedding @ weight), because a byte has
only 256 values.
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

from .configuration_mlstm import MLSTMConfig

try:
    from bytezoo.kernels import mlstm_scan
except ModuleNotFoundError as error:  # loaded with trust_remote_code where bytezoo is not installed: plain PyTorch loop
    if not (error.name or "").startswith("bytezoo"):
        raise

    def mlstm_scan(
        gates_x, mult_x, w_mh, w_h, h0=None, c0=None, reset=None, hold=None, return_cells=False, kernel="auto",
        input_ids=None,
    ):
        """Portable copy of ``bytezoo.kernels.mlstm_scan_ref`` (same math; see there for the contract)."""
        hidden = w_mh.shape[0]
        if input_ids is not None:  # (V, ...) tables: one row per token
            gates_x, mult_x = gates_x[input_ids], mult_x[input_ids]
        out_dtype, state_dtype = gates_x.dtype, h0.dtype
        acc = torch.promote_types(gates_x.dtype, torch.float32)  # float32 math, float64 kept
        gx, mx, wmh, wh = (t.to(acc) for t in (gates_x, mult_x, w_mh, w_h))
        h, c = h0.to(acc), c0.to(acc)
        hs, cs = [], []
        for t in range(gx.shape[1]):
            if reset is not None:
                keep = (~reset[:, t]).to(acc).unsqueeze(1)
                h, c = h * keep, c * keep
            z = gx[:, t] + (mx[:, t] * (h @ wmh)) @ wh
            i, f, o = torch.sigmoid(z[:, : 3 * hidden]).chunk(3, dim=1)
            c_new = f * c + i * torch.tanh(z[:, 3 * hidden :])
            h_new = o * torch.tanh(c_new)
            if hold is not None:
                h_new = torch.where(hold[:, t].unsqueeze(1), h, h_new)
                c_new = torch.where(hold[:, t].unsqueeze(1), c, c_new)
            h, c = h_new, c_new
            hs.append(h)
            cs.append(c)
        cells = torch.stack(cs, 1).to(out_dtype) if return_cells else None
        return torch.stack(hs, 1).to(out_dtype), cells, h.to(state_dtype), c.to(state_dtype)


MLSTMState = tuple[Tensor, Tensor]  # (h, c), each (num_layers, B, H): the nn.LSTM convention


@dataclass
class MLSTMModelOutput(ModelOutput):
    """Outputs of :class:`MLSTMModel`.

    Args:
        last_hidden_state: (B, T, H) every step's hidden state of the last layer.
        state: ``(h, c)``, each (num_layers, B, H): the final state; pass it back as ``state=`` to continue the text.
        hidden_states: per layer, (B, T, H) every step's hidden state (when ``output_hidden_states=True``).
        cell_states: per layer, (B, T, H) every step's cell state (when ``output_cell_states=True``).
    """

    last_hidden_state: Tensor | None = None
    state: MLSTMState | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    cell_states: tuple[Tensor, ...] | None = None


@dataclass
class MLSTMCausalLMOutput(ModelOutput):
    """Outputs of :class:`MLSTMForCausalLM`: ``loss`` (scalar, nats per byte), ``logits`` (B, T, V), and the fields
    of :class:`MLSTMModelOutput` except ``last_hidden_state``."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    state: MLSTMState | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    cell_states: tuple[Tensor, ...] | None = None


def _weight_normed(direction: Tensor, gain: Tensor) -> Tensor:
    """``gain * direction / ||direction||`` with the norm over the input axis: (in, out) -> (in, out).

    ATen's fused weight-norm op (what ``torch.nn.utils.parametrizations.weight_norm`` runs): at H=1024 its forward
    and backward took 12 ms on one CPU thread against 55 ms for ``direction * (gain / direction.norm(dim=0))``.
    """
    return torch._weight_norm(direction, gain.unsqueeze(0), 1)  # dim=1: one norm per output column


class MLSTMLayer(nn.Module):
    """One mLSTM layer's parameters, in the math layout ``x @ W`` (rows = inputs, columns = outputs)."""

    def __init__(self, input_size: int, hidden_size: int, weight_norm: bool):
        super().__init__()
        self.input_size, self.hidden_size, self.weight_norm = input_size, hidden_size, weight_norm
        self.w_x = nn.Parameter(torch.empty(input_size, 4 * hidden_size))
        self.w_h = nn.Parameter(torch.empty(hidden_size, 4 * hidden_size))
        self.w_mx = nn.Parameter(torch.empty(input_size, hidden_size))
        self.w_mh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        if weight_norm:
            self.g_x = nn.Parameter(torch.empty(4 * hidden_size))
            self.g_h = nn.Parameter(torch.empty(4 * hidden_size))
            self.g_mx = nn.Parameter(torch.empty(hidden_size))
            self.g_mh = nn.Parameter(torch.empty(hidden_size))

    def effective_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(W_x, W_h, W_mx, W_mh)`` with weight norm applied (once per forward, not per step)."""
        if not self.weight_norm:
            return self.w_x, self.w_h, self.w_mx, self.w_mh
        return (
            _weight_normed(self.w_x, self.g_x),
            _weight_normed(self.w_h, self.g_h),
            _weight_normed(self.w_mx, self.g_mx),
            _weight_normed(self.w_mh, self.g_mh),
        )

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, weight_norm={self.weight_norm}"


class MLSTMPreTrainedModel(ByteZooModelMixin, PreTrainedModel):
    config: MLSTMConfig
    config_class = MLSTMConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["MLSTMLayer"]
    _is_stateful = True
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, MLSTMLayer):
            for weight in (module.w_x, module.w_mx):
                init.normal_(weight, std=1.0 / math.sqrt(module.input_size))
            for weight in (module.w_h, module.w_mh):
                init.normal_(weight, std=1.0 / math.sqrt(module.hidden_size))
            bias = torch.zeros_like(module.bias)
            bias[module.hidden_size : 2 * module.hidden_size] = self.config.forget_bias  # the forget gate
            init.copy_(module.bias, bias)
            if module.weight_norm:  # unit-norm columns: each pre-activation starts with the input's scale
                for gain in (module.g_x, module.g_h, module.g_mx, module.g_mh):
                    init.ones_(gain)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=1.0 / math.sqrt(module.in_features))
            if module.bias is not None:
                init.zeros_(module.bias)


class MLSTMModel(MLSTMPreTrainedModel):
    """Byte embedding followed by ``num_layers`` mLSTM layers; returns hidden states and the final recurrent state."""

    # save_pretrained copies this file beside the weights and writes `auto_map`, so the checkpoint loads with
    # trust_remote_code where bytezoo is absent (what `register_for_auto_class("AutoModel")` would set).
    _auto_class = "AutoModel"

    def __init__(self, config: MLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.layers = nn.ModuleList(
            MLSTMLayer(config.embedding_size if layer == 0 else config.hidden_size, config.hidden_size, config.weight_norm)
            for layer in range(config.num_layers)
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def initial_state(self, batch_size: int, dtype: torch.dtype | None = None) -> MLSTMState:
        """Zero state ``(h, c)``, each (num_layers, B, H); float32 unless the model itself is float64."""
        dtype = dtype or torch.promote_types(self.dtype, torch.float32)
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        zeros = torch.zeros(shape, dtype=dtype, device=self.device)
        return zeros, zeros.clone()

    def forward(
        self,
        input_ids: torch.LongTensor,
        state: MLSTMState | None = None,
        attention_mask: Tensor | None = None,
        reset_mask: Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_cell_states: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MLSTMModelOutput | tuple:
        r"""
        Args:
            input_ids: (B, T) byte values.
            state: ``(h, c)``, each (num_layers, B, H), from a previous call; zeros when ``None``.
            attention_mask: (B, T), 1 for real bytes and 0 for padding. Padding positions leave the state unchanged,
                so left or right padding never changes a text's final state.
            reset_mask: (B, T) bool; ``True`` zeroes the state before that position (a document boundary).
            use_cache: return the final ``state`` (default ``config.use_cache``).
            output_hidden_states: also return every layer's hidden states.
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
            reset_mask = reset_mask.bool()
        if input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size:
            raise ValueError(
                f"input_ids hold values outside [0, {self.config.vocab_size}) at unmasked positions "
                f"(min {int(input_ids.min())}, max {int(input_ids.max())})"
            )
        if state is None:
            state = self.initial_state(batch)
        h0_all, c0_all = state
        expected = (self.config.num_layers, batch, self.config.hidden_size)
        if tuple(h0_all.shape) != expected or tuple(c0_all.shape) != expected:
            raise ValueError(f"state must be (h, c) with shapes {expected}; got {tuple(h0_all.shape)} and {tuple(c0_all.shape)}")

        # Under autocast the recurrence runs in the autocast dtype; its carried state stays at (at least) float32.
        device_type = input_ids.device.type
        compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else self.dtype
        hidden = None  # (B, T, H) the previous layer's output
        final_h, final_c, all_hidden, all_cells = [], [], [], []
        for index, layer in enumerate(self.layers):
            w_x, w_h, w_mx, w_mh = layer.effective_weights()
            token_ids = None
            if index == 0:  # a byte's input projections are rows of (V, 4H) and (V, H) tables, read by the scan
                embeddings = self.embeddings.weight  # (V, E)
                gates_x = torch.addmm(layer.bias, embeddings, w_x)  # (V, 4H)
                mult_x = embeddings @ w_mx  # (V, H)
                token_ids = input_ids
            else:
                gates_x = torch.addmm(layer.bias, hidden.reshape(batch * steps, -1), w_x).view(batch, steps, -1)
                mult_x = (hidden.reshape(batch * steps, -1) @ w_mx).view(batch, steps, -1)
            hs, cs, h_last, c_last = mlstm_scan(
                gates_x.to(compute_dtype),
                mult_x.to(compute_dtype),
                w_mh.to(compute_dtype),
                w_h.to(compute_dtype),
                h0_all[index],
                c0_all[index],
                reset=reset_mask,
                hold=hold,
                return_cells=output_cell_states,
                kernel=self.config.kernel,
                input_ids=token_ids,
            )
            hidden = hs
            final_h.append(h_last)
            final_c.append(c_last)
            all_hidden.append(hs)
            all_cells.append(cs)

        output = MLSTMModelOutput(
            last_hidden_state=hidden,
            state=(torch.stack(final_h), torch.stack(final_c)) if use_cache else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            cell_states=tuple(all_cells) if output_cell_states else None,
        )
        return output if return_dict else output.to_tuple()


class MLSTMForCausalLM(MLSTMPreTrainedModel, GenerationMixin):
    """mLSTM byte language model: :class:`MLSTMModel` plus a linear next-byte head.

    Example:

    ```python
    >>> import torch, bytezoo
    >>> model = bytezoo.create_model("mlstm-256")
    >>> ids = torch.tensor([list(b"Hello")])
    >>> out = model(ids, labels=ids)                         # loss in nats per byte
    >>> more = model(torch.tensor([list(b", world")]), state=out.state)  # continue the text
    >>> model.generate(ids, max_new_tokens=20, do_sample=True)  # doctest: +SKIP
    ```"""

    # save_pretrained copies this file beside the weights and writes `auto_map`, so the checkpoint loads with
    # trust_remote_code where bytezoo is absent (what `register_for_auto_class("AutoModelForCausalLM")` would set).
    _auto_class = "AutoModelForCausalLM"

    _tied_weights_keys: dict[str, str] = {}

    def __init__(self, config: MLSTMConfig):
        super().__init__(config)
        self.model = MLSTMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor,
        state: MLSTMState | None = None,
        attention_mask: Tensor | None = None,
        reset_mask: Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_cell_states: bool = False,
        return_dict: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs,
    ) -> MLSTMCausalLMOutput | tuple:
        r"""Arguments as :meth:`MLSTMModel.forward`, plus:

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
        output = MLSTMCausalLMOutput(
            loss=loss,
            logits=logits,
            state=outputs.state,
            hidden_states=outputs.hidden_states,
            cell_states=outputs.cell_states,
        )
        return output if return_dict else output.to_tuple()

    # --- generation: the recurrent state plays the role of the KV cache. Copied in modeling_lstm.py (each model file
    # stands alone for trust_remote_code); tests/test_zoo_copies.py keeps the copies identical. ---------------------
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # no DynamicCache: the state is carried in the `state` field

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        state: MLSTMState | None = None,
        attention_mask: Tensor | None = None,
        use_cache: bool = True,
        **kwargs,
    ) -> dict:
        if next_sequence_length is not None and use_cache and state is not None:  # decoding: feed new bytes only
            input_ids = input_ids[:, -next_sequence_length:]
            if attention_mask is not None:
                attention_mask = attention_mask[:, -next_sequence_length:]
        model_inputs = {
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
        if state is not None:  # batch is dim 1 of (num_layers, B, H)
            model_kwargs["state"] = tuple(part.repeat_interleave(expand_size, dim=1) for part in state)
        return input_ids, model_kwargs

    def _reorder_cache(self, state: MLSTMState | None, beam_idx: torch.LongTensor) -> MLSTMState | None:
        if state is None:  # use_cache=False: nothing is carried
            return None
        return tuple(part.index_select(1, beam_idx.to(part.device)) for part in state)


__all__ = ["MLSTMForCausalLM", "MLSTMModel", "MLSTMPreTrainedModel", "MLSTMModelOutput", "MLSTMCausalLMOutput", "MLSTMState"]
