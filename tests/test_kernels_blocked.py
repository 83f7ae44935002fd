"""The compiled loops' register-blocked fp32 products (csrc/mlstm_cpu.cpp, policy in kernels/mlstm/packing.py):
the same results as the library-GEMM loops and the reference, every batch-row tail of the micro-kernel, masks,
saved coefficients; when the policy uses them; the panel cache; one OpenMP runtime in the process.

Skipped where the compiled loops cannot run or the build has no AVX-512 (the library-GEMM loops run there)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from kernel_problems import TOLERANCES, random_problem

from bytezoo.kernels import mlstm_scan, mlstm_scan_ref
from bytezoo.kernels.mlstm import cpu_extension, fused_cpu, packing


@pytest.fixture
def ops():
    if fused_cpu.unavailable_reason() is not None:
        pytest.skip(f"the compiled CPU loops are unavailable here: {fused_cpu.unavailable_reason()}")
    ops = cpu_extension.cpu_ops()
    if not ops.blocked_products_available():
        pytest.skip("this build has no AVX-512: the blocked products are not compiled in")
    packing.panel_cache.clear()
    yield ops
    packing.panel_cache.clear()


def spy_on_ops(monkeypatch, ops, method: str, record) -> None:
    """Makes cpu_extension.cpu_ops() (the engine's path) return ``ops`` with ``method`` calling ``record(args)``
    first."""

    class Spy:
        def __getattr__(self, name):
            attribute = getattr(ops, name)
            if name != method:
                return attribute

            def recorded(*args):
                record(args)
                return attribute(*args)

            return recorded

    monkeypatch.setattr(cpu_extension, "cpu_ops", lambda: Spy())


@pytest.fixture
def panels_made(ops, monkeypatch):
    """Counts the extension's blocked_panels calls made through cpu_extension.cpu_ops() (the engine's path)."""
    made = []
    spy_on_ops(monkeypatch, ops, "blocked_panels", lambda args: made.append(1))
    return made


def call_forward(ops, inputs, reset, hold, save, panels, input_ids=None, streamed=False):
    """The forward operator as fused_cpu calls it; library GEMMs when panels is None."""
    gates_x, mult_x, w_mh, w_h, h0, c0 = inputs
    keep = None if reset is None else (~reset).float().contiguous()
    w_mh_panels, w_h_panels = panels if panels is not None else (None, None)
    return ops.forward(gates_x.contiguous(), mult_x.contiguous(), w_mh, w_h, None, None, h0, c0, keep, hold,
                       input_ids, save, True, w_mh_panels, w_h_panels, streamed)


# Batch sizes cover every way the rows are split into micro-kernel calls (6 at a time, the last two calls evened out
# so that none has under 4 rows where that can be helped: 1-6 in one call, 7 = 4+3, 8 = 4+4, 9 = 5+4, 13 = 6+4+3);
# hidden sizes one panel of W_mh (64), several, and one that is not a power of two, so that both slice depths (128
# rows cached, 64 streamed) meet a partial last slice and the streamed one prefetches past the last panel's end.
@pytest.mark.parametrize("hidden", [64, 128, 192])
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 6, 7, 8, 9, 13])
@pytest.mark.parametrize("save", [False, True], ids=["inference", "saving"])
@pytest.mark.parametrize("streamed", [False, True], ids=["cached", "streamed"])
def test_blocked_forward_equals_library_products(ops, hidden, batch, save, streamed):
    inputs, reset, hold = random_problem(batch=batch, steps=6, hidden=hidden)
    panels = tuple(ops.blocked_panels(inputs[2], inputs[3]))
    blocked = call_forward(ops, inputs, reset, hold, save, panels, streamed=streamed)
    library = call_forward(ops, inputs, reset, hold, save, None)
    assert len(blocked) == len(library) == (9 if save else 4)
    for index, (got, want) in enumerate(zip(blocked, library)):  # outputs, then the backward's coefficients
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m: f"output {index}: {m}")
    expected = mlstm_scan_ref(*inputs, reset=reset, hold=hold, return_cells=True)
    rtol, atol = TOLERANCES[torch.float32]
    for got, want in zip(blocked[:4], expected):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def test_blocked_forward_reads_table_rows(ops):
    """A byte model's first layer: (V, 4H)/(V, H) tables read at input_ids, as the library-GEMM loops do."""
    (_, _, w_mh, w_h, h0, c0), reset, hold = random_problem(batch=7, steps=5, hidden=64)
    tables = torch.randn(11, 256), torch.randn(11, 64)
    ids = torch.randint(0, 11, (7, 5))
    inputs = [*tables, w_mh, w_h, h0, c0]
    panels = tuple(ops.blocked_panels(w_mh, w_h))
    blocked = call_forward(ops, inputs, reset, hold, False, panels, input_ids=ids)
    expected = mlstm_scan_ref(tables[0][ids], tables[1][ids], w_mh, w_h, h0, c0, reset=reset, hold=hold,
                              return_cells=True)
    rtol, atol = TOLERANCES[torch.float32]
    for got, want in zip(blocked, expected):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def test_nan_propagates_through_the_blocked_products(ops):
    inputs, _, _ = random_problem(batch=3, steps=5, hidden=64, masks=False)
    inputs[0][1, 2, 5] = float("nan")
    blocked = call_forward(ops, inputs, None, None, False, tuple(ops.blocked_panels(inputs[2], inputs[3])))
    expected = mlstm_scan_ref(*inputs, return_cells=True)
    for got, want in zip(blocked, expected):
        assert torch.equal(got.isnan(), want.isnan())
    assert blocked[0][1, 2:].isnan().any() and not blocked[0][0].isnan().any()


