"""When and how the fused engines lay out a recurrent weight for faster per-step products: the packing policy, shared
by the compiled CPU loops (:mod:`bytezoo.kernels.mlstm.fused_cpu`) and the plain-PyTorch ones
(:mod:`bytezoo.kernels.mlstm.fused_torch`).

Two layouts, each used where it measured faster:

* **oneDNN's blocked layout** (bf16 always, fp32 from H = 1024 at moderate batches, never for short calls), as
  ``nn.LSTM``'s oneDNN kernel does: :class:`RecurrentMatmul`, packed once per call.
* **The compiled loops' own panels** (:func:`blocked_panels`; fp32 inference, AVX-512 builds): the weights as
  64-column panels that the C++ loops multiply with register-blocked AVX-512 code, fusing the step's pointwise work
  into each panel's result while it is in cache. At H=256 this removed most of what kept inference behind
  ``nn.LSTM`` (benchmarks/results/kernels-notes.md). Panels too large to stay in cache between steps are streamed,
  the next slice prefetched while the batch uses this one (from a calibrated size; at H=1024 this put inference
  ahead of ``nn.LSTM``). The panels are cached per weight tensor (identity and version counter), so generation's
  one-byte calls reuse them.

Its own file because it is a measured policy, not an engine: the numbers behind each threshold sit next to it, and
both fused engines (and their tests) read the same thresholds.

Packing uses private ATen ops, wrapped and checked against ``torch.mm`` in :mod:`.onednn` (replaced by
``torch.mm``/``addmm`` where missing or wrong); ``PACK_WEIGHTS = False`` turns them off. The thresholds are read at
each call, so tests can change them.
"""
from __future__ import annotations

import weakref

import torch
from torch import Tensor

from .onednn import PACK_FP32_BATCHES, pack_weight, packed_product, packing_works

