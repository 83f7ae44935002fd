"""The mLSTM recurrence with its time loops compiled in C++ (``csrc/mlstm_cpu.cpp``): the fast CPU engine for
float32, bfloat16 and float64, with a hand-written backward.

Per step the two matrix products plus one vectorised pointwise pass that also writes the backward's coefficients;
batch-major tensors in and out (no transposed copies); large buffers recycled between calls. The weight gradients are
then two large products over all B*T positions. Recurrent weights are packed for oneDNN where that measured faster,
and fp32 inference runs the loops' own register-blocked AVX-512 products, the pointwise work fused into each tile,
where the first-use calibration found them faster (:mod:`bytezoo.kernels.mlstm.packing`). It reads a byte model's
(V, ...) tables in place given ``input_ids``, so the first layer never materialises (B, T, 4H) inputs; the table
rows' gradients are summed here too.

Building and caching the shared library (compiler flags, build keys, locks, the fallback when no compiler is found) is
:mod:`bytezoo.kernels.mlstm.cpu_extension`, kept apart because it knows nothing of the recurrence and is tested on its
own. Where the library cannot be had, or with ``USE_COMPILED_LOOPS = False`` (or ``BYTEZOO_CPU_EXTENSION=0``), the
capability table in :mod:`bytezoo.kernels.mlstm.interface` sends ``kernel="fused"`` to the same algorithm as
plain-PyTorch loops (:mod:`bytezoo.kernels.mlstm.fused_torch`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import cpu_extension
from .common import accumulate_dtype, grads_in_input_dtypes, needs_autograd
from .packing import RecurrentMatmul, blocked_panels, stream_panels

# False keeps kernel="fused" on the plain-PyTorch loops (read at each call; the benchmarks' "fused-eager" and the
# tests switch it).
USE_COMPILED_LOOPS = True


def unavailable_reason() -> str | None:
    """Why the compiled loops cannot run in this process (switched off, no compiler, a failed build), or None when
    they can. The first call builds or loads the library."""
    if not USE_COMPILED_LOOPS:
        return "switched off (fused_cpu.USE_COMPILED_LOOPS = False)"
    if cpu_extension.cpu_ops() is None:
        return cpu_extension.unavailable_reason()
    return None


@dataclass
class CompiledSaved:
    """What the compiled forward leaves for the compiled backward, batch-major (B, T, ...) like the model's tensors."""

    gate_coef: Tensor  # P (B, T, 4H) accumulate dtype
    cell_coef: Tensor  # K (B, T, H)
    carry_coef: Tensor  # FK (B, T, H)
    h_in_0: Tensor  # (B, H) the state step 0 read (after its reset), accumulate dtype; later steps read hs[:, t-1]
    products: Tensor  # (B, T, H) a = h_in @ W_mh, input dtype
    mult_x: Tensor  # (B, T, H), or the (V, H) table with input_ids
    keep: Tensor | None  # (B, T) accumulate dtype, 0 where the state restarts
    held: Tensor | None  # (B, T) bool
    input_ids: Tensor | None  # (B, T) int64 when mult_x (and gates_x) are (V, ...) tables


def compiled_forward(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save, input_ids):
    """The forward recurrence, one C++ call for all T steps. Returns (hs, cs, h_T, c_T, saved) with ``saved`` a
    :class:`CompiledSaved` or None. Products in the inputs' dtype; state and gate math in :func:`accumulate_dtype`."""
    batch, steps = input_ids.shape if input_ids is not None else gates_x.shape[:2]
    hidden = gates_x.shape[-1] // 4
    acc = accumulate_dtype(gates_x.dtype)
    h = gates_x.new_zeros(batch, hidden, dtype=acc) if h0 is None else h0.to(acc)
    c = torch.zeros_like(h) if c0 is None else c0.to(acc)
    gates_x, mult_x = gates_x.contiguous(), mult_x.contiguous()
    input_ids = None if input_ids is None else input_ids.long().contiguous()
    keep = None if reset is None else (~reset).to(acc).contiguous()  # (B, T)
    held = None if hold is None else hold.contiguous()  # (B, T)
    ops = cpu_extension.cpu_ops()
    panels = blocked_panels(ops, w_mh, w_h, batch, steps, save)  # the register-blocked products, or None
    no_packing = False if panels is not None else None
    state_matmul = RecurrentMatmul(w_mh, batch, steps, pack=no_packing)  # h_in @ W_mh
    mult_matmul = RecurrentMatmul(w_h, batch, steps, pack=no_packing)  # m @ W_h
    w_mh_panels, w_h_panels = panels if panels is not None else (None, None)
    streamed = panels is not None and stream_panels(hidden)
    outputs = ops.forward(
        gates_x, mult_x, state_matmul.weight, mult_matmul.weight, state_matmul.packed, mult_matmul.packed,
        h.contiguous(), c.contiguous(), keep, held, input_ids, save, return_cells, w_mh_panels, w_h_panels, streamed,
    )
    hs, cs, h_last, c_last = outputs[:4]  # hs, cs (B, T, H) input dtype; h_last, c_last (B, H) accumulate dtype
    state_dtype = gates_x.dtype if h0 is None else h0.dtype
    saved = None
    if save:
        products, gate_coef, cell_coef, carry_coef, h_in_0 = outputs[4:]
        saved = CompiledSaved(gate_coef, cell_coef, carry_coef, h_in_0, products, mult_x, keep, held, input_ids)
    return hs, cs if return_cells else None, h_last.to(state_dtype), c_last.to(state_dtype), saved


