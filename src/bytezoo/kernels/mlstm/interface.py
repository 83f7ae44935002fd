"""Public entry point of the mLSTM recurrence: validates the inputs, picks an engine from one capability table
(:data:`ENGINES`), gathers a byte model's table rows for the engines that cannot read token ids, and runs the engine.

One folder for the op and one file per engine, as in fla's ``ops/gla/`` (``naive.py``, ``fused_recurrent.py``,
``chunk.py``), every engine with the signature of :func:`~bytezoo.kernels.mlstm.naive.mlstm_scan_ref`:

    ``naive.py``         the reference: plain PyTorch loop, autograd's backward; imports only torch, so a model folder
                         can carry a verbatim copy for ``trust_remote_code``
    ``fused_cpu.py``     time loops compiled in C++ (``csrc/``, built by ``cpu_extension.py``), hand-written backward;
                         reads table rows in place
    ``fused_torch.py``   the same algorithm as plain-PyTorch loops fused per step; any device, any floating dtype
    ``fused_triton.py``  Triton pointwise kernels + cuBLAS products, for NVIDIA GPUs

beside this file (the capability table and dispatch), ``common.py`` (layouts, masks and the backward algebra the
fused engines share), ``packing.py`` (when the fused engines lay a weight out for oneDNN or for the compiled loops'
own register-blocked products: a measured policy), ``calibration.py`` (that policy's thresholds, measured on the
machine at first use) and ``onednn.py`` (the private oneDNN ops both build on). Imports point one way:
interface -> engines -> packing -> calibration -> onednn.

``kernel=`` names what a caller chooses between, not a file:
    ``"reference"``  the reference.
    ``"fused"``      the compiled CPU loops where they can run (CPU float32/bfloat16/float64, a C++ compiler found,
                     not switched off), else the plain-PyTorch loops; training 4-5x the reference on CPU (benchmarks/).
    ``"triton"``     Triton: CUDA tensors in float32/float16/bfloat16 (or CPU tensors under ``TRITON_INTERPRET=1``, for
                     testing; "auto" never picks the interpreter).
    ``"auto"``       the first engine of :data:`ENGINES` that can run on the inputs: the table's order is the order
                     of preference.

Which engine runs, and whether it reads a byte model's table rows in place or gets them gathered, is decided here and
only here, from :data:`ENGINES`.
All of them run with autocast disabled: the dtypes the caller passes are the dtypes the recurrence uses.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .common import needs_autograd

KERNELS = ("auto", "reference", "fused", "triton")
_LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Engine:
    """One implementation of the recurrence and what it can do."""

    name: str
    kernel: str  # the kernel= name that selects it
    module: str  # the file of this package that defines it (imported on first use: Triton's import is slow)
    function: str  # its entry point there, with mlstm_scan_ref's signature
    devices: tuple[str, ...] | None  # device types it runs on; None: any
    dtypes: tuple[torch.dtype, ...] | None  # dtypes of gates_x, mult_x and the weights; None: any floating dtype
    reads_token_ids: bool  # reads (V, ...) table rows in place given input_ids; else mlstm_scan gathers them for it
    return_cells: bool  # can return every step's cell state
    training: bool  # has a backward
    devices_when_named: tuple[str, ...] = ()  # also runs there when asked for by name, never chosen by "auto"
    runtime: Callable[[torch.device], str | None] | None = None  # run-time conditions (a package, a built library, a
    # switch): why it cannot run on this device now, or None; consulted last, as it may import or build something

    def unavailable(self, gates_x: Tensor, *, return_cells: bool = False, training: bool = False,
                    named: bool = False) -> str | None:
        """Why this engine cannot run on inputs like ``gates_x`` (asked for by name when ``named``), or None."""
        device = gates_x.device
        column = self._mismatch(gates_x.dtype, device.type, return_cells, training, named)
        if column == "dtypes":
            return f"it supports {self.dtypes}, not {gates_x.dtype}"
        if column == "devices":
            devices = self.devices + (self.devices_when_named if named else ())
            return f"it needs {' or '.join(devices)} tensors; got {device}"
        if column is not None:
            return {"return_cells": "it cannot return the cell states", "training": "it has no backward"}[column]
        return None if self.runtime is None else self.runtime(device)

    def _mismatch(self, dtype, device_type, return_cells, training, named) -> str | None:
        """The first column of the table the inputs fail, or None (cheap: "auto" asks this of every engine per call)."""
        if self.dtypes is not None and dtype not in self.dtypes:
            return "dtypes"
        if self.devices is not None and device_type not in self.devices:
            if not (named and device_type in self.devices_when_named):
                return "devices"
        if return_cells and not self.return_cells:
            return "return_cells"
        if training and not self.training:
            return "training"
        return None

    def load(self) -> Callable:
        """The entry point (looked up at each call, so a test can wrap it)."""
        name = f"{__package__}.{self.module}"
        return getattr(sys.modules.get(name) or importlib.import_module(name), self.function)


def _compiled_loops_runtime(device: torch.device) -> str | None:
    from . import fused_cpu

    return fused_cpu.unavailable_reason()


def _triton_runtime(device: torch.device) -> str | None:
    from . import fused_triton

    if not fused_triton.available():
        return "Triton is not installed (pip install triton)"
    if device.type == "cpu" and not fused_triton.interpreting():
        return f"it needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors); got {device}"
    return None


# The capability table, in order of preference ("auto" takes the first engine that can run on the inputs).
ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        Engine("triton", "triton", "fused_triton", "mlstm_scan_triton", devices=("cuda",), dtypes=_LOW_PRECISION,
               reads_token_ids=False, return_cells=True, training=True, devices_when_named=("cpu",),
               runtime=_triton_runtime),
        Engine("fused_cpu", "fused", "fused_cpu", "mlstm_scan_fused_cpu", devices=("cpu",),
               dtypes=(torch.float32, torch.bfloat16, torch.float64), reads_token_ids=True, return_cells=True,
               training=True, runtime=_compiled_loops_runtime),
        Engine("fused_torch", "fused", "fused_torch", "mlstm_scan_fused_torch", devices=None, dtypes=None,
               reads_token_ids=False, return_cells=True, training=True),
        # The reference takes input_ids too (a plain table[input_ids], for callers without bytezoo), but mlstm_scan's
        # gather is the faster one (index_select: its backward is a plain index_add).
        Engine("reference", "reference", "naive", "mlstm_scan_ref", devices=None, dtypes=None,
               reads_token_ids=False, return_cells=True, training=True),
    )
}


def choose_engine(kernel: str, gates_x: Tensor, *, return_cells: bool = False, training: bool = False) -> Engine:
    """The engine ``kernel`` stands for on inputs like ``gates_x``: the first of :data:`ENGINES` (in its order) that
    ``kernel`` names ("auto": any) and that can run. "auto" and "fused" always find one; "triton" raises if it
    cannot."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown mLSTM kernel {kernel!r}; choose one of {KERNELS}")
    named = kernel != "auto"
    # an exported graph (torch.export, ONNX) holds plain PyTorch operations
    if not named and torch.compiler.is_exporting():
        return ENGINES["reference"]
    dtype, device = gates_x.dtype, gates_x.device
    candidates = [engine for engine in ENGINES.values() if not named or engine.kernel == kernel]
    for engine in candidates:
        if engine._mismatch(dtype, device.type, return_cells, training, named) is None:
            if engine.runtime is None or engine.runtime(device) is None:
                return engine
    reasons = [engine.unavailable(gates_x, return_cells=return_cells, training=training, named=named)
               for engine in candidates]
    reasons = reasons if named else [f"{engine.name}: {reason}" for engine, reason in zip(candidates, reasons)]
    raise RuntimeError(f"kernel={kernel!r} cannot run here: {'; '.join(reasons) or 'no engine in ENGINES'}")


