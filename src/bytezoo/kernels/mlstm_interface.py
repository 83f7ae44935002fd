"""Public entry point of the mLSTM recurrence: validates inputs and dispatches to an implementation.

Implementations (``kernel=``):
    ``"reference"``  plain PyTorch loop (:func:`bytezoo.kernels.mlstm_ref.mlstm_scan_ref`), always available.
    ``"auto"``       the fastest implementation available for the inputs' device and dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .mlstm_ref import mlstm_scan_ref

KERNELS = ("auto", "reference")


def _check_inputs(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold) -> None:
    if gates_x.dim() != 3 or gates_x.shape[-1] % 4:
        raise ValueError(f"gates_x must have shape (B, T, 4H); got {tuple(gates_x.shape)}")
    batch, steps, four_hidden = gates_x.shape
    hidden = four_hidden // 4
    if steps == 0:
        raise ValueError("gates_x has T = 0 steps: the recurrence needs at least one step")
    expected = {
        "mult_x": (mult_x, (batch, steps, hidden)),
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
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """The mLSTM recurrence; same arguments and results as :func:`mlstm_scan_ref`, plus ``kernel``."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown mLSTM kernel {kernel!r}; choose one of {KERNELS}")
    _check_inputs(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold)
    return mlstm_scan_ref(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells)