def compiled_backward(saved: CompiledSaved, hs, w_mh, w_h, d_hs, d_cs, d_h_last, d_c_last, needs):
    """The backward recurrence through the compiled loop, then the weight gradients as two large products.

    ``needs`` = (gates_x, mult_x, w_mh, w_h, h0, c0) input-gradient flags. ``hs`` (B, T, H) is the forward's output:
    step t >= 1 read the state hs[:, t-1] (times its reset mask, which the gradient da already carries), so the input
    states need not be stored.
    """
    need_gx, need_mx, need_w_mh, need_w_h, need_h0, need_c0 = needs
    batch, steps, hidden = hs.shape
    acc, dtype = saved.h_in_0.dtype, saved.mult_x.dtype
    gate_grad_matmul = RecurrentMatmul(w_h.t(), batch, steps)  # dz @ W_h^T
    state_grad_matmul = RecurrentMatmul(w_mh.t(), batch, steps)  # da @ W_mh^T
    zeros = saved.h_in_0.new_zeros(batch, hidden)
    d_gates, d_mult_x, d_mult_keep, mult, d_h0, d_c0 = cpu_extension.cpu_ops().backward(
        saved.gate_coef, saved.cell_coef, saved.carry_coef, saved.mult_x, saved.products, saved.keep, saved.held,
        gate_grad_matmul.weight, state_grad_matmul.weight, gate_grad_matmul.packed, state_grad_matmul.packed,
        None if d_hs is None else d_hs.to(dtype).contiguous(),
        None if d_cs is None else d_cs.to(dtype).contiguous(),
        zeros if d_h_last is None else d_h_last.to(acc).contiguous(),
        zeros if d_c_last is None else d_c_last.to(acc).contiguous(),
        saved.input_ids,
    )
    # dW_mh = sum over positions of h_in^T da, dW_h of m^T dz: two products over all B*T positions.
    d_w_mh = _state_weight_gradient(hs, saved.h_in_0, d_mult_keep) if need_w_mh else None
    d_w_h = mult.reshape(-1, hidden).t() @ d_gates.reshape(-1, 4 * hidden) if need_w_h else None
    if saved.input_ids is not None:  # table inputs: each row's gradient sums over the positions that read it
        ids, table_rows = saved.input_ids.reshape(-1), saved.mult_x.shape[0]

        def row_sums(grad: Tensor, width: int) -> Tensor:  # summed in the accumulate dtype (bf16 sums drift)
            return grad.new_zeros(table_rows, width, dtype=acc).index_add_(0, ids, grad.view(-1, width).to(acc))

        d_gates = row_sums(d_gates, 4 * hidden) if need_gx else None
        d_mult_x = row_sums(d_mult_x, hidden) if need_mx else None
    return (
        d_gates if need_gx else None, d_mult_x if need_mx else None, d_w_mh, d_w_h,
        d_h0 if need_h0 else None, d_c0 if need_c0 else None,
    )


def _state_weight_gradient(hs: Tensor, h_in_0: Tensor, d_mult_keep: Tensor) -> Tensor:
    """dW_mh = sum over (b, t) of h_in[b, t]^T da[b, t], with h_in[b, t] = hs[b, t-1] for t >= 1 and h_in_0 for t = 0.

    In the flat (B*T, H) layout row r-1 of hs is the input state of row r, except where a sequence starts: one product
    over all rows, then the B sequence starts corrected (their true state in, the previous sequence's last state out).
    """
    hidden = hs.shape[-1]
    hs_rows, da_rows = hs.reshape(-1, hidden), d_mult_keep.reshape(-1, hidden)  # (B*T, H)
    gradient = hs_rows[:-1].t() @ da_rows[1:]  # (H, H)
    correction = h_in_0.to(hs.dtype, copy=True)  # (B, H): the state each sequence's step 0 read ...
    correction[1:] -= hs[:-1, -1]  # ... minus what the shifted product paired with it (b-1's last state)
    return gradient.addmm_(correction.t(), d_mult_keep[:, 0])


class FusedCPUMLSTMScan(torch.autograd.Function):
    """Autograd wrapper: forward saves the backward coefficients the compiled backward reads, and its output hs."""

    @staticmethod
    def forward(ctx, gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, input_ids):
        hs, cs, h_last, c_last, saved = compiled_forward(
            gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save=True, input_ids=input_ids
        )
        ctx.saved = saved  # internal buffers only (never the inputs or outputs), freed with the graph
        ctx.save_for_backward(w_mh, w_h, hs)  # the backward reads hs (an output) as the steps' input states
        ctx.dtypes = (gates_x.dtype, mult_x.dtype, None if h0 is None else h0.dtype)
        return hs, cs, h_last, c_last

    @staticmethod
    @once_differentiable  # the hand-written backward is not itself differentiable
    def backward(ctx, d_hs, d_cs, d_h_last, d_c_last):
        w_mh, w_h, hs = ctx.saved_tensors
        with torch.autocast(w_h.device.type, enabled=False):
            needs = ctx.needs_input_grad[:6]
            grads = compiled_backward(ctx.saved, hs, w_mh, w_h, d_hs, d_cs, d_h_last, d_c_last, needs)
        return (*grads_in_input_dtypes(grads, ctx.dtypes), None, None, None, None)  # none for masks, flag, ids


def mlstm_scan_fused_cpu(
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
    """Same contract as :func:`bytezoo.kernels.mlstm.naive.mlstm_scan_ref` (inputs already validated, CPU tensors of a
    supported dtype, the library loaded: :func:`bytezoo.kernels.mlstm_scan` checks all three)."""
    if needs_autograd(gates_x, mult_x, w_mh, w_h, h0, c0):
        return FusedCPUMLSTMScan.apply(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, input_ids)
    hs, cs, h_last, c_last, _ = compiled_forward(
        gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save=False, input_ids=input_ids
    )
    return hs, cs, h_last, c_last
