"""The mLSTM recurrence as plain-PyTorch loops fused per step, with a hand-written backward: the engine for any device
and any floating dtype, and the CPU fallback where the compiled loops (:mod:`bytezoo.kernels.mlstm.fused_cpu`) cannot
be built.

Same algorithm as the compiled loops, in ATen ops: time-major tensors (every step reads and writes contiguous (B, ...)
blocks), a handful of in-place ops per step, no autograd graph per step; the backward's coefficients computed for all
steps at once after the forward, and the weight gradients as two large products over all B*T positions (the algebra
is in :mod:`bytezoo.kernels.mlstm.common`). Recurrent weights are packed for oneDNN where that measured faster
(:mod:`bytezoo.kernels.mlstm.packing`). On CUDA this is cuBLAS + ATen ops.

It reads gathered (B, T, ...) inputs only: for a byte model's (V, ...) tables :func:`bytezoo.kernels.mlstm_scan`
gathers the rows first (the capability table in :mod:`bytezoo.kernels.mlstm.interface` says which engines need that).
"""
from __future__ import annotations

import torch

from .common import (
    StepMasks,
    accumulate_dtype,
    backward_coefficients,
    gathered_input_engine,
    input_gradients,
    time_major,
)
from .packing import RecurrentMatmul


def fused_forward(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save):
    """The forward recurrence. Returns (hs, cs, h_T, c_T, saved) with ``saved`` the backward's inputs or None.

    Matrix products run in the inputs' dtype; the state and the gate math in :func:`accumulate_dtype` of it.
    """
    batch, steps, four_hidden = gates_x.shape
    hidden = four_hidden // 4
    mm_dtype = gates_x.dtype
    acc = accumulate_dtype(mm_dtype)
    h = gates_x.new_zeros(batch, hidden, dtype=acc) if h0 is None else h0.to(acc)
    c = torch.zeros_like(h) if c0 is None else c0.to(acc)
    gx = time_major(gates_x)  # (T, B, 4H)
    mx = time_major(mult_x)  # (T, B, H)
    masks = StepMasks.build(reset, hold, acc)
    h_init, c_init = h, c
    state_matmul = RecurrentMatmul(w_mh, batch, steps)  # h_in @ W_mh
    mult_matmul = RecurrentMatmul(w_h, batch, steps)  # gates_x[t] + m @ W_h

    hiddens = torch.empty(steps, batch, hidden, dtype=acc, device=gx.device)
    cells = torch.empty_like(hiddens)
    # Gate activations and a = h_in @ W_mh for every step when the backward needs them, else one reused slot.
    slots = steps if save else 1
    gates_all = torch.empty(slots, batch, four_hidden, dtype=acc, device=gx.device)
    products = torch.empty(slots, batch, hidden, dtype=mm_dtype, device=gx.device)
    z_buffer = None if acc == mm_dtype else torch.empty(batch, four_hidden, dtype=mm_dtype, device=gx.device)
    # Per-step views made once (indexing inside the loop costs more than the math at small sizes).
    gate_steps, product_steps = gates_all.unbind(0), products.unbind(0)
    sigmoid_steps, tanh_steps = gates_all[..., : 3 * hidden].unbind(0), gates_all[..., 3 * hidden :].unbind(0)
    i_steps, f_steps, o_steps, u_steps = (gates_all[..., k * hidden : (k + 1) * hidden].unbind(0) for k in range(4))
    gx_steps, mx_steps, hidden_steps, cell_steps = gx.unbind(0), mx.unbind(0), hiddens.unbind(0), cells.unbind(0)
    keep_steps = None if masks.keep is None else masks.keep.unbind(0)
    held_steps = None if masks.held is None else masks.held.unbind(0)
    for t in range(steps):
        slot = t if save else 0
        if keep_steps is not None:
            h, c = h * keep_steps[t], c * keep_steps[t]
        a = state_matmul(h if acc == mm_dtype else h.to(mm_dtype), out=product_steps[slot])  # (B, H)
        if z_buffer is None:
            mult_matmul(a * mx_steps[t], add=gx_steps[t], out=gate_steps[slot])  # z (B, 4H)
        else:
            gate_steps[slot].copy_(mult_matmul(a * mx_steps[t], add=gx_steps[t], out=z_buffer))
        sigmoid_steps[slot].sigmoid_()
        tanh_steps[slot].tanh_()
        c_new = torch.mul(f_steps[slot], c, out=cell_steps[t]).addcmul_(i_steps[slot], u_steps[slot])  # (B, H)
        h_new = torch.mul(o_steps[slot], torch.tanh(c_new), out=hidden_steps[t])
        if held_steps is not None:
            torch.where(held_steps[t], c, c_new, out=c_new)
            torch.where(held_steps[t], h, h_new, out=h_new)
        h, c = h_new, c_new
    # Outputs are fresh (B, T, H) tensors, never views of the buffers the backward reads.
    hs = hiddens.transpose(0, 1).to(mm_dtype, memory_format=torch.contiguous_format, copy=True)
    cs = cells.transpose(0, 1).to(mm_dtype, memory_format=torch.contiguous_format, copy=True) if return_cells else None
    state_dtype = mm_dtype if h0 is None else h0.dtype
    saved = None
    if save:  # computed here, so the backward only reads what it is given (it may run more than once)
        saved = (backward_coefficients(gates_all, cells, hiddens, h_init, c_init, mx, masks), products, mx)
    return hs, cs, h.to(state_dtype, copy=True), c.to(state_dtype, copy=True), saved


