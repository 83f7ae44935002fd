"""Byte-level decoder-only Transformer language model, through the zoo's recurrent-LM contract.

Pre-LayerNorm blocks (attention, then a GELU MLP), rotary positions, and a sliding attention window of
``config.context_size`` bytes. The window is what makes the Transformer fit the contract: its state is the keys and
values of the last ``context_size`` real bytes of each stream (a fixed-size KV cache), so a text read in chunks, or
decoded byte by byte in ``generate``, gives exactly what reading it at once gives, and pretraining carries the window
across windows of the corpus like the recurrent models carry their state.

State ``(key, value, position)``: key and value (num_layers, B, heads, context_size, head_size), position
(1, B, context_size) the position of each cached byte within its document, -1 for an empty slot. The cached bytes of
each stream are kept right-aligned (newest last), padding and earlier documents dropped, so every slot is useful.
Positions count real bytes only (padding holds them) and restart at a document boundary (``reset_mask``). A padding
position outputs what the latest real byte before it in the same call output (zeros before the first one), as a
recurrent family's held state does: a right-padded prompt's last logits are its last byte's, so batched `generate`
equals generating each prompt alone, with either padding side. (Unlike a recurrent state, the window does not keep
the previous call's last output: a call that starts with padding after a carried state outputs zeros there.)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import initialization as init

from .configuration_transformer import ByteTransformerConfig
from .recurrent_lm import (
    RecurrentForCausalLM,
    RecurrentForSequenceClassification,
    RecurrentModel,
    RecurrentPreTrainedModel,
    State,
)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary positions (the GPT-NeoX layout: the two halves of the head are the pairs): x (B, heads, T, D), cos and
    sin (B, 1, T, D/2)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def _held(x: Tensor, real: Tensor) -> Tensor:
    """x (B, T, H) with every padding position given the value at the latest real position before it in the row
    (zeros where the row has none yet in this call: the output of an empty context, as the recurrent families' zero
    initial state gives), so that the output at a right-padded text's last position is its last byte's, as for the
    recurrent families, whose held state outputs the last hidden state. ``real`` (B, T) bool."""
    steps = x.shape[1]
    order = torch.arange(steps, device=x.device).expand_as(real)  # (B, T)
    count = real.long().cumsum(1)  # (B, T) real positions at or before t
    # the k-th real position of each row (padding writes to a spare column T), then the latest one at or before t;
    # a scatter and a gather rather than cummax, which ONNX has no operator for
    kth = torch.zeros(real.shape[0], steps + 1, dtype=torch.long, device=x.device).scatter(
        1, torch.where(real, count - 1, steps), order)  # (B, T + 1)
    latest = kth.gather(1, (count - 1).clamp(min=0))  # (B, T)
    gathered = x.gather(1, latest.unsqueeze(-1).expand_as(x))
    return torch.where((count > 0).unsqueeze(-1), gathered, torch.zeros_like(x))


class TransformerBlock(nn.Module):
    def __init__(self, config: ByteTransformerConfig):
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size or 4 * config.hidden_size
        self.num_heads, self.head_size = config.num_heads, config.hidden_size // config.num_heads
        self.attention_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.mlp_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.mlp_in = nn.Linear(hidden, inner)
        self.mlp_out = nn.Linear(inner, hidden)
        self.dropout = nn.Dropout(config.dropout)
        for projection in (self.attention_out, self.mlp_out):  # they add to the residual stream
            projection.is_residual_projection = True

    def forward(self, x: Tensor, cached_key: Tensor, cached_value: Tensor, cos: Tensor, sin: Tensor, allowed: Tensor):
        """x (B, T, H); cached key/value (B, heads, W, D); allowed (B, 1, T, W + T) bool. Returns the block's output
        (B, T, H) and the keys and values of all W + T slots, each (B, heads, W + T, D)."""
        batch, steps, hidden = x.shape
        qkv = self.qkv(self.attention_norm(x)).view(batch, steps, 3, self.num_heads, self.head_size)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # each (B, heads, T, D)
        keys = torch.cat([cached_key.to(k.dtype), k], dim=2)  # (B, heads, W + T, D)
        values = torch.cat([cached_value.to(v.dtype), v], dim=2)
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)  # (B, heads, T, D)
        x = x + self.dropout(self.attention_out(attended.transpose(1, 2).reshape(batch, steps, hidden)))
        x = x + self.dropout(self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x)))))
        return x, keys, values


class ByteTransformerPreTrainedModel(RecurrentPreTrainedModel):
    config: ByteTransformerConfig
    config_class = ByteTransformerConfig
    _no_split_modules = ["TransformerBlock"]
    state_names = ("key", "value", "position")
    unit_states = ()  # no per-unit state: features come from the outputs (final_hidden, mean)
    resets_per_position = True  # document ids mask attention per position

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_projection", False):  # GPT-2: scaled down by the depth of the residual sum
                std = std / (2 * self.config.num_layers) ** 0.5
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class ByteTransformerModel(RecurrentModel, ByteTransformerPreTrainedModel):
    """Byte embedding, ``num_layers`` Transformer blocks, a final LayerNorm. Inputs, masks and outputs:
    :meth:`RecurrentModel.forward`; the state is the attention window (module docstring)."""

    _auto_class = "AutoModel"  # save_pretrained ships this file for trust_remote_code (see recurrent_lm.py)

    def __init__(self, config: ByteTransformerConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def state_shapes(self, batch_size: int) -> tuple[tuple[int, ...], ...]:
        config = self.config
        cache = (config.num_layers, batch_size, config.num_heads, config.context_size,
                 config.hidden_size // config.num_heads)
        return cache, cache, (1, batch_size, config.context_size)

    def initial_state(self, batch_size: int, dtype: torch.dtype | None = None) -> State:
        """An empty window: zero keys and values, every slot's position -1."""
        keys, values, _ = super().initial_state(batch_size, dtype)
        position = torch.full((1, batch_size, self.config.context_size), -1, dtype=torch.long, device=self.device)
        return keys, values, position

    def _positions(self, cached_position: Tensor, real: Tensor, reset: Tensor | None):
        """Each new byte's position in its document and document number (0 = the cached one): both (B, T)."""
        batch, steps = real.shape
        latest = cached_position[:, -1]  # (B,) newest cached byte (right-aligned), -1 if none
        counted = real.long()
        before = counted.cumsum(1) - counted  # real bytes before t in this call
        if reset is None:
            document = torch.zeros_like(counted)
            return before + (latest + 1).unsqueeze(1), document
        document = reset.long().cumsum(1)
        # real bytes before the current document's start; `before` never decreases, so a running max carries it
        start = torch.where(reset, before, torch.zeros_like(before)).cummax(dim=1).values
        offset = torch.where(document == 0, (latest + 1).unsqueeze(1), torch.zeros_like(before))
        return before - start + offset, document

    def _forward_layers(self, input_ids, state, hold, reset, output_hidden_states, output_cell_states):
        batch, steps = input_ids.shape
        window = self.config.context_size
        cached_keys, cached_values, cached_position = state[0], state[1], state[2][0]  # ..., (B, W)
        real = ~hold if hold is not None else torch.ones_like(input_ids, dtype=torch.bool)  # (B, T)
        position, document = self._positions(cached_position, real, reset)  # (B, T) each

        # Who may attend to whom: same document, not later, within the window, not padding.
        query_position, query_document = position.unsqueeze(2), document.unsqueeze(2)  # (B, T, 1)
        to_cache = (cached_position.unsqueeze(1) >= 0) & (query_document == 0) & (
            cached_position.unsqueeze(1) > query_position - window
        )  # (B, T, W)
        order = torch.arange(steps, device=input_ids.device)
        to_new = (
            real.unsqueeze(1)
            & (document.unsqueeze(1) == query_document)
            & (order.view(1, 1, steps) <= order.view(1, steps, 1))
            & (position.unsqueeze(1) > query_position - window)
        )  # (B, T, T)
        if hold is not None:  # a padding position attends to itself only: its output is finite and unused
            to_new = to_new | (torch.diag_embed(hold) & hold.unsqueeze(2))
            to_cache = to_cache & real.unsqueeze(2)
        allowed = torch.cat([to_cache, to_new], dim=2).unsqueeze(1)  # (B, 1, T, W + T)

        # Made here, not kept as a buffer: a loader that builds the model on the meta device leaves such buffers
        # unset. float64, so that positions in the millions (a pretraining stream) still rotate exactly.
        head_size = self.config.hidden_size // self.config.num_heads
        exponents = torch.arange(0, head_size, 2, dtype=torch.float64, device=input_ids.device) / head_size
        inverse_frequency = self.config.rope_theta**-exponents  # (D/2,)
        angles = position.clamp(min=0).unsqueeze(-1).double() * inverse_frequency  # (B, T, D/2)
        x = self.embeddings(input_ids)
        cos, sin = (f(angles).to(x.dtype).unsqueeze(1) for f in (torch.cos, torch.sin))  # (B, 1, T, D/2)

        hiddens, all_keys, all_values = [], [], []
        for index, block in enumerate(self.layers):
            x, keys, values = block(x, cached_keys[index], cached_values[index], cos, sin, allowed)
            if hold is not None:  # padding holds the last real byte's value, as a held recurrent state does; real
                x = _held(x, real)  # bytes never attend to padding, so the next layer may read it (and the returned
            hiddens.append(x)  # hidden states are the tensors on the path to the loss)
            all_keys.append(keys)
            all_values.append(values)
        new_state = self._next_window(cached_position, position, document, real, all_keys, all_values, state[0].dtype)
        output = self.norm(x)
        if hold is not None:  # padding outputs the last real byte's output (zeros before the first one)
            output = _held(output, real)
        return output, new_state, hiddens, []

    def _next_window(self, cached_position, position, document, real, all_keys, all_values, state_dtype) -> State:
        """The newest ``context_size`` bytes of each stream's current document, right-aligned: what later bytes can
        see."""
        batch, window = cached_position.shape
        slot_position = torch.cat([cached_position, torch.where(real, position, -1)], dim=1)  # (B, W + T)
        slot_document = torch.cat([torch.zeros_like(cached_position), document], dim=1)
        useful = (slot_position >= 0) & (slot_document == document[:, -1:])  # (B, W + T)
        rank = useful.flip(1).long().cumsum(1).flip(1)  # 1 = the newest useful slot
        keep = useful & (rank <= window)
        destination = torch.where(keep, window - rank, window)  # column `window` collects what is dropped
        source = torch.arange(slot_position.shape[1], device=slot_position.device).expand(batch, -1)
        pick = torch.zeros(batch, window + 1, dtype=torch.long,
                           device=slot_position.device).scatter_(1, destination, source)[:, :window]
        filled = torch.zeros(batch, window + 1, dtype=torch.bool,
                             device=slot_position.device).scatter_(1, destination, keep)[:, :window]
        new_position = torch.where(filled, slot_position.gather(1, pick), -1)  # (B, W)

        def gathered(parts):  # per layer (B, heads, W + T, D) -> (L, B, heads, W, D), empty slots zero
            stacked = torch.stack(parts)
            index = pick.view(1, batch, 1, window, 1).expand(stacked.shape[0], -1, stacked.shape[2], -1,
                                                             stacked.shape[4])
            return (stacked.gather(3, index) * filled.view(1, batch, 1, window, 1)).to(state_dtype)

        return gathered(all_keys), gathered(all_values), new_position.unsqueeze(0)


