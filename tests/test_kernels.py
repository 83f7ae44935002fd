"""The mLSTM recurrence: every fast path against the reference (outputs, final state, every gradient), masks, bad input."""
from __future__ import annotations

import dataclasses
import inspect
import sys

import pytest
import torch

import bytezoo
from bytezoo.kernels import KERNELS, mlstm_scan, mlstm_scan_ref
from bytezoo.kernels.mlstm import fused_cpu, interface, naive, onednn, packing
from bytezoo.kernels.mlstm.interface import ENGINES, choose_engine, resolve_kernel

from kernel_problems import RESULT_NAMES, TOLERANCES, assert_matches_reference, random_problem, run_with_grads


@pytest.fixture(params=["compiled", "python"])
def loops(request, monkeypatch):
    """Runs a "fused" test through both time-loop engines: the compiled C++ loops and the plain-PyTorch ones."""
    compiled = request.param == "compiled"
    if compiled and fused_cpu.unavailable_reason() is not None:
        pytest.skip(f"the compiled CPU loops are unavailable here: {fused_cpu.unavailable_reason()}")
    monkeypatch.setattr(fused_cpu, "USE_COMPILED_LOOPS", compiled)
    assert choose_engine("fused", torch.zeros(1, 1, 4)).name == ("fused_cpu" if compiled else "fused_torch")
    return request.param