PACK_WEIGHTS = True
_PACKABLE = (torch.float32, torch.bfloat16)
# When packing pays, measured (one thread, CPU time):
#  * Packing costs about as much as tens of steps' products (H=1024: ~20 ms fp32, ~7 ms bf16 per call), so a call
#    needs PACK_MIN_STEPS steps to earn it back: token-by-token generation (T=1) with packing ran 4x slower.
#    Forward, H=1024, packed vs plain ms: fp32 B=64 T=16 102 vs 85, T=64 329 vs 339, T=256 1144 vs 1285; bf16 B=64
#    T=16 29 vs 25, T=64 72 vs 97; bf16 B=1 T=64 40 vs 71.
#  * In fp32 only large products gain, and only at moderate batch sizes (MKL's plain GEMM wins for small and for very
#    tall inputs): B=8 T=64 93 vs 60, B=32 T=128 332 vs 338, B=128 T=32 288 vs 302, B=256 T=64 1075 vs 1020. Per
#    product, 50 calls, contiguous torch.mm vs packed: H=1024 B=64 W_h 187 vs 160, W_h^T 204 vs 165; H=512 B=32 W_h
#    23.4 vs 25.1; H=256 B=32 W_h 5.2 vs 5.9. So fp32 packs from PACK_MIN_SIZE, for PACK_FP32_BATCHES.
#  * In bf16 packing wins at any size (224 vs 156 GFLOP/s at H=256, 510 vs 332 at H=1024).
# Below these, torch.mm on a contiguous weight (a transposed view would run MKL's slower "B transposed" GEMM, so the
# backward's weights are copied once per call).
# Those sizes were measured on one CPU family; other CPUs rank the two GEMMs differently, so the size thresholds are
# measured on the machine it runs on at first use and cached (:mod:`bytezoo.kernels.mlstm.calibration`; the rule
# above is the fallback and what BYTEZOO_KERNEL_CALIBRATION=0 uses). None = calibrated; a number fixes it.
PACK_MIN_STEPS = 32
PACK_MIN_SIZE: int | None = None  # fp32: pack weights whose smaller side is at least this
PACK_BF16_MIN_SIZE: int | None = None  # bf16: likewise (the built-in rule: always)
# The compiled loops' panels (fp32 inference): used for H up to BLOCKED_MAX_SIZE (None = calibrated, one limit for
# one thread and one for several; the built-in rule, measured on an Intel Xeon with AMX on 2026-11-30, one thread /
# two threads, forward time library GEMMs over panels: H=256 B=32 T=128 1.08 / 1.36, H=512 B=32 T=32 0.98 / 1.17,
# H=1024 B=64 T=32 0.93 / 1.00-1.05, H=4096 B=512 T=8 (two threads) 0.95: one thread up to 512, two up to 2048).
# Laying the panels out costs a copy of both weights, about one step's products: a call that finds no cached panels
# makes them only from PACK_MIN_STEPS steps (one-byte calls then use library GEMMs until a longer call made them).
# And only up to BLOCKED_MAX_BATCH rows: library GEMMs catch up on tall inputs (H=256, library time over blocked, one /
# two threads: B=64 1.06 / 1.26, B=128 1.07 / 1.15, B=256 1.08 / 1.05, B=512 0.99 / 0.98; the Featurizer's 512 rows
# ran 6% slower blocked). Measured on the Intel Xeon only: a fixed rule, like PACK_FP32_BATCHES.
BLOCKED_PRODUCTS = True
BLOCKED_MAX_SIZE: int | None = None
# From which H the panels are read as weights that do not stay in cache between steps (64-row slices, the next slice
# software-prefetched): None = calibrated, per thread count like BLOCKED_MAX_SIZE. The built-in rule, measured on the
# Intel Xeon (2 MB L2 per core) on 2026-11-30 (one thread, scan time without over with the prefetch): H=1024 B=64
# 1.06-1.22, B=32 1.09-1.17, H=2048 B=32 1.07-1.14; H=256 B=32 0.96 (its 1.25 MB of panels stay in L2), H=512 B=32
# 0.95-0.96.
BLOCKED_STREAM_MIN_SIZE: int | None = None
BLOCKED_MAX_BATCH = 256
# And from 2 rows, and for short calls (fewer than PACK_MIN_STEPS steps: generation's one-byte steps, panels from the
# cache) from BLOCKED_MIN_BATCH_SHORT rows. One-byte steps of the model, blocked against library products (one thread,
# 2026-11-30): H=256 B=1 357 vs 341 us, B=4 395 vs 383, B=8 495 vs 482, B=16 606 vs 599, B=32 670 vs 716; H=1024 B=1
# 1,357 vs 1,260, B=2-8 2-3% slower, B=16 2,228 vs 2,882, B=32 3.5 vs 5.2 ms. Whole sequences of one row: H=256 1.11x
# faster blocked, H=1024 (streamed) 0.91x; of two rows 1.27x and 1.00x.
BLOCKED_MIN_BATCH = 2
BLOCKED_MIN_BATCH_SHORT = 16
PANEL_CACHE_BYTES = 256 << 20  # panels of larger weights are made per call and not kept
def _threshold(fixed: int | None, key: str) -> int:
    if fixed is not None:
        return fixed
    from .calibration import thresholds

    return thresholds()[key]