def fused_backward(saved, w_mh, w_h, d_hs, d_cs, d_h_last, d_c_last, needs):
    """The backward recurrence. ``needs`` = (gates_x, mult_x, w_mh, w_h, h0, c0) input-gradient flags."""
    coefs, products, mx = saved
    steps, batch, four_hidden = coefs.gate_coef.shape
    hidden = four_hidden // 4
    acc, mm_dtype = coefs.gate_coef.dtype, mx.dtype
    d_hs = time_major(d_hs, acc)  # (T, B, H) or None
    d_cs = time_major(d_cs, acc)
    grad_h = torch.zeros_like(coefs.h_in[0]) if d_h_last is None else d_h_last.to(acc)  # dL/dh_t carried back
    grad_c = torch.zeros_like(coefs.h_in[0]) if d_c_last is None else d_c_last.to(acc)
    gate_grad_matmul = RecurrentMatmul(w_h.t(), batch, steps)  # dz @ W_h^T
    state_grad_matmul = RecurrentMatmul(w_mh.t(), batch, steps)  # da @ W_mh^T

    d_gates = torch.empty(steps, batch, four_hidden, dtype=mm_dtype, device=mx.device)  # dz, also dL/dgates_x
    d_mult = torch.empty(steps, batch, hidden, dtype=mm_dtype, device=mx.device)  # dm
    d_mult_keep = torch.empty_like(d_mult)  # da = dm * mx * keep
    # Per-step views made once.
    gate_coef, d_quad = coefs.gate_coef.view(steps, batch, 4, hidden), d_gates.view(steps, batch, 4, hidden)
    gate_coef_steps, out_gate_coef_steps = gate_coef.unbind(0), gate_coef[:, :, 2].unbind(0)
    d_quad_steps, d_out_gate_steps, d_gate_steps = d_quad.unbind(0), d_quad[:, :, 2].unbind(0), d_gates.unbind(0)
    d_mult_steps, d_mult_keep_steps = d_mult.unbind(0), d_mult_keep.unbind(0)
    cell_coef_steps, carry_coef_steps = coefs.cell_coef.unbind(0), coefs.carry_coef.unbind(0)
    mult_keep_steps = coefs.mult_keep.unbind(0)
    pass_coef_steps = None if coefs.pass_coef is None else coefs.pass_coef.unbind(0)
    for t in range(steps - 1, -1, -1):
        if d_hs is not None:
            grad_h = grad_h + d_hs[t]
        if d_cs is not None:
            grad_c = grad_c + d_cs[t]
        grad_c_total = torch.addcmul(grad_c, grad_h, cell_coef_steps[t])  # (B, H)
        torch.mul(gate_coef_steps[t], grad_c_total.unsqueeze(1), out=d_quad_steps[t])  # (B, 4, H)
        torch.mul(out_gate_coef_steps[t], grad_h, out=d_out_gate_steps[t])  # the output gate sees dL/dh directly
        dm = gate_grad_matmul(d_gate_steps[t], out=d_mult_steps[t])  # (B, H)
        torch.mul(dm, mult_keep_steps[t], out=d_mult_keep_steps[t])
        grad_c = grad_c_total.mul_(carry_coef_steps[t])
        passed = None if pass_coef_steps is None else grad_h * pass_coef_steps[t]
        if acc == mm_dtype:
            grad_h = state_grad_matmul(d_mult_keep_steps[t], add=passed)
        else:
            grad_h = state_grad_matmul(d_mult_keep_steps[t]).to(acc)
            if passed is not None:
                grad_h += passed

    return input_gradients(coefs, d_gates, d_mult, d_mult_keep, mx, products, grad_h, grad_c, needs)


# The autograd wrapper and the entry point (same contract as naive.mlstm_scan_ref, gathered inputs only).
FusedTorchMLSTMScan, mlstm_scan_fused_torch = gathered_input_engine(
    "FusedTorch", "mlstm_scan_fused_torch", fused_forward, fused_backward,
    "the fused_torch engine (plain-PyTorch loops)",
)
