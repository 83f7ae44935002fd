"""The fused mLSTM recurrence: an ``autograd.Function`` with a hand-written backward, for CPU (and any device).

Two engines run the same algorithm:
  * on CPU, the time loops compiled in C++ (``csrc/mlstm_cpu.cpp``, built on first use and cached, see
    :mod:`bytezoo.kernels._cpu_extension`): per step the two matrix products plus one vectorised pointwise pass that
    also writes the backward's coefficients; batch-major tensors in and out (no transposed copies); large buffers
    recycled between calls;
  * elsewhere, or where no compiler is found, plain-PyTorch loops below (time-major, a handful of in-place ATen ops
    per step, the coefficients computed for all steps at once after the forward).

Both pack the recurrent weights once per call into oneDNN's blocked layout where that measured faster (bf16 always,
fp32 from H = 1024, see ``PACK_MIN_SIZE``), as ``nn.LSTM``'s oneDNN kernel does, build no autograd graph per step, and
compute the weight gradients as two large products over all B*T positions (see :mod:`bytezoo.kernels._scan_common`
for the backward algebra).

Packing uses private ATen ops (``torch.ops.mkldnn._reorder_linear_weight`` / ``_linear_pointwise``, what inductor's
weight freezing uses). They are checked against ``torch.mm`` on first use and replaced by ``torch.mm``/``addmm`` if
missing or wrong; ``PACK_WEIGHTS = False`` turns them off. ``USE_COMPILED_LOOPS = False`` (or the environment variable
``BYTEZOO_CPU_EXTENSION=0``) keeps the plain-PyTorch loops. On CUDA this path is cuBLAS + ATen ops.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._scan_common import (
    StepMasks,
    accumulate_dtype,
    backward_coefficients,
    gather_rows,
    grads_in_input_dtypes,
    input_gradients,
    time_major,
)

PACK_WEIGHTS = True
# The time loops in C++ (csrc/mlstm_cpu.cpp, built on first use) for CPU tensors of these dtypes; False, or
# BYTEZOO_CPU_EXTENSION=0, keeps the plain-PyTorch loops below (the fallback where no compiler is found).
USE_COMPILED_LOOPS = True
_COMPILED_DTYPES = (torch.float32, torch.bfloat16, torch.float64)
_PACKABLE = (torch.float32, torch.bfloat16)
# When packing pays, measured (one thread, CPU time):
#  * Packing costs about as much as tens of steps' products (H=1024: ~20 ms fp32, ~7 ms bf16 per call), so a call
#    needs PACK_MIN_STEPS steps to earn it back: token-by-token generation (T=1) with packing ran 4x slower.
#    Forward, H=1024, packed vs plain ms: fp32 B=64 T=16 102 vs 85, T=64 329 vs 339, T=256 1144 vs 1285; bf16 B=64
#    T=16 29 vs 25, T=64 72 vs 97; bf16 B=1 T=64 40 vs 71.
#  * In fp32 only large products gain, and only at moderate batch sizes (MKL's plain GEMM wins for small and for very
#    tall inputs): B=8 T=64 93 vs 60, B=32 T=128 332 vs 338, B=128 T=32 288 vs 302, B=256 T=64 1075 vs 1020. Per
#    product, 50 calls, contiguous torch.mm vs packed: H=1024 B=64 W_h 187 vs 160, W_h^T 204 vs 165; H=512 B=32 W_h
#    23.4 vs 25.1; H=256 B=32 W_h 5.2 vs 5.9. So fp32 packs from PACK_MIN_SIZE, for PACK_FP32_BATCHES.
#  * In bf16 packing wins at any size (224 vs 156 GFLOP/s at H=256, 510 vs 332 at H=1024).
# Below these, torch.mm on a contiguous weight (a transposed view would run MKL's slower "B transposed" GEMM, so the
# backward's weights are copied once per call).
PACK_MIN_STEPS = 32
PACK_MIN_SIZE = 1024
PACK_FP32_BATCHES = range(32, 129)
_packing_verified: dict[torch.dtype, bool] = {}


def _packing_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN weight packing exists here and agrees with ``torch.mm`` (checked once per dtype)."""
    if dtype not in _packing_verified:
        try:
            generator = torch.Generator().manual_seed(0)
            x = torch.randn(3, 40, generator=generator).to(dtype)
            w = torch.randn(40, 24, generator=generator).to(dtype)
            add = torch.randn(3, 24, generator=generator).to(dtype)
            packed = torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous(), 3)
            plain = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
            fused = torch.ops.mkldnn._linear_pointwise.binary(x, add, packed, None, "add")
            tol = 1e-4 if dtype == torch.float32 else 5e-2
            expected = x.float() @ w.float()
            ok = torch.allclose(plain.float(), expected, rtol=tol, atol=tol * 10) and torch.allclose(
                fused.float(), expected + add.float(), rtol=tol, atol=tol * 10
            )
        except (RuntimeError, AttributeError, NotImplementedError):
            ok = False
        if not ok:
            warnings.warn(f"oneDNN weight packing is unavailable or wrong for {dtype}; the fused mLSTM uses torch.mm")
        _packing_verified[dtype] = ok
    return _packing_verified[dtype]


