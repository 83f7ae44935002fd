"""Random mLSTM recurrence problems and the comparison of a fast path against the reference (outputs, final state,
every gradient), shared by the CPU and Triton kernel tests."""
from __future__ import annotations

import torch

from bytezoo.kernels import mlstm_scan

# (rtol, atol) of a fast path against the reference, by input dtype. bf16 runs its products in bf16.
TOLERANCES = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 2e-5), torch.bfloat16: (5e-2, 5e-2)}
RESULT_NAMES = ("hs", "cs", "h_T", "c_T")
INPUT_NAMES = ("gates_x", "mult_x", "w_mh", "w_h", "h0", "c0")


def random_problem(batch, steps, hidden, dtype=torch.float32, state_dtype=None, masks=True, non_contiguous=False):
    """Fresh random inputs at the scale a trained model sees (unit-variance pre-activations)."""
    state_dtype = state_dtype or torch.promote_types(dtype, torch.float32)
    if non_contiguous:  # every input a strided view of a larger tensor
        gates_x = torch.randn(steps, batch, 8 * hidden).transpose(0, 1)[..., ::2]
        mult_x = torch.randn(batch, steps, hidden, 2)[..., 1]
        w_mh = torch.randn(hidden, hidden).t() / hidden**0.5
        w_h = torch.randn(4 * hidden, hidden).t() / hidden**0.5
    else:
        gates_x = torch.randn(batch, steps, 4 * hidden)
        mult_x = torch.randn(batch, steps, hidden)
        w_mh = torch.randn(hidden, hidden) / hidden**0.5
        w_h = torch.randn(hidden, 4 * hidden) / hidden**0.5
    inputs = [gates_x.to(dtype), mult_x.to(dtype), w_mh.to(dtype), w_h.to(dtype)]
    inputs += [torch.randn(batch, hidden, dtype=state_dtype), torch.randn(batch, hidden, dtype=state_dtype)]
    reset = hold = None
    if masks:
        reset = torch.rand(batch, steps) < 0.25
        hold = torch.rand(batch, steps) < 0.25
        reset[0, 0] = True  # a reset before the first step
        hold[-1, -1] = True  # a held last step: the final state is the one before it
        hold[0, 0] = True  # reset and hold at one position
    return inputs, reset, hold


def run_with_grads(kernel, inputs, reset, hold, output_grads=None):
    """Runs one kernel; returns its results, the input gradients, and the output gradients it was fed."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    results = mlstm_scan(*leaves, reset=reset, hold=hold, return_cells=True, kernel=kernel)
    if output_grads is None:
        output_grads = [torch.randn_like(r) for r in results]
    torch.autograd.backward(results, output_grads)
    return results, [x.grad for x in leaves], output_grads


def assert_matches_reference(kernel, inputs, reset, hold, dtype):
    rtol, atol = TOLERANCES[dtype]
    expected, expected_grads, output_grads = run_with_grads("reference", inputs, reset, hold)
    actual, grads, _ = run_with_grads(kernel, inputs, reset, hold, output_grads)
    for name, want, got in zip(RESULT_NAMES + INPUT_NAMES, list(expected) + expected_grads, list(actual) + grads):
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, msg=lambda m: f"{kernel} {name}: {m}")