def test_saturated_gates_stay_within_tolerance(ops):
    """|pre-activations| up to ~50: the vector tanh's clamp and its reciprocal estimate (refined once) hold there."""
    inputs, reset, hold = random_problem(batch=5, steps=9, hidden=64)
    inputs[0] = inputs[0] * 12
    blocked = call_forward(ops, inputs, reset, hold, False, tuple(ops.blocked_panels(inputs[2], inputs[3])))
    rtol, atol = TOLERANCES[torch.float32]
    for got, want in zip(blocked, mlstm_scan_ref(*inputs, reset=reset, hold=hold, return_cells=True)):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def test_misused_panels_are_refused_by_name(ops):
    inputs, _, _ = random_problem(batch=2, steps=3, hidden=64, masks=False)
    w_mh_panels, w_h_panels = ops.blocked_panels(inputs[2], inputs[3])
    with pytest.raises(RuntimeError, match="give both weights' panels or neither"):
        call_forward(ops, inputs, None, None, False, (w_mh_panels, None))
    with pytest.raises(RuntimeError, match="panels must be what blocked_panels returns"):
        call_forward(ops, inputs, None, None, False, (w_mh_panels, w_h_panels.transpose(1, 2)))
    with pytest.raises(RuntimeError, match="H a multiple of 64"):
        ops.blocked_panels(torch.randn(48, 48), torch.randn(48, 192))


def test_policy_uses_panels_only_for_long_fp32_inference_within_the_limit(ops, monkeypatch):
    monkeypatch.setattr(packing, "BLOCKED_MAX_SIZE", 128)
    steps = packing.PACK_MIN_STEPS
    w_mh, w_h = torch.randn(128, 128), torch.randn(128, 512)
    assert packing.blocked_panels(ops, w_mh, w_h, 8, steps, save=True) is None  # training keeps library GEMMs
    assert packing.blocked_panels(ops, w_mh.bfloat16(), w_h.bfloat16(), 8, steps, save=False) is None
    assert packing.blocked_panels(ops, torch.randn(96, 96), torch.randn(96, 384), 8, steps, save=False) is None
    big = torch.randn(192, 192), torch.randn(192, 768)
    assert packing.blocked_panels(ops, *big, 8, steps, save=False) is None  # over the measured limit
    assert packing.blocked_panels(ops, w_mh, w_h, 8, steps - 1, save=False) is None  # too short to lay them out
    tall = packing.BLOCKED_MAX_BATCH + 1  # library GEMMs catch up on tall inputs
    assert packing.blocked_panels(ops, w_mh, w_h, tall, steps, save=False) is None
    assert packing.blocked_panels(ops, w_mh, w_h, 1, steps, save=False) is None  # and win on a single row
    monkeypatch.setattr(packing, "BLOCKED_PRODUCTS", False)
    assert packing.blocked_panels(ops, w_mh, w_h, 8, steps, save=False) is None
    monkeypatch.setattr(packing, "BLOCKED_PRODUCTS", True)
    panels = packing.blocked_panels(ops, w_mh, w_h, 8, steps, save=False)
    assert panels is not None
    torch.testing.assert_close(panels[0][1, :, 3], w_mh[:, 64 + 3], rtol=0, atol=0)  # panel 1, column 3
    torch.testing.assert_close(panels[1][2, :, 16 * 3 + 5], w_h[:, 3 * 128 + 2 * 16 + 5], rtol=0, atol=0)  # u, unit 37


