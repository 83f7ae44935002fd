"""The mLSTM recurrence on NVIDIA GPUs: Triton kernels for the per-step pointwise work, cuBLAS for the products.

Per step the forward runs two cuBLAS products (``a = h_in @ W_mh``; ``z = gates_x[t] + (mx[t] * a) @ W_h``) and one
Triton kernel that applies the gate activations, updates c and h (fp32), applies hold, and writes the next step's
reset-masked state both in fp32 and in the products' dtype. The backward runs one Triton kernel per step (the
gradient-dependent update of :mod:`bytezoo.kernels.mlstm.common`) and two cuBLAS products; its coefficients and the
weight gradients are computed for all steps at once.

Inputs may be float32, float16 or bfloat16 (as the capability table in :mod:`bytezoo.kernels.mlstm.interface` says):
products in that dtype with fp32 accumulation, state and gate math in fp32. The kernels are jitted on first use, so
``TRITON_INTERPRET=1`` set at any time before the first call runs them on CPU tensors (that is how they are tested
without a GPU). Written for Triton 3.6 and later; no block pointers.
"""
from __future__ import annotations

import functools

import torch

from .common import (
    StepMasks,
    backward_coefficients,
    gathered_input_engine,
    input_gradients,
    time_major,
)

try:
    import triton
    import triton.language as tl
except ImportError:  # the "triton" kernel then reports itself unavailable
    triton = None
    tl = None

_BLOCK = 1024


def available() -> bool:
    return triton is not None


def interpreting() -> bool:
    return triton is not None and bool(triton.knobs.runtime.interpret)


