"""The compiled CPU time loops (bytezoo/kernels/mlstm/csrc/mlstm_cpu.cpp): build, cache, fallback, buffer recycling.

Their numerics are tested against the reference in tests/test_kernels.py (every "fused" test runs through both the
compiled and the plain-PyTorch loops).
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest
import torch

import bytezoo.kernels
from bytezoo.kernels import mlstm_scan, mlstm_scan_ref
from bytezoo.kernels.mlstm import cpu_extension, fused_cpu
from bytezoo.kernels.mlstm.interface import ENGINES, choose_engine

HAS_COMPILER = shutil.which(os.environ.get("CXX") or "c++") is not None


def problem(batch=3, steps=5, hidden=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, steps, 4 * hidden, generator=generator),
        torch.randn(batch, steps, hidden, generator=generator),
        torch.randn(hidden, hidden, generator=generator) / hidden**0.5,
        torch.randn(hidden, 4 * hidden, generator=generator) / hidden**0.5,
    )


@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler on PATH")
def test_the_extension_builds_where_a_compiler_exists():
    """No silent fallback: with a compiler present the fused kernel must run the compiled loops."""
    if os.environ.get(cpu_extension.ENV_SWITCH) == "0":
        pytest.skip(f"{cpu_extension.ENV_SWITCH}=0 in this environment")
    assert fused_cpu.unavailable_reason() is None, fused_cpu.unavailable_reason()
    assert choose_engine("fused", torch.zeros(1, 1, 4)).name == "fused_cpu"
    library = cpu_extension.cache_dir() / f"bytezoo_mlstm_cpu_{cpu_extension.build_key()}.so"
    assert library.exists()


def test_compiled_loops_only_for_cpu_tensors_of_supported_dtypes():
    compiled = ENGINES["fused_cpu"]
    assert "not torch.float16" in compiled.unavailable(torch.zeros(1, 1, 4, dtype=torch.float16))
    assert "got meta" in compiled.unavailable(torch.zeros(1, 1, 4, device="meta"))
    assert choose_engine("fused", torch.zeros(1, 1, 4, dtype=torch.float16)).name == "fused_torch"


def test_build_key_follows_the_source_and_flags(monkeypatch, tmp_path):
    key = cpu_extension.build_key()
    source = tmp_path / "mlstm_cpu.cpp"
    source.write_bytes(cpu_extension.SOURCE.read_bytes() + b"\n// changed\n")
    monkeypatch.setattr(cpu_extension, "SOURCE", source)
    changed_source = cpu_extension.build_key()
    monkeypatch.setattr(cpu_extension, "CFLAGS", (*cpu_extension.CFLAGS, "-DSOMETHING"))
    assert len({key, changed_source, cpu_extension.build_key()}) == 3


CHILD = textwrap.dedent(
    """
    import json, sys, warnings
    import torch
    from bytezoo.kernels import mlstm_scan, mlstm_scan_ref
    from bytezoo.kernels.mlstm import cpu_extension
    from bytezoo.kernels.mlstm.interface import choose_engine
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops = choose_engine("fused", torch.zeros(1, 1, 4)).name == "fused_cpu"
    torch.manual_seed(0)
    args = (torch.randn(2, 4, 16), torch.randn(2, 4, 4), torch.randn(4, 4), torch.randn(4, 16))
    fused = mlstm_scan(*args, kernel="fused")[0]
    exact = bool(torch.allclose(fused, mlstm_scan_ref(*args)[0], rtol=1e-4, atol=2e-5))
    print(json.dumps({"compiled": ops, "reason": cpu_extension.unavailable_reason(),
                      "warnings": [str(w.message) for w in caught], "matches_reference": exact}))
    """
)


def run_child(env_updates: dict, timeout: float = 300) -> dict:
    import json

    env = {**os.environ, **env_updates}
    result = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_switched_off_falls_back_quietly():
    report = run_child({cpu_extension.ENV_SWITCH: "0"})
    assert report["compiled"] is False and report["matches_reference"]
    assert report["reason"] == f"{cpu_extension.ENV_SWITCH}=0"
    assert not any("compiled CPU mLSTM loops" in message for message in report["warnings"])


@pytest.mark.slow
def test_a_failing_build_falls_back_with_one_warning_and_leaves_no_library(tmp_path):
    """A broken compiler: the model still runs (plain-PyTorch loops), a warning says why, nothing half-built stays."""
    fake = tmp_path / "bin" / "c++"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'fake compiler: refusing' >&2\nexit 1\n")
    fake.chmod(0o755)
    extensions = tmp_path / "extensions"
    report = run_child({"CXX": str(fake), "TORCH_EXTENSIONS_DIR": str(extensions)})
    assert report["compiled"] is False and report["matches_reference"]
    assert report["reason"].startswith("build or load failed")
    assert sum("compiled CPU mLSTM loops are unavailable" in message for message in report["warnings"]) == 1
    assert not list(extensions.glob("bytezoo/*.so"))


@pytest.mark.slow
@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler on PATH")
def test_concurrent_first_uses_build_once_and_all_load(tmp_path):
    """Two processes start on an empty cache at once: one builds under the lock, the other waits and loads."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    env.pop(cpu_extension.ENV_SWITCH, None)
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    import json

    reports = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["compiled"] and r["matches_reference"] for r in reports), reports
    libraries = list((tmp_path / "bytezoo").glob("*.so"))
    assert len(libraries) == 1
    assert not list((tmp_path / "bytezoo").glob(".*.tmp")) and not [p for p in (tmp_path / "bytezoo").iterdir() if p.is_dir()]