class RecurrentMatmul:
    """``x @ weight (+ add)`` for a weight (in, out) that every time step reuses: packed once where possible."""

    def __init__(self, weight: Tensor, batch: int, steps: int, pack: bool | None = None):
        pack = PACK_WEIGHTS if pack is None else pack
        self.packed = None
        worth_it = steps >= PACK_MIN_STEPS and (
            weight.dtype == torch.bfloat16 or (min(weight.shape) >= PACK_MIN_SIZE and batch in PACK_FP32_BATCHES)
        )
        packable = weight.device.type == "cpu" and weight.dtype in _PACKABLE and worth_it
        if pack and packable and _packing_works(weight.dtype):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous(), batch)
        # Unused when packed (no transposed copy then); else contiguous, for the faster non-transposed GEMM.
        self.weight = weight if self.packed is not None else weight.contiguous()

    def __call__(self, x: Tensor, add: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        if self.packed is not None:  # the packed ops have no out=
            if add is None:
                result = torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
            else:
                result = torch.ops.mkldnn._linear_pointwise.binary(x, add, self.packed, None, "add")
            return result if out is None else out.copy_(result)
        return torch.mm(x, self.weight, out=out) if add is None else torch.addmm(add, x, self.weight, out=out)


def fused_forward(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save, pack=None, input_ids=None):
    """The forward recurrence. Returns (hs, cs, h_T, c_T, saved) with ``saved`` the backward's inputs or None.

    Matrix products run in the inputs' dtype; the state and the gate math in :func:`accumulate_dtype` of it.
    ``input_ids`` (B, T): gates_x and mult_x are (V, ...) tables (see :func:`bytezoo.kernels.mlstm_scan`); only the
    compiled loops take them (:func:`mlstm_scan_fused` gathers the rows, under autograd, for the PyTorch loops).
    """
    batch, steps = input_ids.shape if input_ids is not None else gates_x.shape[:2]
    hidden = gates_x.shape[-1] // 4
    mm_dtype = gates_x.dtype
    acc = accumulate_dtype(mm_dtype)
    h = gates_x.new_zeros(batch, hidden, dtype=acc) if h0 is None else h0.to(acc)
    c = torch.zeros_like(h) if c0 is None else c0.to(acc)
    ops = compiled_loops(gates_x)
    if ops is not None:
        return _compiled_forward(
            ops, gates_x, mult_x, w_mh, w_h, h, c, h0, reset, hold, return_cells, save, pack, input_ids
        )
    if input_ids is not None:
        raise RuntimeError("the plain-PyTorch loops take gathered inputs: call mlstm_scan_fused, which gathers the rows")
    four_hidden = 4 * hidden
    gx = time_major(gates_x)  # (T, B, 4H)
    mx = time_major(mult_x)  # (T, B, H)
    masks = StepMasks.build(reset, hold, acc)
    h_init, c_init = h, c
    state_matmul = RecurrentMatmul(w_mh, batch, steps, pack)  # h_in @ W_mh
    mult_matmul = RecurrentMatmul(w_h, batch, steps, pack)  # gates_x[t] + m @ W_h

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


def fused_backward(saved, w_mh, w_h, d_hs, d_cs, d_h_last, d_c_last, needs, pack=None, hs=None):
    """The backward recurrence. ``needs`` = (gates_x, mult_x, w_mh, w_h, h0, c0) input-gradient flags; ``hs`` the
    forward's output, which the compiled path reads."""
    if isinstance(saved, CompiledSaved):
        return _compiled_backward(saved, hs, w_mh, w_h, d_hs, d_cs, d_h_last, d_c_last, needs, pack)
    coefs, products, mx = saved
    steps, batch, four_hidden = coefs.gate_coef.shape
    hidden = four_hidden // 4
    acc, mm_dtype = coefs.gate_coef.dtype, mx.dtype
    d_hs = time_major(d_hs, acc)  # (T, B, H) or None
    d_cs = time_major(d_cs, acc)
    grad_h = torch.zeros_like(coefs.h_in[0]) if d_h_last is None else d_h_last.to(acc)  # dL/dh_t carried back
    grad_c = torch.zeros_like(coefs.h_in[0]) if d_c_last is None else d_c_last.to(acc)
    gate_grad_matmul = RecurrentMatmul(w_h.t(), batch, steps, pack)  # dz @ W_h^T
    state_grad_matmul = RecurrentMatmul(w_mh.t(), batch, steps, pack)  # da @ W_mh^T

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


def compiled_loops(gates_x: Tensor):
    """The compiled time loops (``torch.ops.bytezoo_mlstm_cpu``) when they can run on ``gates_x``, else None."""
    if not USE_COMPILED_LOOPS or gates_x.device.type != "cpu" or gates_x.dtype not in _COMPILED_DTYPES:
        return None
    from ._cpu_extension import cpu_ops

    return cpu_ops()


@dataclass
class CompiledSaved:
    """What the compiled forward leaves for the compiled backward, batch-major (B, T, ...) like the model's tensors."""

    gate_coef: Tensor  # P (B, T, 4H) accumulate dtype
    cell_coef: Tensor  # K (B, T, H)
    carry_coef: Tensor  # FK (B, T, H)
    h_in_0: Tensor  # (B, H) the state step 0 read (after its reset), accumulate dtype; later steps read hs[:, t-1]
    products: Tensor  # (B, T, H) a = h_in @ W_mh, input dtype
    mult_x: Tensor  # (B, T, H)
    keep: Tensor | None  # (B, T) accumulate dtype, 0 where the state restarts
    held: Tensor | None  # (B, T) bool
    input_ids: Tensor | None  # (B, T) int64 when mult_x (and gates_x) are (V, ...) tables


def _compiled_forward(ops, gates_x, mult_x, w_mh, w_h, h, c, h0, reset, hold, return_cells, save, pack, input_ids):
    """:func:`fused_forward` through the compiled loop: the same results, one C++ call for all T steps."""
    batch, acc = h.shape[0], h.dtype
    steps = input_ids.shape[1] if input_ids is not None else gates_x.shape[1]
    gates_x, mult_x = gates_x.contiguous(), mult_x.contiguous()
    input_ids = None if input_ids is None else input_ids.long().contiguous()
    keep = None if reset is None else (~reset).to(acc).contiguous()  # (B, T)
    held = None if hold is None else hold.contiguous()  # (B, T)
    state_matmul = RecurrentMatmul(w_mh, batch, steps, pack)  # h_in @ W_mh
    mult_matmul = RecurrentMatmul(w_h, batch, steps, pack)  # m @ W_h
    outputs = ops.forward(
        gates_x, mult_x, state_matmul.weight, mult_matmul.weight, state_matmul.packed, mult_matmul.packed,
        h.contiguous(), c.contiguous(), keep, held, input_ids, save, return_cells,
    )
    hs, cs, h_last, c_last = outputs[:4]  # hs, cs (B, T, H) input dtype; h_last, c_last (B, H) accumulate dtype
    state_dtype = gates_x.dtype if h0 is None else h0.dtype
    saved = None
    if save:
        products, gate_coef, cell_coef, carry_coef, h_in_0 = outputs[4:]
        saved = CompiledSaved(gate_coef, cell_coef, carry_coef, h_in_0, products, mult_x, keep, held, input_ids)
    return hs, cs if return_cells else None, h_last.to(state_dtype), c_last.to(state_dtype), saved


def _compiled_backward(saved: CompiledSaved, hs, w_mh, w_h, d_hs, d_cs, d_h_last, d_c_last, needs, pack):
    """:func:`fused_backward` through the compiled loop, then the weight gradients as two large products.

    ``hs`` (B, T, H) is the forward's output: step t >= 1 read the state hs[:, t-1] (times its reset mask, which the
    gradient da already carries), so the input states need not be stored.
    """
    from ._cpu_extension import cpu_ops  # loaded already: the forward ran through it

    need_gx, need_mx, need_w_mh, need_w_h, need_h0, need_c0 = needs
    batch, steps, hidden = hs.shape
    acc, dtype = saved.h_in_0.dtype, saved.mult_x.dtype
    gate_grad_matmul = RecurrentMatmul(w_h.t(), batch, steps, pack)  # dz @ W_h^T
    state_grad_matmul = RecurrentMatmul(w_mh.t(), batch, steps, pack)  # da @ W_mh^T
    zeros = saved.h_in_0.new_zeros(batch, hidden)
    d_gates, d_mult_x, d_mult_keep, mult, d_h0, d_c0 = cpu_ops().backward(
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


class FusedMLSTMScan(torch.autograd.Function):
    """Autograd wrapper: forward saves the backward coefficients the hand-written backward reads."""

    @staticmethod
    def forward(ctx, gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, input_ids):
        hs, cs, h_last, c_last, saved = fused_forward(
            gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save=True, input_ids=input_ids
        )
        ctx.saved = saved  # internal buffers only (never the inputs or outputs), freed with the graph
        compiled = isinstance(saved, CompiledSaved)
        ctx.save_for_backward(w_mh, w_h, hs if compiled else None)  # the compiled backward reads hs (an output)
        ctx.dtypes = (gates_x.dtype, mult_x.dtype, None if h0 is None else h0.dtype)
        return hs, cs, h_last, c_last

    @staticmethod
    @once_differentiable  # the hand-written backward is not itself differentiable
    def backward(ctx, d_hs, d_cs, d_h_last, d_c_last):
        w_mh, w_h, hs = ctx.saved_tensors
        device_type = w_h.device.type
        needs = (*ctx.needs_input_grad[:6],)
        with torch.autocast(device_type, enabled=False):
            grads = fused_backward(ctx.saved, w_mh, w_h, d_hs, d_cs, d_h_last, d_c_last, needs, hs=hs)
        return (*grads_in_input_dtypes(grads, ctx.dtypes), None, None, None, None)  # none for masks, flag, ids


def mlstm_scan_fused(
    gates_x, mult_x, w_mh, w_h, h0=None, c0=None, reset=None, hold=None, return_cells=False, input_ids=None
):
    """Same contract as :func:`bytezoo.kernels.mlstm_interface.mlstm_scan` (inputs already validated)."""
    if input_ids is not None and compiled_loops(gates_x) is None:  # only the compiled loops read table rows
        gates_x, mult_x = gather_rows(gates_x, mult_x, input_ids)
        input_ids = None
    tensors = (gates_x, mult_x, w_mh, w_h, h0, c0)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors):
        return FusedMLSTMScan.apply(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, input_ids)
    hs, cs, h_last, c_last, _ = fused_forward(
        gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, save=False, input_ids=input_ids
    )
    return hs, cs, h_last, c_last
