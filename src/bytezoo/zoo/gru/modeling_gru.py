"""Byte-level GRU language model on ``torch.nn.GRU``, through the zoo's recurrent-LM contract.

The state is ``(hidden,)``, (num_layers, B, H): a GRU has no cell. ``nn.GRU`` has no per-position masks, so reset and
hold masks are honoured by :func:`run_in_segments`, as for the LSTM.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from transformers import initialization as init

from .configuration_gru import ByteGRUConfig
from .recurrent_lm import (
    RecurrentForCausalLM,
    RecurrentForSequenceClassification,
    RecurrentModel,
    RecurrentPreTrainedModel,
    State,
    run_in_segments,
    run_layers_in_segments,
)


class ByteGRUPreTrainedModel(RecurrentPreTrainedModel):
    config: ByteGRUConfig
    config_class = ByteGRUConfig
    state_names = ("hidden",)
    unit_states = ("hidden",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if name.startswith("weight"):
                    init.normal_(param, std=1.0 / math.sqrt(param.shape[1]))
                else:
                    init.zeros_(param)
        else:
            super()._init_weights(module)


class ByteGRUModel(RecurrentModel, ByteGRUPreTrainedModel):
    """Byte embedding followed by a multi-layer ``nn.GRU``. Inputs, masks and outputs:
    :meth:`RecurrentModel.forward`."""

    _auto_class = "AutoModel"  # save_pretrained ships this file for trust_remote_code (see recurrent_lm.py)

    def __init__(self, config: ByteGRUConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.gru = nn.GRU(config.embedding_size, config.hidden_size, num_layers=config.num_layers, batch_first=True)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def state_shapes(self, batch_size: int) -> tuple[tuple[int, ...], ...]:
        return ((self.config.num_layers, batch_size, self.config.hidden_size),)

    def _run_all_layers(self, x: Tensor, state: State) -> tuple[Tensor, State, list, list]:
        """nn.GRU over (B, T', E): the fast path, when no per-layer sequence is asked for."""
        out, hidden = self.gru(x, state[0])
        return out, (hidden,), [], []

    def _run_layer(self, layer: int, x: Tensor, state: State) -> tuple[Tensor, State, list, list]:
        """One layer of the GRU over (B, T', I) from its state ((1, B, H)); returns its (B, T', H) outputs too."""
        weights = [getattr(self.gru, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        out, h = torch._VF.gru(x, state[0], weights, True, 1, 0.0, self.training, False, True)
        return out, (h,), [out], []

    def _forward_layers(self, input_ids, state, hold, reset, output_hidden_states, output_cell_states):
        embedded = self.embeddings(input_ids)  # (B, T, E)
        if output_hidden_states:  # per-layer outputs: layer by layer
            return run_layers_in_segments(self._run_layer, self.config.num_layers, embedded, state, reset, hold)
        return run_in_segments(self._run_all_layers, embedded, state, reset, hold)


class ByteGRUForCausalLM(RecurrentForCausalLM, ByteGRUPreTrainedModel):
    """GRU byte language model: :class:`ByteGRUModel` plus a linear next-byte head.

    Example:

    ```python
    >>> import torch, bytezoo
    >>> model = bytezoo.create_model("gru-256")
    >>> out = model(torch.tensor([list(b"Hello")]))
    ```"""

    _auto_class = "AutoModelForCausalLM"  # save_pretrained ships this file for trust_remote_code (see recurrent_lm.py)
    body_class = ByteGRUModel


class ByteGRUForSequenceClassification(RecurrentForSequenceClassification, ByteGRUPreTrainedModel):
    """:class:`ByteGRUModel` plus a linear head on a pooled text feature (:class:`RecurrentForSequenceClassification`).

    ```python
    >>> from transformers import AutoModelForSequenceClassification
    >>> model = AutoModelForSequenceClassification.from_pretrained("runs/lm/model", num_labels=2)  # doctest: +SKIP
    ```"""

    _auto_class = "AutoModelForSequenceClassification"  # save_pretrained ships this file for trust_remote_code
    body_class = ByteGRUModel


__all__ = ["ByteGRUForCausalLM", "ByteGRUForSequenceClassification", "ByteGRUModel", "ByteGRUPreTrainedModel"]