@pytest.mark.parametrize("masks", [False, True], ids=["plain", "masks"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_matches_reference(dtype, masks, loops):
    inputs, reset, hold = random_problem(batch=4, steps=7, hidden=16, dtype=dtype, masks=masks)
    assert_matches_reference("fused", inputs, reset, hold, dtype)


def test_fused_odd_sizes_and_saturated_gates(loops):
    """A hidden size that is no multiple of any vector width, and pre-activations large enough to saturate every gate
    (the compiled loops' tanh/sigmoid approximation is clamped there)."""
    inputs, reset, hold = random_problem(batch=5, steps=9, hidden=37)
    inputs[0] = inputs[0] * 12  # gates_x: |z| up to ~50
    assert_matches_reference("fused", inputs, reset, hold, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_table_inputs_match_gathered_inputs(dtype, loops):
    """input_ids with (V, 4H)/(V, H) tables (a byte model's first layer) == the gathered (B, T, ...) inputs, gradients
    of the tables included (summed over every position that read a row)."""
    vocab, batch, steps, hidden = 11, 4, 7, 16
    (_, _, w_mh, w_h, h0, c0), reset, hold = random_problem(batch, steps, hidden, dtype=dtype, state_dtype=torch.float32)
    gate_table = torch.randn(vocab, 4 * hidden).to(dtype).requires_grad_()
    mult_table = torch.randn(vocab, hidden).to(dtype).requires_grad_()
    input_ids = torch.randint(0, vocab, (batch, steps))
    output_grads = None
    results = {}
    for name, kernel in (("reference", "reference"), ("fused", "fused")):
        leaves = [x.detach().clone().requires_grad_() for x in (gate_table, mult_table, w_mh, w_h, h0, c0)]
        if name == "reference":  # the plain gather, differentiated by autograd
            gates_x, mult_x = leaves[0][input_ids], leaves[1][input_ids]
            outputs = mlstm_scan_ref(gates_x, mult_x, *leaves[2:], reset=reset, hold=hold, return_cells=True)
        else:
            outputs = mlstm_scan(*leaves, reset=reset, hold=hold, return_cells=True, kernel=kernel, input_ids=input_ids)
        output_grads = output_grads or [torch.randn_like(r) for r in outputs]
        torch.autograd.backward(outputs, output_grads)
        results[name] = list(outputs) + [x.grad for x in leaves]
    rtol, atol = TOLERANCES[dtype]
    names = RESULT_NAMES + ("gate_table", "mult_table", "w_mh", "w_h", "h0", "c0")
    for name, want, got in zip(names, results["reference"], results["fused"]):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("kernel", ["reference", "fused"])
def test_bad_table_inputs_are_named(kernel):
    gate_table, mult_table = torch.randn(5, 16), torch.randn(5, 4)
    w_mh, w_h = torch.randn(4, 4), torch.randn(4, 16)
    ids = torch.randint(0, 5, (2, 3))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 5\)"):
        mlstm_scan(gate_table, mult_table, w_mh, w_h, input_ids=ids + 5, kernel=kernel)  # every id out of range (+3 left all in range 0.4% of runs)
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        mlstm_scan(gate_table, mult_table, w_mh, w_h, input_ids=ids.float(), kernel=kernel)
    with pytest.raises(ValueError, match=r"gates_x must be a \(V, 4H\) table"):
        mlstm_scan(gate_table[None], mult_table, w_mh, w_h, input_ids=ids, kernel=kernel)
    with pytest.raises(ValueError, match=r"mult_x must be a \(V, H\) table"):
        mlstm_scan(gate_table, mult_table[:4], w_mh, w_h, input_ids=ids, kernel=kernel)
    with pytest.raises(ValueError, match="T = 0"):
        mlstm_scan(gate_table, mult_table, w_mh, w_h, input_ids=ids[:, :0], kernel=kernel)


def test_nan_inputs_propagate_like_the_reference(loops):
    """A diverging run must show NaNs, not finite garbage (the compiled loops' gate approximation keeps NaN)."""
    inputs, _, _ = random_problem(batch=3, steps=5, hidden=8, masks=False)
    inputs[0][1, 2, 5] = float("nan")  # one pre-activation of sequence 1 at step 2
    fast = mlstm_scan(*inputs, return_cells=True, kernel="fused")
    slow = mlstm_scan_ref(*inputs, return_cells=True)
    for got, want in zip(fast, slow):
        assert torch.equal(got.isnan(), want.isnan())
    assert fast[0][1, 2:].isnan().any() and not fast[0][0].isnan().any()


@pytest.mark.parametrize("batch, steps", [(1, 1), (1, 5), (3, 1)])
def test_fused_edge_sizes(batch, steps, loops):
    inputs, reset, hold = random_problem(batch, steps, hidden=8)
    assert_matches_reference("fused", inputs, reset, hold, torch.float32)


def test_fused_non_contiguous_inputs(loops):
    inputs, reset, hold = random_problem(batch=3, steps=6, hidden=8, non_contiguous=True)
    assert not inputs[0].is_contiguous() and not inputs[2].is_contiguous()
    assert_matches_reference("fused", inputs, reset, hold, torch.float32)


def test_fused_bfloat16_with_float32_state(loops):
    """What the model passes under bf16 autocast: bf16 inputs and weights, fp32 carried state."""
    inputs, reset, hold = random_problem(batch=4, steps=6, hidden=32, dtype=torch.bfloat16, state_dtype=torch.float32)
    assert_matches_reference("fused", inputs, reset, hold, torch.bfloat16)


def test_fused_gradcheck_float64(loops):
    inputs, reset, hold = random_problem(batch=2, steps=3, hidden=4, dtype=torch.float64)
    leaves = [x.requires_grad_() for x in inputs]

    def scan(*args):
        return mlstm_scan(*args, reset=reset, hold=hold, return_cells=True, kernel="fused")

    assert torch.autograd.gradcheck(scan, leaves, eps=1e-6, atol=1e-7)


def test_fused_without_initial_state_or_grads_for_some_inputs(loops):
    (gates_x, mult_x, w_mh, w_h, _, _), _, _ = random_problem(batch=2, steps=4, hidden=8, masks=False)
    w_h.requires_grad_()
    gates_x.requires_grad_()
    hs, cs, h_last, c_last = mlstm_scan(gates_x, mult_x, w_mh, w_h, kernel="fused")
    assert cs is None and h_last.dtype == torch.float32
    (hs.sum() + c_last.sum()).backward()
    ref_w_h, ref_gx = w_h.detach().clone().requires_grad_(), gates_x.detach().clone().requires_grad_()
    ref_hs, _, _, ref_c = mlstm_scan_ref(ref_gx, mult_x, w_mh, ref_w_h)
    (ref_hs.sum() + ref_c.sum()).backward()
    torch.testing.assert_close(w_h.grad, ref_w_h.grad, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(gates_x.grad, ref_gx.grad, rtol=1e-4, atol=2e-5)


def test_packed_and_plain_products_agree(monkeypatch, loops):
    """The oneDNN weight packing (private ATen ops) and its torch.mm fallback give the same results."""
    inputs, reset, hold = random_problem(batch=5, steps=4, hidden=24)
    monkeypatch.setattr(packing, "PACK_MIN_SIZE", 1)  # pack even these tiny weights, batches and sequences
    monkeypatch.setattr(packing, "PACK_MIN_STEPS", 1)
    monkeypatch.setattr(packing, "PACK_FP32_BATCHES", range(1, 1000))
    monkeypatch.setattr(packing, "PACK_WEIGHTS", True)
    assert packing.RecurrentMatmul(inputs[3], 5, 4).packed is not None
    packed, packed_grads, output_grads = run_with_grads("fused", inputs, reset, hold)
    monkeypatch.setattr(packing, "PACK_WEIGHTS", False)
    plain, plain_grads, _ = run_with_grads("fused", inputs, reset, hold, output_grads)
    for got, want in zip(list(packed) + packed_grads, list(plain) + plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5)


def test_packing_only_where_it_was_measured_to_pay():
    weight = torch.zeros(1024, 4096)
    matmul = packing.RecurrentMatmul
    assert matmul(weight, 64, 64).packed is not None or not onednn.packing_works(torch.float32)
    assert matmul(weight, 64, 1).packed is None  # one step (generation) cannot earn the packing
    assert matmul(weight, 256, 64).packed is None  # fp32 at a large batch: plain GEMM measured faster
    assert matmul(weight[:512, :2048], 64, 64).packed is None  # fp32 below H=1024


def test_inference_without_grad_matches_training_forward(loops):
    inputs, reset, hold = random_problem(batch=3, steps=5, hidden=8)
    with torch.no_grad():
        fast = mlstm_scan(*inputs, reset=reset, hold=hold, return_cells=True, kernel="fused")
    slow = mlstm_scan_ref(*inputs, reset=reset, hold=hold, return_cells=True)
    for got, want in zip(fast, slow):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("kernel", ["reference", "fused"])
def test_autocast_cannot_change_the_kernels_dtypes(kernel, loops):
    inputs, reset, hold = random_problem(batch=2, steps=4, hidden=8)
    plain = mlstm_scan(*inputs, reset=reset, hold=hold, return_cells=True, kernel=kernel)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = mlstm_scan(*inputs, reset=reset, hold=hold, return_cells=True, kernel=kernel)
    for got, want in zip(autocast, plain):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_auto_picks_fused_on_cpu_and_kernels_tuple():
    assert KERNELS == ("auto", "reference", "fused", "triton")
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        assert resolve_kernel("auto", torch.zeros(1, 1, 4, dtype=dtype)) == "fused"
    assert resolve_kernel("reference", torch.zeros(1, 1, 4)) == "reference"


# ---------------------------------------------------------------- the capability table


@pytest.fixture
def engine(request, monkeypatch):
    """One engine of the capability table, skipped where it cannot run; Triton in its CPU interpreter."""
    chosen = ENGINES[request.param]
    if chosen.name == "triton":
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    reason = chosen.unavailable(torch.zeros(1, 1, 4), training=True, return_cells=True, named=True)
    if reason is not None:
        pytest.skip(f"{chosen.name} cannot run here: {reason}")
    return chosen


def test_every_engine_has_the_reference_signature():
    expected = inspect.signature(mlstm_scan_ref)
    assert list(expected.parameters)[-1] == "input_ids"
    for engine in ENGINES.values():
        assert inspect.signature(engine.load()) == expected, engine.name


@pytest.mark.parametrize("engine", list(ENGINES), indirect=True)
def test_every_engine_runs_table_inputs_through_mlstm_scan(engine, monkeypatch):
    """Each engine alone in the table, fed (V, ...) tables and input_ids through mlstm_scan: results and every
    gradient (the tables' included) match the reference on the gathered inputs. Engines that cannot read the rows in
    place get them gathered by mlstm_scan; the others get the ids. Called directly, every engine takes the same
    positional arguments; given ids, the reference gathers them itself and the engines that need gathered inputs say
    so."""
    vocab, batch, steps, hidden = 7, 3, 4, 8
    (_, _, w_mh, w_h, h0, c0), reset, hold = random_problem(batch, steps, hidden)
    tables = [torch.randn(vocab, 4 * hidden), torch.randn(vocab, hidden)]
    input_ids = torch.randint(0, vocab, (batch, steps))
    calls = []
    entry = engine.load()

    def spy(*args):
        calls.append((args[0].dim(), args[-1] is not None))  # (gates_x dims, whether it got input_ids)
        return entry(*args)

    monkeypatch.setattr(sys.modules[entry.__module__], entry.__name__, spy)
    monkeypatch.setattr(interface, "ENGINES", {engine.name: engine})  # only this one can be chosen
    leaves = [x.clone().requires_grad_() for x in (*tables, w_mh, w_h, h0, c0)]
    results = mlstm_scan(*leaves, reset=reset, hold=hold, return_cells=True, kernel=engine.kernel, input_ids=input_ids)
    assert calls == [(2, True) if engine.reads_token_ids else (3, False)]
    output_grads = [torch.randn_like(r) for r in results]
    torch.autograd.backward(results, output_grads)
    ref_leaves = [x.clone().requires_grad_() for x in (*tables, w_mh, w_h, h0, c0)]
    gathered = [ref_leaves[0][input_ids], ref_leaves[1][input_ids]]
    expected = mlstm_scan_ref(*gathered, *ref_leaves[2:], reset=reset, hold=hold, return_cells=True)
    torch.autograd.backward(expected, output_grads)
    names = RESULT_NAMES + ("gate_table", "mult_table", "w_mh", "w_h", "h0", "c0")
    for name, got, want in zip(names, [*results, *(x.grad for x in leaves)], [*expected, *(x.grad for x in ref_leaves)]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5, msg=lambda m: f"{engine.name} {name}: {m}")

    with torch.no_grad():  # called directly with one positional signature
        if engine.reads_token_ids or engine.name == "reference":
            direct = entry(*tables, w_mh, w_h, h0, c0, reset, hold, True, input_ids)
            torch.testing.assert_close(direct[0], expected[0], rtol=1e-4, atol=2e-5)
        else:
            with pytest.raises(ValueError, match="mlstm_scan gathers table rows"):
                entry(*tables, w_mh, w_h, h0, c0, reset, hold, True, input_ids)
        gathered = [t.index_select(0, input_ids.reshape(-1)).view(batch, steps, -1) for t in tables]
        direct = entry(*gathered, w_mh, w_h, h0, c0, reset, hold, True, None)
        torch.testing.assert_close(direct[0], expected[0], rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize(
    "dtype, device", [(torch.float32, "cpu"), (torch.float64, "cpu"), (torch.bfloat16, "cpu"), (torch.float16, "cpu"),
                      (torch.float32, "meta")]
)
def test_auto_takes_the_first_engine_of_the_table_that_can_run(dtype, device):
    gates_x = torch.zeros(1, 1, 4, dtype=dtype, device=device)
    runnable = [e for e in ENGINES.values() if e.unavailable(gates_x) is None]
    assert choose_engine("auto", gates_x) is runnable[0]
    assert choose_engine("fused", gates_x) is next(e for e in runnable if e.kernel == "fused")


def test_auto_consults_the_capability_table(monkeypatch):
    """Change the table and "auto" follows it: the order, the dtypes, and whether an engine reads token ids."""
    gates_x = torch.zeros(1, 1, 4)
    reference = ENGINES["reference"]
    compiled = dataclasses.replace(ENGINES["fused_cpu"], dtypes=(torch.float64,))
    monkeypatch.setattr(interface, "ENGINES", {**ENGINES, "fused_cpu": compiled})
    assert choose_engine("auto", gates_x).name == "fused_torch"
    double = gates_x.double()
    assert choose_engine("auto", double).name == ("fused_cpu" if compiled.unavailable(double) is None else "fused_torch")
    monkeypatch.setattr(interface, "ENGINES", {"reference": reference, **ENGINES})
    assert choose_engine("auto", gates_x) is reference
    # mlstm_scan runs what the table chose, and gathers the rows exactly when the table says the engine cannot.
    calls = []

    def spy(*args):
        calls.append((args[0].dim(), args[-1] is not None))
        return mlstm_scan_ref(*args)

    monkeypatch.setattr(naive, "mlstm_scan_ref", spy)
    tables, ids = (torch.randn(5, 16), torch.randn(5, 4)), torch.randint(0, 5, (2, 3))
    weights = torch.randn(4, 4), torch.randn(4, 16)
    mlstm_scan(*tables, *weights, input_ids=ids)
    monkeypatch.setattr(interface, "ENGINES", {"reference": dataclasses.replace(reference, reads_token_ids=True)})
    mlstm_scan(*tables, *weights, input_ids=ids)
    assert calls == [(3, False), (2, True)]
    monkeypatch.setattr(interface, "ENGINES", {"reference": dataclasses.replace(reference, return_cells=False)})
    with pytest.raises(RuntimeError, match="cannot return the cell states"):
        mlstm_scan(*tables, *weights, input_ids=ids, return_cells=True)


def test_model_gradients_match_reference_through_weight_norm(loops):
    """The whole model: loss and the gradient of every parameter (embeddings, weights, weight-norm gains, head)."""
    torch.manual_seed(0)
    batch, steps = 3, 6
    input_ids = torch.randint(0, 256, (batch, steps))
    attention_mask = torch.ones(batch, steps, dtype=torch.long)
    attention_mask[0, :2] = 0  # left padding
    reset_mask = torch.zeros(batch, steps, dtype=torch.bool)
    reset_mask[1, 3] = True
    grads = {}
    for kernel in ("reference", "fused"):
        torch.manual_seed(1)
        model = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8, num_layers=2, kernel=kernel)
        state = tuple(torch.randn(2, batch, 16) for _ in range(2))
        out = model(input_ids, state=state, attention_mask=attention_mask, reset_mask=reset_mask, labels=input_ids)
        (out.loss + out.state[1].square().sum()).backward()
        grads[kernel] = {name: p.grad for name, p in model.named_parameters()}
        grads[kernel]["loss"] = out.loss.detach()
    assert any("g_mh" in name for name in grads["fused"])
    for name, want in grads["reference"].items():
        torch.testing.assert_close(grads["fused"][name], want, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


# ---------------------------------------------------------------- bad input


def test_bad_input_is_named():
    (gates_x, mult_x, w_mh, w_h, h0, c0), _, _ = random_problem(batch=2, steps=3, hidden=4, masks=False)
    with pytest.raises(ValueError, match="T = 0"):
        mlstm_scan(gates_x[:, :0], mult_x[:, :0], w_mh, w_h, kernel="fused")
    with pytest.raises(ValueError, match="mult_x must have shape"):
        mlstm_scan(gates_x, mult_x[:, :2], w_mh, w_h, kernel="fused")
    with pytest.raises(ValueError, match="w_h must have shape"):
        mlstm_scan(gates_x, mult_x, w_mh, w_h[:, :-1], kernel="fused")
    with pytest.raises(ValueError, match="gates_x must have shape"):
        mlstm_scan(gates_x[..., :-1], mult_x, w_mh, w_h, kernel="fused")
    with pytest.raises(ValueError, match="h0 must have shape"):
        mlstm_scan(gates_x, mult_x, w_mh, w_h, h0[:1], c0[:1], kernel="fused")
    with pytest.raises(ValueError, match="both h0 and c0"):
        mlstm_scan(gates_x, mult_x, w_mh, w_h, h0, None, kernel="fused")
    with pytest.raises(TypeError, match="w_mh has dtype torch.float64"):
        mlstm_scan(gates_x, mult_x, w_mh.double(), w_h, kernel="fused")
    with pytest.raises(TypeError, match="h0 has dtype"):
        mlstm_scan(gates_x, mult_x, w_mh, w_h, h0.double(), c0, kernel="fused")
    with pytest.raises(TypeError, match="reset must be a bool mask"):
        mlstm_scan(gates_x, mult_x, w_mh, w_h, reset=torch.zeros(2, 3), kernel="fused")
    with pytest.raises(TypeError, match="gates_x must be a floating-point"):
        mlstm_scan(gates_x.long(), mult_x.long(), w_mh.long(), w_h.long(), kernel="fused")
    with pytest.raises(ValueError, match="w_h is on meta"):
        mlstm_scan(gates_x, mult_x, w_mh, w_h.to("meta"), kernel="fused")
    with pytest.raises(ValueError, match="unknown mLSTM kernel 'cudnn'"):
        mlstm_scan(gates_x, mult_x, w_mh, w_h, kernel="cudnn")