def _cell_forward(
    Z, C_IN, H_IN, HELD, KEEP_NEXT,  # inputs: z (B, 4H); c_in, h_in (B, H) fp32; held (B,) int8; keep_{t+1} (B,) fp32
    GATES, C_OUT, H_OUT, C_NEXT, H_NEXT, H_NEXT_MM,  # outputs
    n_elements, hidden,
    HAS_HOLD: tl.constexpr, HAS_RESET: tl.constexpr, SAVE_GATES: tl.constexpr, BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    row = offsets // hidden
    gate = row * 4 * hidden + offsets % hidden  # index of gate i in (B, 4H)
    # Sigmoid and tanh written with tl.exp: triton.language's own are @jit helpers, which the interpreter can run
    # only when TRITON_INTERPRET was set before triton was imported.
    i = 1 / (1 + tl.exp(-tl.load(Z + gate, mask=mask, other=0.0).to(tl.float32)))
    f = 1 / (1 + tl.exp(-tl.load(Z + gate + hidden, mask=mask, other=0.0).to(tl.float32)))
    o = 1 / (1 + tl.exp(-tl.load(Z + gate + 2 * hidden, mask=mask, other=0.0).to(tl.float32)))
    u = 2 / (1 + tl.exp(-2 * tl.load(Z + gate + 3 * hidden, mask=mask, other=0.0).to(tl.float32))) - 1  # tanh
    c_in = tl.load(C_IN + offsets, mask=mask, other=0.0)
    h_in = tl.load(H_IN + offsets, mask=mask, other=0.0)
    c = f * c_in + i * u
    h = o * (2 / (1 + tl.exp(-2 * c)) - 1)
    if HAS_HOLD:
        held = tl.load(HELD + row, mask=mask, other=0) != 0
        c = tl.where(held, c_in, c)
        h = tl.where(held, h_in, h)
    if SAVE_GATES:
        tl.store(GATES + gate, i, mask=mask)
        tl.store(GATES + gate + hidden, f, mask=mask)
        tl.store(GATES + gate + 2 * hidden, o, mask=mask)
        tl.store(GATES + gate + 3 * hidden, u, mask=mask)
    tl.store(C_OUT + offsets, c, mask=mask)
    tl.store(H_OUT + offsets, h, mask=mask)
    if HAS_RESET:
        keep = tl.load(KEEP_NEXT + row, mask=mask, other=1.0)
        c = c * keep
        h = h * keep
    tl.store(C_NEXT + offsets, c, mask=mask)
    tl.store(H_NEXT + offsets, h, mask=mask)
    tl.store(H_NEXT_MM + offsets, h.to(H_NEXT_MM.dtype.element_ty), mask=mask)


def _cell_backward(
    GRAD_H, STATE_GRAD, D_HS, GRAD_C, D_CS,  # carried dL/dh (fp32), (da @ W_mh^T) of step t+1, output grads, dL/dc
    CELL_COEF, GATE_COEF, CARRY_COEF, PASS_COEF,  # K (B, H), P (B, 4H), FK (B, H), held*keep (B,)
    D_GATES, GRAD_C_PREV, GRAD_H_PASS,  # outputs: dz (B, 4H); dL/dc_{t-1}; g_h * held * keep
    n_elements, hidden,
    HAS_STATE_GRAD: tl.constexpr, HAS_D_HS: tl.constexpr, HAS_D_CS: tl.constexpr, HAS_HOLD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    row = offsets // hidden
    gate = row * 4 * hidden + offsets % hidden
    grad_h = tl.load(GRAD_H + offsets, mask=mask, other=0.0)
    if HAS_STATE_GRAD:
        grad_h += tl.load(STATE_GRAD + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_D_HS:
        grad_h += tl.load(D_HS + offsets, mask=mask, other=0.0).to(tl.float32)
    grad_c = tl.load(GRAD_C + offsets, mask=mask, other=0.0)
    if HAS_D_CS:
        grad_c += tl.load(D_CS + offsets, mask=mask, other=0.0).to(tl.float32)
    grad_c_total = grad_c + grad_h * tl.load(CELL_COEF + offsets, mask=mask, other=0.0)
    out_dtype = D_GATES.dtype.element_ty
    coef_i = tl.load(GATE_COEF + gate, mask=mask, other=0.0)
    coef_f = tl.load(GATE_COEF + gate + hidden, mask=mask, other=0.0)
    coef_o = tl.load(GATE_COEF + gate + 2 * hidden, mask=mask, other=0.0)
    coef_u = tl.load(GATE_COEF + gate + 3 * hidden, mask=mask, other=0.0)
    tl.store(D_GATES + gate, (coef_i * grad_c_total).to(out_dtype), mask=mask)
    tl.store(D_GATES + gate + hidden, (coef_f * grad_c_total).to(out_dtype), mask=mask)
    tl.store(D_GATES + gate + 2 * hidden, (coef_o * grad_h).to(out_dtype), mask=mask)  # o sees dL/dh directly
    tl.store(D_GATES + gate + 3 * hidden, (coef_u * grad_c_total).to(out_dtype), mask=mask)
    tl.store(GRAD_C_PREV + offsets, grad_c_total * tl.load(CARRY_COEF + offsets, mask=mask, other=0.0), mask=mask)
    if HAS_HOLD:
        tl.store(GRAD_H_PASS + offsets, grad_h * tl.load(PASS_COEF + row, mask=mask, other=0.0), mask=mask)


@functools.cache
def _kernels(interpret: bool):
    """Jits the kernels for the current mode (compiled or interpreted); ``interpret`` keys the cache."""
    return triton.jit(_cell_forward), triton.jit(_cell_backward)


def _grid(n_elements: int) -> tuple[tuple[int], int]:
    block = min(_BLOCK, triton.next_power_of_2(n_elements))
    return (triton.cdiv(n_elements, block),), block


def triton_forward(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save):
    """Forward recurrence; returns (hs, cs, h_T, c_T, saved) like
    :func:`bytezoo.kernels.mlstm.fused_torch.fused_forward`."""
    forward_kernel, _ = _kernels(interpreting())
    batch, steps, four_hidden = gates_x.shape
    hidden = four_hidden // 4
    mm_dtype, acc, device = gates_x.dtype, torch.float32, gates_x.device
    gx = time_major(gates_x)  # (T, B, 4H)
    mx = time_major(mult_x)  # (T, B, H)
    w_mh, w_h = w_mh.contiguous(), w_h.contiguous()
    masks = StepMasks.build(reset, hold, acc)
    keep_rows = None if masks.keep is None else masks.keep.squeeze(-1).contiguous()  # (T, B)
    held_rows = None if masks.held is None else masks.held.squeeze(-1).to(torch.int8).contiguous()  # (T, B)

    h_init = gx.new_zeros(batch, hidden, dtype=acc) if h0 is None else h0.to(acc).contiguous()
    c_init = torch.zeros_like(h_init) if c0 is None else c0.to(acc).contiguous()
    h_in, c_in = h_init, c_init
    if keep_rows is not None:  # a reset before step 0
        h_in, c_in = h_in * keep_rows[0, :, None], c_in * keep_rows[0, :, None]
    h_in_mm = h_in.to(mm_dtype)
    hiddens = torch.empty(steps, batch, hidden, dtype=acc, device=device)
    cells = torch.empty_like(hiddens)
    gates_all = torch.empty(steps, batch, four_hidden, dtype=acc, device=device) if save else None
    products = torch.empty(steps if save else 1, batch, hidden, dtype=mm_dtype, device=device)  # a = h_in @ W_mh
    z = torch.empty(batch, four_hidden, dtype=mm_dtype, device=device)
    next_buffers = [torch.empty_like(hiddens[0]) for _ in range(4)] + [torch.empty_like(h_in_mm) for _ in range(2)]
    n_elements = batch * hidden
    grid, block = _grid(n_elements)
    for t in range(steps):
        product = products[t if save else 0]
        torch.mm(h_in_mm, w_mh, out=product)
        torch.addmm(gx[t], product * mx[t], w_h, out=z)
        c_next, h_next = next_buffers[2 * (t % 2)], next_buffers[2 * (t % 2) + 1]
        h_next_mm = next_buffers[4 + t % 2]
        has_reset = keep_rows is not None and t + 1 < steps
        forward_kernel[grid](
            z, c_in, h_in, held_rows[t] if held_rows is not None else z, keep_rows[t + 1] if has_reset else z,
            gates_all[t] if save else z, cells[t], hiddens[t], c_next, h_next, h_next_mm,
            n_elements, hidden,
            HAS_HOLD=held_rows is not None, HAS_RESET=has_reset, SAVE_GATES=save, BLOCK=block,
        )
        c_in, h_in, h_in_mm = c_next, h_next, h_next_mm
    hs = hiddens.transpose(0, 1).to(mm_dtype, memory_format=torch.contiguous_format, copy=True)
    cs = cells.transpose(0, 1).to(mm_dtype, memory_format=torch.contiguous_format, copy=True) if return_cells else None
    state_dtype = mm_dtype if h0 is None else h0.dtype
    h_last, c_last = hiddens[-1].to(state_dtype, copy=True), cells[-1].to(state_dtype, copy=True)
    saved = None
    if save:
        saved = (backward_coefficients(gates_all, cells, hiddens, h_init, c_init, mx, masks), products, mx)
    return hs, cs, h_last, c_last, saved


def triton_backward(saved, w_mh, w_h, d_hs, d_cs, d_h_last, d_c_last, needs):
    """Backward recurrence; same contract as :func:`bytezoo.kernels.mlstm.fused_torch.fused_backward`."""
    _, backward_kernel = _kernels(interpreting())
    coefs, products, mx = saved
    steps, batch, four_hidden = coefs.gate_coef.shape
    hidden = four_hidden // 4
    mm_dtype, device = mx.dtype, mx.device
    pass_rows = None if coefs.pass_coef is None else coefs.pass_coef.squeeze(-1).contiguous()  # (T, B)
    d_hs = time_major(d_hs)  # (T, B, H), the outputs' dtype
    d_cs = time_major(d_cs)
    w_h_t, w_mh_t = w_h.t(), w_mh.t()
    grad_h = torch.zeros_like(coefs.h_in[0]) if d_h_last is None else d_h_last.float().contiguous()
    grad_c = torch.zeros_like(coefs.h_in[0]) if d_c_last is None else d_c_last.float().contiguous()
    grad_c_buffers = [torch.empty_like(grad_c) for _ in range(2)]
    grad_h_pass = torch.zeros_like(grad_h)
    state_grad = torch.empty(batch, hidden, dtype=mm_dtype, device=device)  # (da @ W_mh^T) of step t+1
    d_gates = torch.empty(steps, batch, four_hidden, dtype=mm_dtype, device=device)
    d_mult = torch.empty(steps, batch, hidden, dtype=mm_dtype, device=device)
    d_mult_keep = torch.empty_like(d_mult)
    n_elements = batch * hidden
    grid, block = _grid(n_elements)
    for step, t in enumerate(range(steps - 1, -1, -1)):
        grad_c_prev = grad_c_buffers[step % 2]
        backward_kernel[grid](
            grad_h, state_grad, d_hs[t] if d_hs is not None else grad_h,
            grad_c, d_cs[t] if d_cs is not None else grad_c,
            coefs.cell_coef[t], coefs.gate_coef[t], coefs.carry_coef[t],
            pass_rows[t] if pass_rows is not None else grad_h,
            d_gates[t], grad_c_prev, grad_h_pass,
            n_elements, hidden,
            HAS_STATE_GRAD=step > 0, HAS_D_HS=d_hs is not None, HAS_D_CS=d_cs is not None,
            HAS_HOLD=pass_rows is not None, BLOCK=block,
        )
        torch.mm(d_gates[t], w_h_t, out=d_mult[t])
        torch.mul(d_mult[t], coefs.mult_keep[t], out=d_mult_keep[t])
        torch.mm(d_mult_keep[t], w_mh_t, out=state_grad)
        grad_c = grad_c_prev
        grad_h = grad_h_pass  # the held part; the kernel of step t-1 adds state_grad and the outputs' gradient
    d_h0 = grad_h + state_grad.float()

    return input_gradients(coefs, d_gates, d_mult, d_mult_keep, mx, products, d_h0, grad_c, needs)


# The autograd wrapper and the entry point (same contract as naive.mlstm_scan_ref, gathered inputs only).
TritonMLSTMScan, mlstm_scan_triton = gathered_input_engine(
    "Triton", "mlstm_scan_triton", triton_forward, triton_backward, "the Triton engine"
)
