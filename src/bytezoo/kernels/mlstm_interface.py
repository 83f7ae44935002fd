"""Public entry point of the mLSTM recurrence: validates inputs and dispatches to an implementation.

Implementations (``kernel=``):
    ``"reference"``  plain PyTorch loop (:func:`bytezoo.kernels.mlstm_ref.mlstm_scan_ref`), always available.
    ``"fused"``      hand-written forward+backward (:mod:`bytezoo.kernels.mlstm_fused`): on CPU the time loops
                     compiled in C++ on first use (float32/bfloat16/float64; a plain-PyTorch loop where no compiler is
                     found), oneDNN-packed weights; any device, any floating dtype.
    ``"triton"``     Triton pointwise kernels + cuBLAS products (:mod:`bytezoo.kernels.mlstm_triton`); CUDA tensors
                     in float32/float16/bfloat16 (or CPU tensors under ``TRITON_INTERPRET=1``, for testing).
    ``"auto"``       the fastest one that supports the inputs: "triton" for CUDA float32/16/bfloat16 when Triton is
                     installed, else "fused" (training 4-5x the reference on CPU, see benchmarks/), else "reference".

All of them run with autocast disabled: the dtypes the caller passes are the dtypes the recurrence uses.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._scan_common import gather_rows
from .mlstm_ref import mlstm_scan_ref

KERNELS = ("auto", "reference", "fused", "triton")


def _check_token_ids(input_ids: Tensor, gates_x: Tensor, mult_x: Tensor) -> None:
    """Table inputs: gates_x (V, 4H) and mult_x (V, H) per-token rows, input_ids (B, T) row numbers in [0, V)."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (B, T); got {tuple(input_ids.shape)}")
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"input_ids must be an integer tensor; got {input_ids.dtype}")
    if input_ids.device != gates_x.device:
        raise ValueError(f"input_ids is on {input_ids.device} but gates_x is on {gates_x.device}")
    if gates_x.dim() != 2 or gates_x.shape[-1] % 4:
        raise ValueError(f"with input_ids, gates_x must be a (V, 4H) table; got {tuple(gates_x.shape)}")
    if tuple(mult_x.shape) != (gates_x.shape[0], gates_x.shape[1] // 4):
        raise ValueError(f"with input_ids, mult_x must be a (V, H) table matching gates_x; got {tuple(mult_x.shape)}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids has T = 0 steps: the recurrence needs at least one step")
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= gates_x.shape[0]):
        raise ValueError(
            f"input_ids must lie in [0, {gates_x.shape[0]}) (the tables' rows); "
            f"got values from {int(input_ids.min())} to {int(input_ids.max())}"
        )


def _check_inputs(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, input_ids=None) -> None:
    if input_ids is not None:
        _check_token_ids(input_ids, gates_x, mult_x)
        batch, steps = input_ids.shape
        four_hidden = gates_x.shape[-1]
    else:
        if gates_x.dim() != 3 or gates_x.shape[-1] % 4:
            raise ValueError(f"gates_x must have shape (B, T, 4H); got {tuple(gates_x.shape)}")
        batch, steps, four_hidden = gates_x.shape
    hidden = four_hidden // 4
    if steps == 0:
        raise ValueError("gates_x has T = 0 steps: the recurrence needs at least one step")
    expected = {
        "mult_x": (mult_x, tuple(mult_x.shape) if input_ids is not None else (batch, steps, hidden)),
        "w_mh": (w_mh, (hidden, hidden)),
        "w_h": (w_h, (hidden, four_hidden)),
        "h0": (h0, (batch, hidden)),
        "c0": (c0, (batch, hidden)),
        "reset": (reset, (batch, steps)),
        "hold": (hold, (batch, steps)),
    }
    if (h0 is None) != (c0 is None):
        raise ValueError("pass both h0 and c0, or neither")
    for name, (tensor, shape) in expected.items():
        if tensor is None:
            continue
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for gates_x of shape {tuple(gates_x.shape)}; got {tuple(tensor.shape)}")
        if tensor.device != gates_x.device:
            raise ValueError(f"{name} is on {tensor.device} but gates_x is on {gates_x.device}")
    if not gates_x.is_floating_point():
        raise TypeError(f"gates_x must be a floating-point tensor; got {gates_x.dtype}")
    for name in ("mult_x", "w_mh", "w_h"):
        tensor = expected[name][0]
        if tensor.dtype != gates_x.dtype:
            raise TypeError(f"{name} has dtype {tensor.dtype} but gates_x has {gates_x.dtype}; cast them to one dtype")
    for name in ("h0", "c0"):
        tensor = expected[name][0]
        if tensor is not None and not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got {tensor.dtype}")
    if h0 is not None and h0.dtype != c0.dtype:
        raise TypeError(f"h0 has dtype {h0.dtype} but c0 has {c0.dtype}")
    for name in ("reset", "hold"):
        tensor = expected[name][0]
        if tensor is not None and tensor.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool mask; got {tensor.dtype}")


