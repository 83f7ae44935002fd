"""The mLSTM recurrence in plain PyTorch: a loop over time, upcast to (at least) float32. The ground truth for every
fast path; float64 inputs run in float64, so ``gradcheck`` can use it.

Only torch is imported here, so this file also serves checkpoints loaded with ``trust_remote_code`` where bytezoo is
not installed.
"""
from __future__ import annotations

import torch
from torch import Tensor


def mlstm_scan_ref(
    gates_x: Tensor,
    mult_x: Tensor,
    w_mh: Tensor,
    w_h: Tensor,
    h0: Tensor | None = None,
    c0: Tensor | None = None,
    reset: Tensor | None = None,
    hold: Tensor | None = None,
    return_cells: bool = False,
    input_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Run one mLSTM layer over a sequence whose input projections are already computed.

    Per step t (gate order i, f, o, u as in Radford et al. 2017)::

        m_t     = mult_x[:, t] * (h_{t-1} @ w_mh)          # (B, H)
        z_t     = gates_x[:, t] + m_t @ w_h                 # (B, 4H)
        i, f, o = sigmoid(z_t[:, :3H]).chunk(3);  u = tanh(z_t[:, 3H:])
        c_t     = f * c_{t-1} + i * u;  h_t = o * tanh(c_t)

    Args:
        gates_x: (B, T, 4H) ``x_t @ W_x + b`` for every step.
        mult_x: (B, T, H) ``x_t @ W_mx`` for every step.
        w_mh: (H, H) recurrent weight of the multiplicative branch (weight norm already applied).
        w_h: (H, 4H) recurrent gate weight (weight norm already applied).
        h0, c0: (B, H) initial state; zeros when ``None``. Either both or neither.
        reset: (B, T) bool; ``True`` at t zeroes the state *before* step t (a document boundary).
        hold: (B, T) bool; ``True`` at t leaves the state unchanged by step t (padding): ``h_t = h_{t-1}``.
            A reset at the same position applies first.
        return_cells: also return every step's cell state.
        input_ids: (B, T) token ids, optional. Then ``gates_x`` (V, 4H) and ``mult_x`` (V, H) are per-token tables and
            step t of sequence b reads row ``input_ids[b, t]`` of each (a byte model's first layer, V = 256): the same
            as passing ``gates_x[input_ids]`` and ``mult_x[input_ids]``. Every engine takes this argument; the fast
            ones read the rows in place where they can (see :mod:`bytezoo.kernels.mlstm.interface`).

    Returns:
        ``(hs, cs, h_T, c_T)``: hs (B, T, H) every step's hidden state; cs (B, T, H) every step's cell state or
        ``None``; h_T, c_T (B, H) the final state. hs and cs have ``gates_x``'s dtype; the final state has the dtype
        of ``h0`` when given, else ``gates_x``'s.
    """
    if input_ids is not None:  # (V, ...) tables: one row per token
        gates_x, mult_x = gates_x[input_ids], mult_x[input_ids]  # (B, T, 4H), (B, T, H)
    batch, steps, four_hidden = gates_x.shape
    hidden = four_hidden // 4
    out_dtype = gates_x.dtype
    state_dtype = h0.dtype if h0 is not None else out_dtype
    acc = torch.promote_types(out_dtype, torch.float32)  # the math dtype: float32, or float64 for float64 inputs
    gx, mx = gates_x.to(acc), mult_x.to(acc)
    wmh, wh = w_mh.to(acc), w_h.to(acc)
    h = gx.new_zeros(batch, hidden) if h0 is None else h0.to(acc)
    c = gx.new_zeros(batch, hidden) if c0 is None else c0.to(acc)
    hs, cs = [], []
    for t in range(steps):
        if reset is not None:
            keep = (~reset[:, t]).to(acc).unsqueeze(1)  # (B, 1)
            h, c = h * keep, c * keep
        m = mx[:, t] * (h @ wmh)  # (B, H)
        z = gx[:, t] + m @ wh  # (B, 4H)
        ifo = torch.sigmoid(z[:, : 3 * hidden])
        i, f, o = ifo.chunk(3, dim=1)
        u = torch.tanh(z[:, 3 * hidden :])
        c_new = f * c + i * u
        h_new = o * torch.tanh(c_new)
        if hold is not None:
            held = hold[:, t].unsqueeze(1)  # (B, 1)
            h_new = torch.where(held, h, h_new)
            c_new = torch.where(held, c, c_new)
        h, c = h_new, c_new
        hs.append(h)
        if return_cells:
            cs.append(c)
    hs_out = torch.stack(hs, dim=1).to(out_dtype) if steps else gx.new_zeros(batch, 0, hidden, dtype=out_dtype)
    cs_out = None
    if return_cells:
        cs_out = torch.stack(cs, dim=1).to(out_dtype) if steps else gx.new_zeros(batch, 0, hidden, dtype=out_dtype)
    return hs_out, cs_out, h.to(state_dtype), c.to(state_dtype)
