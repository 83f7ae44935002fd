"""bytezoo's compute kernels, one folder per op (as fla's ``ops/<op>/``): today the mLSTM recurrence,
:mod:`bytezoo.kernels.mlstm`, whose public names are re-exported here.

>>> from bytezoo.kernels import mlstm_scan
>>> hs, cs, h_T, c_T = mlstm_scan(gates_x, mult_x, w_mh, w_h, h0, c0, kernel="auto")  # doctest: +SKIP
"""
from .mlstm import ENGINES, KERNELS, empty_cache, mlstm_scan, mlstm_scan_ref

__all__ = ["ENGINES", "KERNELS", "empty_cache", "mlstm_scan", "mlstm_scan_ref"]