def test_policy_reads_the_limit_measured_for_this_many_threads(ops, monkeypatch):
    from bytezoo.kernels.mlstm import calibration

    limits = {**calibration.DEFAULTS, "fp32_blocked_max_size": 64, "fp32_blocked_max_size_threads": 128}
    monkeypatch.setattr(calibration, "thresholds", lambda: limits)
    monkeypatch.setattr(packing, "BLOCKED_MAX_SIZE", None)
    w_mh, w_h = torch.randn(128, 128), torch.randn(128, 512)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert packing.blocked_panels(ops, w_mh, w_h, 8, packing.PACK_MIN_STEPS, save=False) is None
        torch.set_num_threads(2)
        assert packing.blocked_panels(ops, w_mh, w_h, 8, packing.PACK_MIN_STEPS, save=False) is not None
    finally:
        torch.set_num_threads(before)


def test_engine_streams_the_panels_from_the_size_measured_for_this_many_threads(ops, monkeypatch):
    """The flag the engine passes follows the policy's size (per thread count), and either way the scan agrees
    with the reference."""
    from bytezoo.kernels.mlstm import calibration

    sizes = {**calibration.DEFAULTS, "fp32_blocked_stream_min_size": 128,
             "fp32_blocked_stream_min_size_threads": 64}
    monkeypatch.setattr(calibration, "thresholds", lambda: sizes)
    monkeypatch.setattr(packing, "BLOCKED_MAX_SIZE", 1024)
    monkeypatch.setattr(packing, "BLOCKED_STREAM_MIN_SIZE", None)
    flags = []
    spy_on_ops(monkeypatch, ops, "forward", lambda args: flags.append(args[-1]))
    before = torch.get_num_threads()
    try:
        for threads, hidden in ((1, 64), (1, 128), (2, 64)):
            torch.set_num_threads(threads)
            inputs, reset, hold = random_problem(batch=5, steps=packing.PACK_MIN_STEPS, hidden=hidden)
            with torch.no_grad():
                got = mlstm_scan(*inputs, reset=reset, hold=hold, kernel="fused")
            rtol, atol = TOLERANCES[torch.float32]
            for actual, want in zip(got, mlstm_scan_ref(*inputs, reset=reset, hold=hold)):
                torch.testing.assert_close(actual, want, rtol=rtol, atol=atol)
    finally:
        torch.set_num_threads(before)
    assert flags == [False, True, True]


def test_panel_cache_serves_short_calls_and_never_a_changed_weight(ops, monkeypatch):
    monkeypatch.setattr(packing, "BLOCKED_MAX_SIZE", 64)
    w_mh, w_h = torch.randn(64, 64), torch.randn(64, 256)
    rows = packing.BLOCKED_MIN_BATCH_SHORT
    panels = packing.blocked_panels(ops, w_mh, w_h, 8, packing.PACK_MIN_STEPS, save=False)
    assert packing.blocked_panels(ops, w_mh, w_h, rows, 1, save=False) is panels  # one-byte calls reuse them
    assert packing.blocked_panels(ops, w_mh, w_h, rows - 1, 1, save=False) is None  # too few rows for them
    assert packing.blocked_panels(ops, w_mh.clone(), w_h, rows, 1, save=False) is None  # another tensor
    w_h.add_(1.0)  # changed in place (an optimizer step): the old panels must not serve
    assert packing.blocked_panels(ops, w_mh, w_h, rows, 1, save=False) is None
    fresh = packing.blocked_panels(ops, w_mh, w_h, 8, packing.PACK_MIN_STEPS, save=False)
    torch.testing.assert_close(fresh[1][0, :, 0], w_h[:, 0], rtol=0, atol=0)
    assert len(packing.panel_cache.entries) == 1
    del w_h, fresh  # the weight freed: its panels go with it, without waiting for another call
    assert not packing.panel_cache.entries


