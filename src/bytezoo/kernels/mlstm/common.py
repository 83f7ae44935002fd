"""Pieces shared by the mLSTM engines (fused PyTorch loops, compiled CPU loops, Triton): layouts, masks, the backward
algebra.

The PyTorch and Triton engines run time-major (T, B, ...) so that every step reads and writes contiguous (B, ...)
blocks. The backward pass is organised so that everything that does not depend on the recurrent gradient is computed
for all steps at once *before* the time loop, which leaves each step with one gradient-dependent pointwise update and
two matrix products. Per step t, with g_h = dL/dh_t and g_c = dL/dc_t (totals, including the outputs' gradients)::

    g_ct        = g_c + g_h * K_t                      K = o * (1 - tanh(c)^2)
    dz_t        = P_t * [g_ct, g_ct, g_h, g_ct]        P = [u i(1-i),  c_in f(1-f),  tanh(c) o(1-o),  i(1-u^2)]
    dm_t        = dz_t @ W_h^T
    g_c{t-1}    = g_ct * FK_t                          FK = (held ? 1 : f) * keep
    g_h{t-1}    = (dm_t * mx_t * keep_t) @ W_mh^T + g_h * held_t * keep_t

K and P are zeroed on held rows (padding), so a held step passes both gradients straight through; ``keep`` is 0 where
``reset`` restarts the state. Weight gradients are then two large products over all B*T positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def needs_autograd(*tensors: Tensor | None) -> bool:
    """Whether a call must build a graph (grad mode on and an input that requires grad): the engines then run their
    ``autograd.Function``, which saves what the backward reads; otherwise a forward that saves nothing."""
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of carried state and pointwise math: at least float32 (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def time_major(tensor: Tensor | None, dtype: torch.dtype | None = None) -> Tensor | None:
    """(B, T, ...) -> contiguous (T, B, ...), optionally cast."""
    if tensor is None:
        return None
    tensor = tensor.transpose(0, 1)
    return (tensor if dtype is None else tensor.to(dtype)).contiguous()


@dataclass
class StepMasks:
    """Per-step masks in time-major layout, as the fused loops consume them."""

    keep: Tensor | None  # (T, B, 1) accumulate dtype: 0 where the state restarts before the step
    held: Tensor | None  # (T, B, 1) bool: True where the step leaves the state unchanged

    @classmethod
    def build(cls, reset: Tensor | None, hold: Tensor | None, dtype: torch.dtype) -> "StepMasks":
        keep = None if reset is None else time_major(~reset, dtype).unsqueeze(-1)
        held = None if hold is None else time_major(hold).unsqueeze(-1)
        return cls(keep, held)


@dataclass
class BackwardCoefficients:
    """Everything the backward time loop needs that does not depend on the recurrent gradient, for all steps."""

    cell_coef: Tensor  # K (T, B, H)
    gate_coef: Tensor  # P (T, B, 4H), gate order i, f, o, u
    carry_coef: Tensor  # FK (T, B, H)
    mult_keep: Tensor  # mx * keep (T, B, H), matmul dtype
    pass_coef: Tensor | None  # held * keep (T, B, 1); None without hold
    h_in: Tensor  # (T, B, H) the state each step read (after reset), accumulate dtype


def backward_coefficients(
    gates: Tensor, cells: Tensor, hiddens: Tensor, h0: Tensor, c0: Tensor, mult_x: Tensor, masks: StepMasks
) -> BackwardCoefficients:
    """Turns the forward's activations into the backward coefficients. ``gates`` (T, B, 4H) is overwritten with P.

    gates: (T, B, 4H) post-activation i, f, o, u; cells, hiddens: (T, B, H) c_t, h_t; h0, c0: (B, H); mult_x: (T, B, H).
    """
    steps, batch, four_hidden = gates.shape
    hidden = four_hidden // 4
    c_in = torch.cat([c0.unsqueeze(0), cells[:-1]])  # (T, B, H)
    h_in = torch.cat([h0.unsqueeze(0), hiddens[:-1]])  # (T, B, H)
    keep, held = masks.keep, masks.held
    if keep is not None:
        c_in.mul_(keep)
        h_in.mul_(keep)
    quad = gates.view(steps, batch, 4, hidden)
    i, f, o, u = quad.unbind(2)
    # Few temporaries (these tensors are T*B*H large): each slot of P is written over the activation it replaces,
    # after every coefficient that reads that activation is done. addcmul(a, b, c, value=-1) is a - b*c.
    tanh_c = torch.tanh(cells)
    o_tanh = o * tanh_c
    cell_coef = torch.addcmul(o, o_tanh, tanh_c, value=-1)  # K = o (1 - tanh(c)^2)
    del tanh_c
    carry_coef = f.clone() if held is None else torch.where(held, 1.0, f)
    if keep is not None:
        carry_coef.mul_(keep)
    torch.addcmul(o_tanh, o_tanh, o, value=-1, out=o)  # tanh(c) o (1 - o)
    del o_tanh
    i_u = i * u
    torch.addcmul(i, i_u, u, value=-1, out=u)  # i (1 - u^2)
    torch.addcmul(i_u, i_u, i, value=-1, out=i)  # u i (1 - i)
    del i_u
    f.addcmul_(f, f, value=-1).mul_(c_in)  # c_in f (1 - f)
    pass_coef = None
    if held is not None:
        not_held = (~held).to(gates.dtype)  # (T, B, 1)
        cell_coef.mul_(not_held)
        quad.mul_(not_held.unsqueeze(-1))
        pass_coef = held.to(gates.dtype) if keep is None else held.to(gates.dtype) * keep
    mult_keep = mult_x if keep is None else mult_x * keep.to(mult_x.dtype)
    return BackwardCoefficients(cell_coef, gates, carry_coef, mult_keep, pass_coef, h_in)


def weight_gradients(
    coefs: BackwardCoefficients,
    d_gates: Tensor,
    d_mult_keep: Tensor,
    mult_x: Tensor,
    mh_products: Tensor,
    need_w_mh: bool,
    need_w_h: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """dW_mh = sum_t h_in_t^T da_t and dW_h = sum_t m_t^T dz_t, each as one product over all B*T positions.

    d_gates: (T, B, 4H) dz; d_mult_keep: (T, B, H) da = dm * mx * keep; mh_products: (T, B, H) a = h_in @ W_mh.
    Rows a reset zeroed have h_in = 0, so the keep folded into da changes nothing here.
    """
    hidden = mult_x.shape[-1]
    dtype = d_gates.dtype
    d_w_mh = d_w_h = None
    if need_w_mh:
        d_w_mh = coefs.h_in.reshape(-1, hidden).to(dtype).t() @ d_mult_keep.reshape(-1, hidden)  # (H, H)
    if need_w_h:
        mult = (mult_x * mh_products).reshape(-1, hidden)  # m (T*B, H)
        d_w_h = mult.t() @ d_gates.reshape(-1, 4 * hidden)  # (H, 4H)
    return d_w_mh, d_w_h


def grads_in_input_dtypes(grads: tuple, dtypes: tuple) -> tuple:
    """A backward's ``(d_gates_x, d_mult_x, d_w_mh, d_w_h, d_h0, d_c0)`` cast to the dtypes of the inputs they belong
    to; ``dtypes`` = (gates_x dtype, mult_x dtype, state dtype or None), saved by the forward."""
    d_gx, d_mx, d_w_mh, d_w_h, d_h0, d_c0 = grads
    gx_dtype, mx_dtype, state_dtype = dtypes

    def cast(grad, dtype):
        return None if grad is None else grad.to(dtype)

    return cast(d_gx, gx_dtype), cast(d_mx, mx_dtype), d_w_mh, d_w_h, cast(d_h0, state_dtype), cast(d_c0, state_dtype)


def input_gradients(coefs, d_gates, d_mult, d_mult_keep, mx, products, d_h0, d_c0, needs) -> tuple:
    """The end of every backward: weight gradients as two large products over all steps, and the gradients of the
    inputs that need one, as ``(d_gates_x (B, T, 4H), d_mult_x (B, T, H), d_w_mh, d_w_h, d_h0, d_c0)``.

    ``d_gates`` (T, B, 4H), ``d_mult`` and ``d_mult_keep`` (T, B, H) come from the backward recurrence; ``needs`` are
    the six input-gradient flags of (gates_x, mult_x, w_mh, w_h, h0, c0).
    """
    need_gx, need_mx, need_w_mh, need_w_h, need_h0, need_c0 = needs
    d_w_mh, d_w_h = weight_gradients(coefs, d_gates, d_mult_keep, mx, products, need_w_mh, need_w_h)
    d_gates_x = d_gates.transpose(0, 1) if need_gx else None  # (B, T, 4H)
    d_mult_x = (d_mult * products).transpose(0, 1) if need_mx else None  # (B, T, H)
    return d_gates_x, d_mult_x, d_w_mh, d_w_h, d_h0 if need_h0 else None, d_c0 if need_c0 else None


def gathered_input_engine(name: str, entry_name: str, forward: Callable, backward: Callable, description: str):
    """The autograd ``Function`` (``{name}MLSTMScan``) and the entry point (``entry_name``) of an engine that reads
    gathered (B, T, ...) inputs (the plain-PyTorch loops, Triton), written once; both belong to ``forward``'s module.
    ``forward(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save)`` returns ``(hs, cs, h_last,
    c_last, saved)``; ``backward(saved, w_mh, w_h, d_hs, d_cs, d_h_last, d_c_last, needs)`` the six input gradients.
    ``description`` names the engine in messages."""

    class Scan(torch.autograd.Function):
        """Autograd wrapper: forward saves the backward coefficients the hand-written backward reads."""

        @staticmethod
        def forward(ctx, gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells):
            hs, cs, h_last, c_last, saved = forward(
                gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save=True
            )
            ctx.saved = saved  # internal buffers only (never the inputs or outputs), freed with the graph
            ctx.save_for_backward(w_mh, w_h)
            ctx.dtypes = (gates_x.dtype, mult_x.dtype, None if h0 is None else h0.dtype)
            return hs, cs, h_last, c_last

        @staticmethod
        @once_differentiable  # the hand-written backward is not itself differentiable
        def backward(ctx, d_hs, d_cs, d_h_last, d_c_last):
            w_mh, w_h = ctx.saved_tensors
            with torch.autocast(w_h.device.type, enabled=False):
                grads = backward(ctx.saved, w_mh, w_h, d_hs, d_cs, d_h_last, d_c_last, ctx.needs_input_grad[:6])
            return (*grads_in_input_dtypes(grads, ctx.dtypes), None, None, None)  # none for the masks and flag

    def scan(
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
        """Same contract as :func:`bytezoo.kernels.mlstm.naive.mlstm_scan_ref` (inputs already validated), except that
        table inputs arrive gathered: :func:`bytezoo.kernels.mlstm_scan` gathers them for this engine."""
        if input_ids is not None:
            raise ValueError(f"{description} reads gathered (B, T, ...) inputs; mlstm_scan gathers table rows")
        if needs_autograd(gates_x, mult_x, w_mh, w_h, h0, c0):
            return Scan.apply(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells)
        hs, cs, h_last, c_last, _ = forward(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save=False)
        return hs, cs, h_last, c_last

    Scan.__name__ = Scan.__qualname__ = f"{name}MLSTMScan"
    scan.__name__ = scan.__qualname__ = entry_name
    Scan.__module__ = scan.__module__ = forward.__module__
    return Scan, scan
