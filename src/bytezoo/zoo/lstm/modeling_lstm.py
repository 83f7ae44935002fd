"""Byte-level LSTM language model on ``torch.nn.LSTM`` (oneDNN/cuDNN), with the mLSTM's interface.

``nn.LSTM`` has no per-position masks: reset and hold masks are honoured by :func:`run_in_segments`, which splits the
time axis where any row's mask changes.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from transformers import initialization as init

from .configuration_lstm import ByteLSTMConfig
from .recurrent_lm import (
    RecurrentCausalLMOutput,
    RecurrentForCausalLM,
    RecurrentForSequenceClassification,
    RecurrentModel,
    RecurrentModelOutput,
    RecurrentPreTrainedModel,
    State,
    run_in_segments,
    run_layers_in_segments,
)

LSTMState = State  # (hidden, cell), each (num_layers, B, H)
ByteLSTMModelOutput = RecurrentModelOutput
ByteLSTMCausalLMOutput = RecurrentCausalLMOutput


class ByteLSTMPreTrainedModel(RecurrentPreTrainedModel):
    config: ByteLSTMConfig
    config_class = ByteLSTMConfig
    state_names = ("hidden", "cell")
    unit_states = ("hidden", "cell")

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
        else:
            super()._init_weights(module)


class ByteLSTMModel(RecurrentModel, ByteLSTMPreTrainedModel):
    """Byte embedding followed by a multi-layer ``nn.LSTM``; the state is ``(hidden, cell)``, each (num_layers, B, H).
    Inputs, masks and outputs: :meth:`RecurrentModel.forward`."""

    _auto_class = "AutoModel"  # save_pretrained ships this file for trust_remote_code (see recurrent_lm.py)

    def __init__(self, config: ByteLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.lstm = nn.LSTM(config.embedding_size, config.hidden_size, num_layers=config.num_layers, batch_first=True)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def state_shapes(self, batch_size: int) -> tuple[tuple[int, ...], ...]:
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return shape, shape

    def _run_all_layers(self, x: Tensor, state: State) -> tuple[Tensor, State, list, list]:
        """nn.LSTM over (B, T', E) from ``state``: the fast path, when no per-layer sequence is asked for."""
        out, new_state = self.lstm(x, state)
        return out, new_state, [], []

    def _run_layer(self, layer: int, x: Tensor, state: State) -> tuple[Tensor, State, list, list]:
        """One layer over (B, T', I) from its state (each part (1, B, H)), step by step: nn.LSTM exposes the cell
        sequence only this way. Returns its outputs, final state, and its (B, T', H) hidden and cell sequences."""
        weights = [getattr(self.lstm, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h, c = state[0][0], state[1][0]
        hs, cs = [], []
        for t in range(x.shape[1]):  # the step-wise path runs only when per-layer sequences are asked for
            h, c = torch._VF.lstm_cell(x[:, t], (h, c), *weights)
            hs.append(h)
            cs.append(c)
        out = torch.stack(hs, dim=1)
        return out, (h.unsqueeze(0), c.unsqueeze(0)), [out], [torch.stack(cs, dim=1)]

    def _forward_layers(self, input_ids, state, hold, reset, output_hidden_states, output_cell_states):
        embedded = self.embeddings(input_ids)  # (B, T, E)
        if output_cell_states or output_hidden_states:  # per-layer sequences need the layer-by-layer path
            return run_layers_in_segments(self._run_layer, self.config.num_layers, embedded, state, reset, hold)
        return run_in_segments(self._run_all_layers, embedded, state, reset, hold)


class ByteLSTMForCausalLM(RecurrentForCausalLM, ByteLSTMPreTrainedModel):
    """LSTM byte language model: :class:`ByteLSTMModel` plus a linear next-byte head; the mLSTM's interface.

    Example:

    ```python
    >>> import torch, bytezoo
    >>> model = bytezoo.create_model("lstm-256")
    >>> out = model(torch.tensor([list(b"Hello")]))
    ```"""

    _auto_class = "AutoModelForCausalLM"  # save_pretrained ships this file for trust_remote_code (see recurrent_lm.py)
    body_class = ByteLSTMModel


class ByteLSTMForSequenceClassification(RecurrentForSequenceClassification, ByteLSTMPreTrainedModel):
    """:class:`ByteLSTMModel` plus a linear head on a pooled text feature (:class:`RecurrentForSequenceClassification`).

    ```python
    >>> from transformers import AutoModelForSequenceClassification
    >>> model = AutoModelForSequenceClassification.from_pretrained("runs/lm/model", num_labels=2)  # doctest: +SKIP
    ```"""

    _auto_class = "AutoModelForSequenceClassification"  # save_pretrained ships this file for trust_remote_code
    body_class = ByteLSTMModel


__all__ = ["ByteLSTMForCausalLM", "ByteLSTMForSequenceClassification", "ByteLSTMModel", "ByteLSTMPreTrainedModel",
           "ByteLSTMModelOutput", "ByteLSTMCausalLMOutput"]