def mlstm_scan(
    gates_x: Tensor,
    mult_x: Tensor,
    w_mh: Tensor,
    w_h: Tensor,
    h0: Tensor | None = None,
    c0: Tensor | None = None,
    reset: Tensor | None = None,
    hold: Tensor | None = None,
    return_cells: bool = False,
    kernel: str = "auto",
    input_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """The mLSTM recurrence; same arguments and results as :func:`mlstm_scan_ref`, plus ``kernel``.

    ``input_ids`` (B, T), optional: then ``gates_x`` (V, 4H) and ``mult_x`` (V, H) are per-token tables and step t of
    sequence b reads row ``input_ids[b, t]`` of each, as in a byte model's first layer (V = 256: the input projections
    are row gathers from small precomputed tables). Same results as passing ``gates_x[input_ids]`` and
    ``mult_x[input_ids]``; the compiled CPU loops read the rows in place instead of materialising (B, T, 4H).

    Example::

        >>> gates_x, mult_x = torch.randn(2, 5, 16), torch.randn(2, 5, 4)
        >>> w_mh, w_h = torch.randn(4, 4), torch.randn(4, 16)
        >>> hs, _, h_T, c_T = mlstm_scan(gates_x, mult_x, w_mh, w_h)
        >>> hs.shape, h_T.shape
        (torch.Size([2, 5, 4]), torch.Size([2, 4]))
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown mLSTM kernel {kernel!r}; choose one of {KERNELS}")
    _check_inputs(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, input_ids)
    name = resolve_kernel(kernel, gates_x)
    implementation = _implementation(name)
    with torch.autocast(gates_x.device.type, enabled=False):
        if input_ids is None:
            return implementation(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells)
        if name == "fused":  # reads the table rows itself where it can
            return implementation(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, input_ids=input_ids)
        gates_x, mult_x = gather_rows(gates_x, mult_x, input_ids)
        return implementation(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells)


def _triton_supports(tensor: Tensor) -> str | None:
    """Why the Triton path cannot run on ``tensor``, or None when it can."""
    from . import mlstm_triton

    if not mlstm_triton.available():
        return "Triton is not installed (pip install triton)"
    if tensor.dtype not in mlstm_triton.SUPPORTED_DTYPES:
        return f"it supports {mlstm_triton.SUPPORTED_DTYPES}, not {tensor.dtype}"
    if tensor.device.type != "cuda" and not (tensor.device.type == "cpu" and mlstm_triton.interpreting()):
        return f"it needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors); got {tensor.device}"
    return None


def resolve_kernel(kernel: str, gates_x: Tensor) -> str:
    """The implementation ``kernel`` stands for on inputs like ``gates_x``; "auto" never fails, it falls back."""
    if kernel == "triton":
        reason = _triton_supports(gates_x)
        if reason is not None:
            raise RuntimeError(f"kernel='triton' cannot run here: {reason}")
        return kernel
    if kernel != "auto":
        return kernel
    if gates_x.device.type == "cuda" and _triton_supports(gates_x) is None:
        return "triton"
    return "fused"  # any device and floating dtype


def _implementation(kernel: str):
    if kernel == "reference":
        return mlstm_scan_ref
    if kernel == "fused":
        from .mlstm_fused import mlstm_scan_fused

        return mlstm_scan_fused
    from .mlstm_triton import mlstm_scan_triton

    return mlstm_scan_triton