class ByteTransformerForCausalLM(RecurrentForCausalLM, ByteTransformerPreTrainedModel):
    """Byte-level Transformer language model: :class:`ByteTransformerModel` plus a linear next-byte head.

    Example:

    ```python
    >>> import torch, bytezoo
    >>> model = bytezoo.create_model("transformer-384")
    >>> out = model(torch.tensor([list(b"Hello")]))
    >>> more = model(torch.tensor([list(b", world")]), state=out.state)  # continue the text: the window is the state
    ```"""

    _auto_class = "AutoModelForCausalLM"  # save_pretrained ships this file for trust_remote_code (see recurrent_lm.py)
    body_class = ByteTransformerModel


class ByteTransformerForSequenceClassification(RecurrentForSequenceClassification, ByteTransformerPreTrainedModel):
    """:class:`ByteTransformerModel` plus a linear head on a pooled text feature
    (:class:`RecurrentForSequenceClassification`).

    ```python
    >>> from transformers import AutoModelForSequenceClassification
    >>> model = AutoModelForSequenceClassification.from_pretrained("runs/lm/model", num_labels=2)  # doctest: +SKIP
    ```"""

    _auto_class = "AutoModelForSequenceClassification"  # save_pretrained ships this file for trust_remote_code
    body_class = ByteTransformerModel


__all__ = ["ByteTransformerForCausalLM", "ByteTransformerForSequenceClassification", "ByteTransformerModel",
           "ByteTransformerPreTrainedModel"]