def test_inference_mode_tensors_get_panels_per_call_and_never_from_the_cache(ops, monkeypatch):
    """Tensors made under torch.inference_mode track no version counter (the Featurizer runs there): their panels
    are made for long calls and never cached, so an in-place change can never be served stale panels."""
    monkeypatch.setattr(packing, "BLOCKED_MAX_SIZE", 64)
    steps = packing.PACK_MIN_STEPS
    inputs, _, _ = random_problem(batch=3, steps=steps, hidden=64, masks=False)
    with torch.inference_mode():
        w_mh, w_h = inputs[2].clone(), inputs[3].clone()
        assert packing.blocked_panels(ops, w_mh, w_h, 8, steps, save=False) is not None
        rows = packing.BLOCKED_MIN_BATCH_SHORT
        assert packing.blocked_panels(ops, w_mh, w_h, rows, 1, save=False) is None
        assert not packing.panel_cache.entries
        w_h.mul_(0.5)
        got = mlstm_scan(inputs[0], inputs[1], w_mh, w_h, *inputs[4:], kernel="fused")
    expected = mlstm_scan_ref(inputs[0], inputs[1], inputs[2], inputs[3] * 0.5, *inputs[4:])
    rtol, atol = TOLERANCES[torch.float32]
    for actual, want in zip(got, expected):
        torch.testing.assert_close(actual, want, rtol=rtol, atol=atol)


def test_inference_through_the_public_scan_uses_and_reuses_panels(ops, panels_made, monkeypatch):
    """kernel="fused" without autograd: a long call lays out and caches the panels, a one-step call continuing from
    its state uses them, and both agree with the reference."""
    monkeypatch.setattr(packing, "BLOCKED_MAX_SIZE", 64)
    batch = packing.BLOCKED_MIN_BATCH_SHORT
    inputs, _, _ = random_problem(batch=batch, steps=packing.PACK_MIN_STEPS + 1, hidden=64, masks=False)
    gates_x, mult_x, w_mh, w_h, h0, c0 = inputs
    monkeypatch.setattr(packing, "panel_cache", packing._PanelCache())
    chosen, choose = [], fused_cpu.blocked_panels
    monkeypatch.setattr(fused_cpu, "blocked_panels", lambda *args: chosen.append(choose(*args)) or chosen[-1])
    with torch.no_grad():
        head = mlstm_scan(gates_x[:, :-1], mult_x[:, :-1], w_mh, w_h, h0, c0, kernel="fused")
        tail = mlstm_scan(gates_x[:, -1:], mult_x[:, -1:], w_mh, w_h, head[2], head[3], kernel="fused")
    assert len(panels_made) == 1 and len(packing.panel_cache.entries) == 1
    assert chosen[0] is not None and chosen[1] is chosen[0]  # the one-step call ran on the cached panels
    expected = mlstm_scan_ref(*inputs)
    rtol, atol = TOLERANCES[torch.float32]
    torch.testing.assert_close(torch.cat([head[0], tail[0]], dim=1), expected[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(tail[3], expected[3], rtol=rtol, atol=atol)


def test_featurizer_features_equal_with_and_without_the_blocked_products(ops, panels_made, monkeypatch):
    """The practitioner's path end to end (inference mode, packed rows with resets, two layers: the second reads
    gathered inputs, not tables): the blocked products give the library products' features."""
    import bytezoo
    from bytezoo.transfer import Featurizer

    monkeypatch.setattr(packing, "BLOCKED_MAX_SIZE", 64)
    torch.manual_seed(0)
    model = bytezoo.create_model("mlstm-256", hidden_size=64, embedding_size=16, num_layers=2)
    texts = ["a fine film, funny and warm" * 3, "dull.", "not bad at all, really " * 4, "x" * 70]
    features = {}
    for blocked in (True, False):
        monkeypatch.setattr(packing, "BLOCKED_PRODUCTS", blocked)
        made = len(packing.panel_cache.entries)
        features[blocked] = Featurizer(model, batch_size=2, progress=False).fit().transform(texts)
        assert len(packing.panel_cache.entries) == made  # inference-mode weights: never cached
        assert bool(panels_made) == blocked  # the long packed rows did take the blocked products
        panels_made.clear()
    np.testing.assert_allclose(features[True], features[False], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps")
def test_one_openmp_runtime_in_the_process(ops):
    """The library is built with -fopenmp (so its parallel passes run in parallel); its libgomp.so.1 must resolve to
    the copy torch loaded, or two thread pools would fight over the cores. In a fresh process: other packages (scikit-
    learn) bring their own, differently named runtimes."""
    script = (
        "import pathlib, torch\n"
        "from bytezoo.kernels.mlstm import cpu_extension\n"
        "assert cpu_extension.cpu_ops() is not None\n"
        "maps = pathlib.Path('/proc/self/maps').read_text().splitlines()\n"
        "print(sorted({l.split()[-1] for l in maps if l.split()[-1].endswith('/libgomp.so.1')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    runtimes = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert len(runtimes) == 1 and Path(torch.__file__).parent in Path(runtimes[0]).parents, runtimes
