"""oneDNN's packed-weight products, the private ATen ops behind them, and whether they can be trusted here.

``torch.ops.mkldnn._reorder_linear_weight`` lays a weight out once for oneDNN and ``_linear_pointwise`` multiplies
with it (what inductor's weight freezing and ``nn.LSTM``'s oneDNN kernel use). Being private, they are checked against
``torch.mm`` on first use per dtype (:func:`packing_works`); callers fall back to ``torch.mm``/``addmm`` where they
are missing or wrong. The packing policy (:mod:`.packing`) and its calibration (:mod:`.calibration`) both build on
this file, which depends on neither.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

# The batch sizes at which packed fp32 products beat MKL's plain GEMM (a fixed rule measured on an Intel Xeon: small
# and very tall inputs run faster plain; the figures are in .packing's notes). bf16 packs at any batch.
PACK_FP32_BATCHES = range(32, 129)
_verified: dict[torch.dtype, bool] = {}


def pack_weight(weight: Tensor, batch: int) -> Tensor:
    """``weight`` (in, out) laid out for products with ``batch``-row inputs."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous(), batch)


def packed_product(x: Tensor, packed: Tensor, add: Tensor | None = None) -> Tensor:
    """``x @ weight (+ add)`` with the weight as :func:`pack_weight` laid it out (a new tensor: the ops have no
    ``out=``)."""
    if add is None:
        return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    return torch.ops.mkldnn._linear_pointwise.binary(x, add, packed, None, "add")


def packing_works(dtype: torch.dtype) -> bool:
    """Whether the packed products exist here and agree with ``torch.mm`` in ``dtype`` (checked once per dtype; a
    warning names the fallback when they do not)."""
    if dtype not in _verified:
        try:
            generator = torch.Generator().manual_seed(0)
            x = torch.randn(3, 40, generator=generator).to(dtype)
            w = torch.randn(40, 24, generator=generator).to(dtype)
            add = torch.randn(3, 24, generator=generator).to(dtype)
            packed = pack_weight(w, 3)
            tol = 1e-4 if dtype == torch.float32 else 5e-2
            expected = x.float() @ w.float()
            ok = (torch.allclose(packed_product(x, packed).float(), expected, rtol=tol, atol=tol * 10)
                  and torch.allclose(packed_product(x, packed, add).float(), expected + add.float(), rtol=tol,
                                     atol=tol * 10))
        except (RuntimeError, AttributeError, NotImplementedError):
            ok = False
        if not ok:
            warnings.warn(f"oneDNN weight packing is unavailable or wrong for {dtype}; the fused mLSTM uses torch.mm")
        _verified[dtype] = ok
    return _verified[dtype]


__all__ = ["PACK_FP32_BATCHES", "pack_weight", "packed_product", "packing_works"]