def resolve_kernel(kernel: str, gates_x: Tensor) -> str:
    """The ``kernel=`` name of the engine that ``kernel`` chooses on inputs like ``gates_x`` ("auto" -> "fused")."""
    return choose_engine(kernel, gates_x).kernel


def gather_rows(gate_table: Tensor, mult_table: Tensor, input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(V, 4H), (V, H) tables and (B, T) ids -> (B, T, 4H), (B, T, H) per-step inputs, for an engine that cannot read
    token ids (the only place rows are gathered outside the engines that read them themselves).

    ``index_select`` rather than ``table[input_ids]``: its backward is a plain index_add (2.6x faster on CPU).
    """
    batch, steps = input_ids.shape
    flat = input_ids.reshape(-1).long()
    gates_x = gate_table.index_select(0, flat).view(batch, steps, -1)
    mult_x = mult_table.index_select(0, flat).view(batch, steps, -1)
    return gates_x, mult_x


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
    if torch.compiler.is_compiling():  # traced for a graph (torch.export): the values are not there to check
        return
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
            raise ValueError(f"{name} must have shape {shape} for gates_x of shape {tuple(gates_x.shape)}; "
                             f"got {tuple(tensor.shape)}")
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
    training = needs_autograd(gates_x, mult_x, w_mh, w_h, h0, c0)
    engine = choose_engine(kernel, gates_x, return_cells=return_cells, training=training)
    with torch.autocast(gates_x.device.type, enabled=False):
        if input_ids is not None and not engine.reads_token_ids:
            gates_x, mult_x = gather_rows(gates_x, mult_x, input_ids)
            input_ids = None
        return engine.load()(gates_x, mult_x, w_mh, w_h, h0, c0, reset, hold, return_cells, input_ids)
