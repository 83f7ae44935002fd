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

import torch
from torch import Tensor, nn
from transformers import initialization as init

from .configuration_mlstm import MLSTMConfig
from .recurrent_lm import (
    RecurrentCausalLMOutput,
    RecurrentForCausalLM,
    RecurrentForSequenceClassification,
    RecurrentModel,
    RecurrentModelOutput,
    RecurrentPreTrainedModel,
    State,
)

try:
    from bytezoo.kernels import mlstm_scan
except ModuleNotFoundError as error:  # loaded with trust_remote_code where bytezoo is not installed: the reference loop
    if not (error.name or "").startswith("bytezoo"):
        raise
    from .mlstm_ref import mlstm_scan_ref

    def mlstm_scan(*args, kernel: str = "auto", **kwargs):
        return mlstm_scan_ref(*args, **kwargs)  # one engine only: `kernel` has nothing to choose from


MLSTMState = State  # (hidden, cell), each (num_layers, B, H): the nn.LSTM convention
MLSTMModelOutput = RecurrentModelOutput
MLSTMCausalLMOutput = RecurrentCausalLMOutput


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

    def inference_inputs(self, embeddings: Tensor | None, compute_dtype: torch.dtype):
        """``(gates_x, mult_x, w_mh, w_h)`` for a forward that builds no graph, cached between calls while no
        parameter changes: the weight norms, the first layer's (V, 4H) / (V, H) tables (``embeddings`` given) and the
        casts to ``compute_dtype`` are otherwise recomputed at every call, which dominated token-by-token generation
        (one step at H=1024, B=1: 12.6 ms, of which the recurrence is a fraction) and chunked feature extraction.
        Keyed by every parameter's storage and version counter (an optimizer step or ``load_state_dict`` changes the
        version, ``.to()`` the storage) and the dtype; None for hidden layers' inputs (they depend on the batch)."""
        params = (*self.parameters(), *(() if embeddings is None else (embeddings,)))
        key = (compute_dtype, tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params))
        cached = self.__dict__.get("_inference_cache")
        # The cache holds the parameter objects themselves and compares them by identity: a parameter replaced by a
        # new tensor (load_state_dict(assign=True)) can never match, even if it lands at the freed address.
        if cached is not None and cached[0] == key and all(a is b for a, b in zip(cached[2], params)):
            return cached[1]
        w_x, w_h, w_mx, w_mh = self.effective_weights()
        gates_x = mult_x = None
        if embeddings is not None:
            gates_x = torch.addmm(self.bias, embeddings, w_x).to(compute_dtype)  # (V, 4H)
            mult_x = (embeddings @ w_mx).to(compute_dtype)  # (V, H)
        value = (gates_x, mult_x, w_mh.to(compute_dtype), w_h.to(compute_dtype), w_x, w_mx)
        self.__dict__["_inference_cache"] = (key, value, params)  # not a buffer: never saved, never moved by .to()
        return value

    def train(self, mode: bool = True):
        if mode:  # back to training: the cached inference weights would only hold memory
            self.__dict__.pop("_inference_cache", None)
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, weight_norm={self.weight_norm}"


class MLSTMPreTrainedModel(RecurrentPreTrainedModel):
    config: MLSTMConfig
    config_class = MLSTMConfig
    _no_split_modules = ["MLSTMLayer"]
    state_names = ("hidden", "cell")
    unit_states = ("hidden", "cell")
    resets_per_position = True  # the scan's keep mask restarts the state per position

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
        else:
            super()._init_weights(module)


class MLSTMModel(RecurrentModel, MLSTMPreTrainedModel):
    """Byte embedding followed by ``num_layers`` mLSTM layers; returns hidden states and the final recurrent state
    ``(hidden, cell)``, each (num_layers, B, H). Inputs, masks and outputs: :meth:`RecurrentModel.forward`."""

    _auto_class = "AutoModel"  # save_pretrained ships this file for trust_remote_code (see recurrent_lm.py)

    def __init__(self, config: MLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.layers = nn.ModuleList(
            MLSTMLayer(config.embedding_size if layer == 0 else config.hidden_size, config.hidden_size,
                       config.weight_norm)
            for layer in range(config.num_layers)
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def state_shapes(self, batch_size: int) -> tuple[tuple[int, ...], ...]:
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return shape, shape

    def _forward_layers(self, input_ids, state, hold, reset, output_hidden_states, output_cell_states):
        batch, steps = input_ids.shape
        h0_all, c0_all = state
        # Under autocast the recurrence runs in the autocast dtype; its carried state stays at (at least) float32.
        device_type = input_ids.device.type
        compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else self.dtype
        hidden = None  # (B, T, H) the previous layer's output
        final_h, final_c, all_hidden, all_cells = [], [], [], []
        # Without a graph to build, the weights and tables that do not depend on the input are cached per layer (not
        # while traced for export or compile: the cache is keyed by storage pointers, which traced tensors do not
        # have).
        cache = not torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
        for index, layer in enumerate(self.layers):
            token_ids = None
            embeddings = self.embeddings.weight if index == 0 else None  # (V, E)
            if cache:
                table_gates, table_mult, w_mh, w_h, w_x, w_mx = layer.inference_inputs(embeddings, compute_dtype)
            else:
                w_x, w_h, w_mx, w_mh = layer.effective_weights()
                w_mh, w_h = w_mh.to(compute_dtype), w_h.to(compute_dtype)
                if index == 0:
                    table_gates = torch.addmm(layer.bias, embeddings, w_x).to(compute_dtype)  # (V, 4H)
                    table_mult = (embeddings @ w_mx).to(compute_dtype)  # (V, H)
            if index == 0:  # a byte's input projections are rows of (V, 4H) and (V, H) tables, read by the scan
                gates_x, mult_x = table_gates, table_mult
                token_ids = input_ids
            else:
                gates_x = torch.addmm(layer.bias, hidden.reshape(batch * steps, -1), w_x).view(batch, steps, -1)
                mult_x = (hidden.reshape(batch * steps, -1) @ w_mx).view(batch, steps, -1)
            hs, cs, h_last, c_last = mlstm_scan(
                gates_x.to(compute_dtype),
                mult_x.to(compute_dtype),
                w_mh,
                w_h,
                h0_all[index],
                c0_all[index],
                reset=reset,
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
        return hidden, (torch.stack(final_h), torch.stack(final_c)), all_hidden, all_cells


class MLSTMForCausalLM(RecurrentForCausalLM, MLSTMPreTrainedModel):
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

    _auto_class = "AutoModelForCausalLM"  # save_pretrained ships this file for trust_remote_code (see recurrent_lm.py)
    body_class = MLSTMModel


class MLSTMForSequenceClassification(RecurrentForSequenceClassification, MLSTMPreTrainedModel):
    """:class:`MLSTMModel` plus a linear head on a pooled text feature (:class:`RecurrentForSequenceClassification`).

    ```python
    >>> from transformers import AutoModelForSequenceClassification
    >>> model = AutoModelForSequenceClassification.from_pretrained("runs/lm/model", num_labels=2)  # doctest: +SKIP
    ```"""

    _auto_class = "AutoModelForSequenceClassification"  # save_pretrained ships this file for trust_remote_code
    body_class = MLSTMModel


__all__ = ["MLSTMForCausalLM", "MLSTMForSequenceClassification", "MLSTMModel", "MLSTMPreTrainedModel",
           "MLSTMModelOutput", "MLSTMCausalLMOutput", "MLSTMState"]
