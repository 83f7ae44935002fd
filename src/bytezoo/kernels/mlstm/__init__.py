"""The mLSTM recurrence as one op: a plain-PyTorch reference (``naive``) and fast engines behind one function,
chosen from one capability table (:data:`ENGINES`, in :mod:`.interface`, which also describes the files).

>>> from bytezoo.kernels.mlstm import mlstm_scan
>>> hs, cs, h_T, c_T = mlstm_scan(gates_x, mult_x, w_mh, w_h, h0, c0, kernel="auto")  # doctest: +SKIP
"""
from .interface import ENGINES, KERNELS, mlstm_scan
from .naive import mlstm_scan_ref


def empty_cache() -> None:
    """Releases the large buffers the compiled CPU kernel keeps for reuse between calls (about one training step's
    activations; buffers still in use stay with their users). Like ``torch.cuda.empty_cache``, for the end of a job."""
    import torch

    if hasattr(torch.ops, "bytezoo_mlstm_cpu") and hasattr(torch.ops.bytezoo_mlstm_cpu, "empty_cache"):
        torch.ops.bytezoo_mlstm_cpu.empty_cache()


__all__ = ["ENGINES", "KERNELS", "empty_cache", "mlstm_scan", "mlstm_scan_ref"]