@pytest.fixture
def compiled():
    if fused_cpu.unavailable_reason() is not None:
        pytest.skip(f"the compiled CPU loops are unavailable here: {fused_cpu.unavailable_reason()}")


def test_recycled_buffers_never_overwrite_live_results(compiled):
    """Outputs and saved tensors a caller still holds are never handed out again (buffers >= 1 MiB are recycled)."""
    batch, steps, hidden = 8, 64, 256  # (B, T, 4H) fp32 = 2 MiB: recycled sizes
    first = [x.requires_grad_() for x in problem(batch, steps, hidden, seed=1)]
    hs1, _, _, _ = mlstm_scan(*first, kernel="fused")
    kept = hs1.detach().clone()
    for seed in range(2, 8):  # more calls than the cache keeps idle buffers for
        with torch.no_grad():
            mlstm_scan(*problem(batch, steps, hidden, seed=seed), kernel="fused")
        second = [x.requires_grad_() for x in problem(batch, steps, hidden, seed=seed)]
        hs2, _, _, _ = mlstm_scan(*second, kernel="fused")
        hs2.sum().backward()
    assert torch.equal(hs1.detach(), kept)
    # The first graph's saved coefficients survived the other calls too: its gradients match the reference.
    weights = torch.randn_like(hs1)
    grads = torch.autograd.grad((hs1 * weights).sum(), first)
    leaves = [x.detach().requires_grad_() for x in first]
    expected = torch.autograd.grad((mlstm_scan_ref(*leaves)[0] * weights).sum(), leaves)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5)
    bytezoo.kernels.empty_cache()
    assert torch.equal(hs1.detach(), kept)


def test_outputs_own_exactly_their_storage(compiled):
    """Recycled buffers are never larger than the tensors handed out (torch.save writes whole storages)."""
    for steps in (64, 60, 64):
        hs, _, _, _ = mlstm_scan(*problem(8, steps, 256, seed=steps), kernel="fused")
        assert hs.untyped_storage().nbytes() == hs.numel() * hs.element_size()
        del hs


def test_backward_can_run_twice_with_retain_graph(compiled):
    leaves = [x.requires_grad_() for x in problem(4, 6, 8)]
    hs, _, h_last, c_last = mlstm_scan(*leaves, kernel="fused")
    loss = hs.square().sum() + c_last.sum()
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.skipif(not HAS_COMPILER or platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 compiler")
def test_the_source_compiles_for_cpus_without_avx512():
    """The blocked products exist only in AVX-512 builds (-march=native elsewhere gives AVX2 or less); the rest of
    the file must compile without them. Syntax and types only, for an AVX2 target."""
    from torch.utils.cpp_extension import include_paths

    compiler = os.environ.get("CXX") or "c++"
    flags = ["-std=c++17", "-fsyntax-only", "-march=x86-64-v3", "-fopenmp", "-w"]
    includes = [f"-I{path}" for path in (*include_paths(), sysconfig.get_paths()["include"])]
    done = subprocess.run([compiler, *flags, *includes, str(cpu_extension.SOURCE)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.skipif(not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2, reason="Linux, 2+ cores")
def test_parallel_passes_run_on_several_threads(compiled):
    """Built without OpenMP, at::parallel_for in the loops silently ran on one thread (it did until 2026-11-30)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.ops.bytezoo_mlstm_cpu.parallel_threads(64) == 2
        torch.set_num_threads(1)
        assert torch.ops.bytezoo_mlstm_cpu.parallel_threads(64) == 1
    finally:
        torch.set_num_threads(before)


def test_the_operators_refuse_misuse_by_name(compiled):
    ops = torch.ops.bytezoo_mlstm_cpu
    gates_x, mult_x, w_mh, w_h = problem()
    state = torch.zeros(3, 8)
    with pytest.raises(RuntimeError, match="mult_x must be a contiguous CPU"):
        ops.forward(gates_x, mult_x.transpose(0, 1), w_mh, w_h, None, None, state, state, None, None, None, False, False,
                    None, None)
    with pytest.raises(RuntimeError, match="h0 must be a contiguous"):
        ops.forward(gates_x, mult_x, w_mh, w_h, None, None, state.double(), state, None, None, None, False, False,
                    None, None)
    with pytest.raises(RuntimeError, match="held must be a contiguous"):
        ops.forward(gates_x, mult_x, w_mh, w_h, None, None, state, state, None, torch.zeros(3, 5), None, False, False,
                    None, None)
    table, mult_table = torch.randn(4, 32), torch.randn(4, 8)
    with pytest.raises(RuntimeError, match=r"input_ids\[1\] = 7 is not a row of the \(4, ...\) tables"):
        ops.forward(table, mult_table, w_mh, w_h, None, None, state, state, None, None,
                    torch.tensor([[0, 7, 1, 2, 3]] * 3), False, False, None, None)
