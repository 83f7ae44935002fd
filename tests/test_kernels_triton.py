"""The Triton mLSTM path: in Triton's CPU interpreter (tiny shapes, fp32) everywhere, and on a GPU where there is one."""
from __future__ import annotations

import pytest
import torch

from bytezoo.kernels import mlstm_scan
from bytezoo.kernels.mlstm.interface import resolve_kernel
from kernel_problems import assert_matches_reference, random_problem, run_with_grads

pytest.importorskip("triton")

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def interpreter(monkeypatch):
    """Runs Triton kernels on CPU tensors (the kernels are jitted per mode on first use, so this takes effect)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.mark.parametrize("batch, steps, hidden, masks", [(3, 4, 8, True), (1, 1, 4, False), (2, 3, 20, True)])
def test_triton_interpreted_matches_reference(interpreter, batch, steps, hidden, masks):
    inputs, reset, hold = random_problem(batch, steps, hidden, masks=masks)
    assert_matches_reference("triton", inputs, reset, hold, torch.float32)


def test_triton_interpreted_inference_and_partial_grads(interpreter):
    (gates_x, mult_x, w_mh, w_h, _, _), reset, hold = random_problem(batch=2, steps=3, hidden=8)
    with torch.no_grad():
        fast = mlstm_scan(gates_x, mult_x, w_mh, w_h, reset=reset, hold=hold, return_cells=True, kernel="triton")
    slow = mlstm_scan(gates_x, mult_x, w_mh, w_h, reset=reset, hold=hold, return_cells=True, kernel="reference")
    for got, want in zip(fast, slow):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5)
    w_h = w_h.clone().requires_grad_()
    hs, _, _, _ = mlstm_scan(gates_x, mult_x, w_mh, w_h, reset=reset, hold=hold, kernel="triton")
    (grad,) = torch.autograd.grad(hs.sum(), w_h)
    ref_w_h = w_h.detach().clone().requires_grad_()
    ref_hs, _, _, _ = mlstm_scan(gates_x, mult_x, w_mh, ref_w_h, reset=reset, hold=hold, kernel="reference")
    (ref_grad,) = torch.autograd.grad(ref_hs.sum(), ref_w_h)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=2e-5)


def test_triton_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    inputs, _, _ = random_problem(batch=1, steps=2, hidden=4, masks=False)
    with pytest.raises(RuntimeError, match="kernel='triton' cannot run here: it needs CUDA tensors"):
        mlstm_scan(*inputs, kernel="triton")
    with pytest.raises(RuntimeError, match="not torch.float64"):
        mlstm_scan(*(x.double() for x in inputs), kernel="triton")
    assert resolve_kernel("auto", inputs[0]) == "fused"


# ---------------------------------------------------------------- on a GPU

GPU_TOLERANCES = {torch.float32: (2e-3, 2e-3), torch.float16: (2e-2, 2e-2), torch.bfloat16: (6e-2, 6e-2)}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_on_gpu_matches_reference(dtype):
    """fp32 products on a GPU may use TF32, hence the looser fp32 tolerance than on CPU."""
    inputs, reset, hold = random_problem(batch=8, steps=16, hidden=64, dtype=dtype, state_dtype=torch.float32)
    inputs = [x.cuda() for x in inputs]
    reset, hold = reset.cuda(), hold.cuda()
    assert resolve_kernel("auto", inputs[0]) == "triton"
    rtol, atol = GPU_TOLERANCES[dtype]
    expected, expected_grads, output_grads = run_with_grads("reference", inputs, reset, hold)
    actual, grads, _ = run_with_grads("triton", inputs, reset, hold, output_grads)
    for want, got in zip(list(expected) + expected_grads, list(actual) + grads):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol)