class RecurrentMatmul:
    """``x @ weight (+ add)`` for a weight (in, out) that every time step reuses: packed once where possible."""

    def __init__(self, weight: Tensor, batch: int, steps: int, pack: bool | None = None):
        pack = PACK_WEIGHTS if pack is None else pack
        self.packed = None
        packable = weight.device.type == "cpu" and weight.dtype in _PACKABLE and steps >= PACK_MIN_STEPS
        if packable:  # thresholds only consulted when it could matter (the first one may calibrate)
            if weight.dtype == torch.bfloat16:
                packable = min(weight.shape) >= _threshold(PACK_BF16_MIN_SIZE, "bf16_min_size")
            else:
                packable = (min(weight.shape) >= _threshold(PACK_MIN_SIZE, "fp32_min_size")
                            and batch in PACK_FP32_BATCHES)
        if pack and packable and packing_works(weight.dtype):
            self.packed = pack_weight(weight, batch)
        # Unused when packed (no transposed copy then); else contiguous, for the faster non-transposed GEMM.
        self.weight = weight if self.packed is not None else weight.contiguous()

    def __call__(self, x: Tensor, add: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        if self.packed is not None:  # the packed ops have no out=
            result = packed_product(x, self.packed, add)
            return result if out is None else out.copy_(result)
        return torch.mm(x, self.weight, out=out) if add is None else torch.addmm(add, x, self.weight, out=out)


class _PanelCache:
    """The panels of the last few (W_mh, W_h) pairs, keyed by the weight tensors themselves (weak references: a
    dropped weight's entry goes, and its panels with it) and their version counters (an in-place change makes new
    panels)."""

    def __init__(self, size: int = 8):
        self.size = size
        self.entries: list[tuple[weakref.ref, weakref.ref, int, int, tuple[Tensor, Tensor]]] = []

    def get(self, w_mh: Tensor, w_h: Tensor) -> tuple[Tensor, Tensor] | None:
        for ref_mh, ref_h, version_mh, version_h, panels in self.entries:
            if ref_mh() is w_mh and ref_h() is w_h and version_mh == w_mh._version and version_h == w_h._version:
                return panels
        return None

    def put(self, w_mh: Tensor, w_h: Tensor, panels: tuple[Tensor, Tensor]) -> None:
        self._prune()
        others = [entry for entry in self.entries if not (entry[0]() is w_mh and entry[1]() is w_h)]
        refs = weakref.ref(w_mh, self._on_drop), weakref.ref(w_h, self._on_drop)
        self.entries = [(*refs, w_mh._version, w_h._version, panels), *others][: self.size]

    def _on_drop(self, _ref) -> None:  # a weight was freed
        self._prune()

    def _prune(self) -> None:
        self.entries = [entry for entry in self.entries if entry[0]() is not None and entry[1]() is not None]

    def clear(self) -> None:
        self.entries.clear()


panel_cache = _PanelCache()


def blocked_panels(ops, w_mh: Tensor, w_h: Tensor, batch: int, steps: int,
                   save: bool) -> tuple[Tensor, Tensor] | None:
    """The weights as the compiled loops' panels when the blocked products should run this call, else None.

    ``ops`` is the loaded extension (``torch.ops.bytezoo_mlstm_cpu``). Only for a forward that saves nothing for a
    backward (inference: in training the blocked forward measured slower, its coefficients being written 16 units at
    a time; streamed panels too: 1.02x at H=1024 on one thread, 0.93x on two), float32, H a multiple of 64 up to the
    measured limit, BLOCKED_MIN_BATCH to BLOCKED_MAX_BATCH rows (short calls from BLOCKED_MIN_BATCH_SHORT), and a
    build with AVX-512."""
    hidden = w_mh.shape[0]
    if not BLOCKED_PRODUCTS or save or w_mh.dtype != torch.float32 or w_h.dtype != torch.float32 or hidden % 64:
        return None
    if not BLOCKED_MIN_BATCH <= batch <= BLOCKED_MAX_BATCH:
        return None
    if steps < PACK_MIN_STEPS and batch < BLOCKED_MIN_BATCH_SHORT:
        return None
    if not ops.blocked_products_available():
        return None
    if hidden > _threshold(BLOCKED_MAX_SIZE, _for_thread_count("fp32_blocked_max_size")):
        return None
    # Tensors made under torch.inference_mode have no version counter, so an in-place change could not be seen:
    # their panels are made per call, never kept (the Featurizer's calls are long enough not to notice).
    cacheable = not (w_mh.is_inference() or w_h.is_inference()) and 5 * hidden * hidden * 4 <= PANEL_CACHE_BYTES
    panels = panel_cache.get(w_mh, w_h) if cacheable else None
    if panels is None and steps >= PACK_MIN_STEPS:
        panels = tuple(ops.blocked_panels(w_mh, w_h))
        if cacheable:
            panel_cache.put(w_mh, w_h, panels)
    return panels


def stream_panels(hidden: int) -> bool:
    """Whether the blocked products should read the panels of H = ``hidden`` as streamed from memory at every step
    (prefetching ahead) rather than kept in cache: from the calibrated (or fixed) size up."""
    return hidden >= _threshold(BLOCKED_STREAM_MIN_SIZE, _for_thread_count("fp32_blocked_stream_min_size"))


def _for_thread_count(key: str) -> str:
    """The calibration's key for one thread or, with more, its "_threads" twin (the blocked products rank
    differently there)."""
    return key if torch.get_num_threads() == 1 else f"{key}_threads"
