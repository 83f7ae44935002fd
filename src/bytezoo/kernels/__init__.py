"""The mLSTM recurrence: a plain-PyTorch reference and fused fast paths behind one function.

>>> from bytezoo.kernels import mlstm_scan
>>> hs, cs, h_T, c_T = mlstm_scan(gates_x, mult_x, w_mh, w_h, h0, c0, kernel="auto")  # doctest: +SKIP
"""
from .mlstm_interface import KERNELS, mlstm_scan
from .mlstm_ref import mlstm_scan_ref

__all__ = ["KERNELS", "mlstm_scan", "mlstm_scan_ref"]
