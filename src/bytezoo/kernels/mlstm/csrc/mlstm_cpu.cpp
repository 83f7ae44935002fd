// The fused mLSTM time loops for CPU, forward and backward, as ATen operators (torch.ops.bytezoo_mlstm_cpu.*).
//
// Why C++: per step the recurrence is two matrix products and a little pointwise math. In Python every step costs
// 7-9 ATen calls and as many passes over (B, 4H) blocks; here each step is the two products plus two fused passes
// (one of them tiny), with no Python, no dispatcher round trips for the pointwise work and no temporaries. The
// products go to oneDNN's packed kernels when the caller passes packed weights (as nn.LSTM's oneDNN path does), to
// this file's register-blocked AVX-512 kernels when it passes the weights' panels (fp32; the pointwise work then runs
// on each 64-column tile of the product; `stream_panels` when the weights do not stay in cache between steps, see
// panel_product), else to at::mm (MKL).
//
// Contract (inputs are validated by bytezoo.kernels.mlstm.interface; these checks only guard against misuse):
// batch-major (B, T, ...) contiguous tensors; "mm" = the inputs' and products' dtype (float32, bfloat16 or float64),
// "acc" = the state and pointwise dtype (float32, or float64 for float64). Gate order i, f, o, u. The backward algebra
// is the one documented in bytezoo/kernels/mlstm/common.py; the forward computes its coefficients while the gate
// values are in registers, instead of in separate passes afterwards.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

// The pointwise helpers must be inlined into their loops to vectorise; GCC stops inlining them into the larger
// blocked-product epilogues on its own (measured: scalar tanh calls, 1.7x slower steps), so it is forced.
#define BYTEZOO_INLINE inline __attribute__((always_inline))

// tanh and sigmoid that the compiler can vectorise: libm's tanhf/expf are opaque scalar calls, which cost more than
// the step's matrix product at small H. float: Eigen's rational approximation of tanh (a degree-13/6 odd rational
// function on [-7.9, 7.9], where tanh is +-1 to float precision beyond; a few ulp); double keeps libm (gradcheck).
BYTEZOO_INLINE float tanh_approx(float x) {
  constexpr float kLimit = 7.90531110763549805f;
  const float clamped = x < -kLimit ? -kLimit : (x > kLimit ? kLimit : x);  // NaN stays NaN
  const float x2 = clamped * clamped;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return clamped * p / q;
}
BYTEZOO_INLINE double tanh_approx(double x) { return std::tanh(x); }

template <typename T>
BYTEZOO_INLINE T sigmoid(T x) {
  return T(0.5) * tanh_approx(T(0.5) * x) + T(0.5);  // exact identity; no exp overflow for large |x|
}

// The pointwise work of one batch row, as __restrict functions so the compiler vectorises them (inside the big loops
// it would have to assume that the pointers alias).

#if defined(__AVX512F__)
#include <immintrin.h>
// 16 lanes of tanh_approx(float): the same rational function, with the division as a reciprocal estimate refined by
// one Newton step (vdivps was ~15% of a step at H=256: five divisions per unit; this costs a fifth of that and
// stays within the same bound of tanh, checked on 2M points). NaN propagates: max/min return their second operand
// when either is NaN, and x is passed second.
BYTEZOO_INLINE __m512 tanh16(__m512 x) {
  const __m512 limit = _mm512_set1_ps(7.90531110763549805f);
  const __m512 clamped = _mm512_min_ps(limit, _mm512_max_ps(_mm512_set1_ps(-7.90531110763549805f), x));
  const __m512 x2 = _mm512_mul_ps(clamped, clamped);
  __m512 p = _mm512_set1_ps(-2.76076847742355e-16f);
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.00018790482477e-13f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-8.60467152213735e-11f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(5.12229709037114e-08f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1.48572235717979e-05f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(6.37261928875436e-04f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(4.89352455891786e-03f));
  __m512 q = _mm512_set1_ps(1.19825839466702e-06f);
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(1.18534705686654e-04f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(2.26843463243900e-03f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(4.89352518554385e-03f));
  __m512 r = _mm512_rcp14_ps(q);                                          // q >= 4.9e-3: no zero, no overflow
  r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(1.0f)), r);  // r += r (1 - q r)
  return _mm512_mul_ps(_mm512_mul_ps(clamped, p), r);
}
BYTEZOO_INLINE __m512 sigmoid16(__m512 x) {
  const __m512 half = _mm512_set1_ps(0.5f);
  return _mm512_fmadd_ps(half, tanh16(_mm512_mul_ps(half, x)), half);
}

// One step's gate math for 16 units (the vector form of gate_row's loop body): from the four pre-activations and
// the previous cell, the gates, the new cell c and h = o tanh(c).
struct Gates16 {
  __m512 i, f, o, u, c_prev, c, tanh_c, h;
};
BYTEZOO_INLINE Gates16 gates16(__m512 pre_i, __m512 pre_f, __m512 pre_o, __m512 pre_u, __m512 c_prev) {
  Gates16 g;
  g.i = sigmoid16(pre_i), g.f = sigmoid16(pre_f), g.o = sigmoid16(pre_o), g.u = tanh16(pre_u);
  g.c_prev = c_prev;
  g.c = _mm512_fmadd_ps(g.f, c_prev, _mm512_mul_ps(g.i, g.u));
  g.tanh_c = tanh16(g.c);
  g.h = _mm512_mul_ps(g.o, g.tanh_c);
  return g;
}

// The backward's coefficients of 16 units (gate_row's kSave part): P's four gates `p_stride` apart, K and FK.
BYTEZOO_INLINE void store_coefficients16(const Gates16& g, float keep, float* p, int64_t p_stride, float* k,
                                         float* fk) {
  const __m512 one = _mm512_set1_ps(1.0f);
  _mm512_storeu_ps(p, _mm512_mul_ps(_mm512_mul_ps(g.u, g.i), _mm512_sub_ps(one, g.i)));
  _mm512_storeu_ps(p + p_stride, _mm512_mul_ps(_mm512_mul_ps(g.c_prev, g.f), _mm512_sub_ps(one, g.f)));
  _mm512_storeu_ps(p + 2 * p_stride, _mm512_mul_ps(_mm512_mul_ps(g.tanh_c, g.o), _mm512_sub_ps(one, g.o)));
  _mm512_storeu_ps(p + 3 * p_stride, _mm512_mul_ps(g.i, _mm512_fnmadd_ps(g.u, g.u, one)));
  _mm512_storeu_ps(k, _mm512_mul_ps(g.o, _mm512_fnmadd_ps(g.tanh_c, g.tanh_c, one)));
  _mm512_storeu_ps(fk, _mm512_mul_ps(g.f, _mm512_set1_ps(keep)));
}

// gate_row for float, 16 units at a time (width a multiple of 16).
template <bool kSave>
BYTEZOO_INLINE void gate_row_avx512(int64_t width, const float* __restrict z, int64_t z_stride,
                                    const float* __restrict gx, int64_t gx_stride, const float* __restrict c_in,
                                    float keep, float* __restrict h_new, float* __restrict c_new, float* __restrict p,
                                    int64_t p_stride, float* __restrict k, float* __restrict fk) {
  for (int64_t j = 0; j < width; j += 16) {
    const auto pre = [&](int g) {
      return _mm512_add_ps(_mm512_loadu_ps(z + g * z_stride + j), _mm512_loadu_ps(gx + g * gx_stride + j));
    };
    const Gates16 g = gates16(pre(0), pre(1), pre(2), pre(3), _mm512_loadu_ps(c_in + j));
    _mm512_storeu_ps(c_new + j, g.c);
    _mm512_storeu_ps(h_new + j, g.h);
    if constexpr (kSave) store_coefficients16(g, keep, p + j, p_stride, k + j, fk + j);
  }
}
#endif

// A forward step's gates for `width` hidden units from z = m @ W_h plus gates_x, and the new state; with kSave also
// the backward coefficients P (4 gates), K and FK, while the gate values are at hand. Gate g of unit j sits at
// z[g * z_stride + j], gx[g * gx_stride + j] and p[g * p_stride + j] (the whole row: strides H; one panel of the
// blocked product: its 16 units per gate side by side in z).
template <bool kSave, typename mm_t, typename acc_t>
BYTEZOO_INLINE void gate_row(int64_t width, const mm_t* __restrict z, int64_t z_stride, const mm_t* __restrict gx,
                     int64_t gx_stride, const acc_t* __restrict c_in, acc_t keep, acc_t* __restrict h_new,
                     acc_t* __restrict c_new, acc_t* __restrict p, int64_t p_stride, acc_t* __restrict k,
                     acc_t* __restrict fk) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<mm_t, float> && std::is_same_v<acc_t, float>) {
    if (width % 16 == 0)
      return gate_row_avx512<kSave>(width, z, z_stride, gx, gx_stride, c_in, keep, h_new, c_new, p, p_stride, k, fk);
  }
#endif
#pragma GCC ivdep
  for (int64_t j = 0; j < width; ++j) {
    const acc_t i = sigmoid<acc_t>(static_cast<acc_t>(z[j]) + static_cast<acc_t>(gx[j]));
    const acc_t f = sigmoid<acc_t>(static_cast<acc_t>(z[z_stride + j]) + static_cast<acc_t>(gx[gx_stride + j]));
    const acc_t o = sigmoid<acc_t>(static_cast<acc_t>(z[2 * z_stride + j]) + static_cast<acc_t>(gx[2 * gx_stride + j]));
    const acc_t u = tanh_approx(static_cast<acc_t>(z[3 * z_stride + j]) + static_cast<acc_t>(gx[3 * gx_stride + j]));
    const acc_t c = f * c_in[j] + i * u;
    const acc_t tanh_c = tanh_approx(c);
    c_new[j] = c;
    h_new[j] = o * tanh_c;
    if constexpr (kSave) {
      p[j] = u * i * (acc_t(1) - i);                      // dz_i / dc_t
      p[p_stride + j] = c_in[j] * f * (acc_t(1) - f);     // dz_f / dc_t
      p[2 * p_stride + j] = tanh_c * o * (acc_t(1) - o);  // dz_o / dh_t
      p[3 * p_stride + j] = i * (acc_t(1) - u * u);       // dz_u / dc_t
      k[j] = o * (acc_t(1) - tanh_c * tanh_c);            // dh_t / dc_t
      fk[j] = f * keep;                                   // dc_t / dc_{t-1}
    }
  }
}

// The step's outputs (hs[b, t], cs[b, t]) and the next step's input state after its reset, in place of this step's
// (row b of the input state is no longer read once the step's products are done).
template <typename mm_t, typename acc_t>
BYTEZOO_INLINE void finish_row(int64_t hidden, const acc_t* __restrict h, const acc_t* __restrict c, acc_t keep_next,
                       mm_t* __restrict hs, mm_t* __restrict cs, acc_t* __restrict h_in, acc_t* __restrict c_in,
                       mm_t* __restrict h_in_mm) {
#pragma GCC ivdep
  for (int64_t j = 0; j < hidden; ++j) {
    hs[j] = static_cast<mm_t>(h[j]);
    h_in[j] = h[j] * keep_next;
    c_in[j] = c[j] * keep_next;
  }
  if (cs != nullptr) std::transform(c, c + hidden, cs, [](acc_t v) { return static_cast<mm_t>(v); });
  if (h_in_mm != nullptr) std::transform(h_in, h_in + hidden, h_in_mm, [](acc_t v) { return static_cast<mm_t>(v); });
}

// m = a * mult_x (and a kept for the backward when `saved` is given).
template <typename mm_t, typename acc_t>
BYTEZOO_INLINE void multiply_row(int64_t hidden, const mm_t* __restrict a, const mm_t* __restrict mx,
                                 mm_t* __restrict m, mm_t* __restrict saved) {
#pragma GCC ivdep
  for (int64_t j = 0; j < hidden; ++j) m[j] = static_cast<mm_t>(static_cast<acc_t>(a[j]) * static_cast<acc_t>(mx[j]));
  if (saved != nullptr) std::copy_n(a, hidden, saved);
}

// A backward step: the totals dL/dh_t and dL/dc_t, dz (4H, written to the output and to the product's input), and
// what passes on to step t-1. `product`, `d_hs` and `d_cs` point at zeros when absent, so the loop has no branches.
template <typename mm_t, typename acc_t>
inline void gate_grad_row(int64_t hidden, const acc_t* __restrict p, const acc_t* __restrict k,
                          const acc_t* __restrict fk, const mm_t* __restrict product, const mm_t* __restrict d_hs,
                          const mm_t* __restrict d_cs, acc_t pass, acc_t* __restrict carried,
                          acc_t* __restrict grad_c, mm_t* __restrict dz, mm_t* __restrict dz_step) {
#pragma GCC ivdep
  for (int64_t j = 0; j < hidden; ++j) {
    const acc_t g_h = carried[j] + static_cast<acc_t>(product[j]) + static_cast<acc_t>(d_hs[j]);  // dL/dh_t
    const acc_t g_ct = grad_c[j] + static_cast<acc_t>(d_cs[j]) + g_h * k[j];                       // dL/dc_t
    const mm_t dz_i = static_cast<mm_t>(p[j] * g_ct);
    const mm_t dz_f = static_cast<mm_t>(p[hidden + j] * g_ct);
    const mm_t dz_o = static_cast<mm_t>(p[2 * hidden + j] * g_h);  // the output gate sees dL/dh directly
    const mm_t dz_u = static_cast<mm_t>(p[3 * hidden + j] * g_ct);
    dz[j] = dz_step[j] = dz_i;
    dz[hidden + j] = dz_step[hidden + j] = dz_f;
    dz[2 * hidden + j] = dz_step[2 * hidden + j] = dz_o;
    dz[3 * hidden + j] = dz_step[3 * hidden + j] = dz_u;
    grad_c[j] = g_ct * fk[j];
    carried[j] = g_h * pass;  // held rows hand dL/dh on unchanged (times keep); others through the product only
  }
}

// From dm = dz @ W_h^T: dL/dmult_x = dm * a, da = dm * mult_x * keep (the next product's input, and dW_mh's), and
// m = a * mult_x again for dW_h (cheaper than keeping it from the forward).
template <typename mm_t, typename acc_t>
inline void mult_grad_row(int64_t hidden, const mm_t* __restrict dm, const mm_t* __restrict mx,
                          const mm_t* __restrict a, acc_t keep, mm_t* __restrict d_mx, mm_t* __restrict da,
                          mm_t* __restrict da_step, mm_t* __restrict m) {
#pragma GCC ivdep
  for (int64_t j = 0; j < hidden; ++j) {
    const acc_t dm_j = static_cast<acc_t>(dm[j]), mx_j = static_cast<acc_t>(mx[j]), a_j = static_cast<acc_t>(a[j]);
    d_mx[j] = static_cast<mm_t>(dm_j * a_j);
    da[j] = da_step[j] = static_cast<mm_t>(dm_j * mx_j * keep);
    m[j] = static_cast<mm_t>(a_j * mx_j);
  }
}

// `x @ weight` for a weight that every time step reuses. `packed` (optional) is the weight in oneDNN's blocked
// layout (mkldnn::_reorder_linear_weight, what bytezoo.kernels.mlstm.packing.RecurrentMatmul packs); oneDNN's op has
// no out= variant, so it returns a fresh tensor, while the at::mm path writes into `buffer`.
struct RecurrentMatmul {
  at::Tensor weight;  // (in, out)
  std::optional<at::Tensor> packed;

  at::Tensor operator()(const at::Tensor& x, at::Tensor& buffer) const {
    if (!packed.has_value()) {
      at::mm_out(buffer, x, weight);
      return buffer;
    }
    // Boxed call: it goes by the operator's schema, so there is no C++ signature of a private op to keep in step.
    static const c10::OperatorHandle op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    torch::jit::Stack stack;
    stack.reserve(6);
    stack.emplace_back(x);
    stack.emplace_back(*packed);
    stack.emplace_back(c10::IValue());  // no bias
    stack.emplace_back(std::string("none"));
    stack.emplace_back(c10::List<std::optional<at::Scalar>>());
    stack.emplace_back(std::string(""));
    op.callBoxed(&stack);
    return stack[0].toTensor();
  }
};

// The step's two products, register-blocked for fp32 with the pointwise work fused in (AVX-512 builds only).
//
// Why: at small H a step is two small GEMMs ([B x H] @ [H x H], [B x H] @ [H x 4H]) and two pointwise passes over
// the (B, H) and (B, 4H) results. Library GEMMs at these shapes ran at 55-65% of the core's FMA peak (232 GFLOP/s
// fp32 on one core of the Intel Xeon measured), the step then writes z to memory and reads it back, and each call
// pays the library's and the dispatcher's entry costs (whole-sequence inference at H=256, B=32: 0.79-0.80x nn.LSTM on
// one thread; 0.85-0.91x with this). Here a weight is stored as panels of 64 columns
// (K, 64), one panel's product for all batch rows lands in a small scratch tile that stays in L1, and the pointwise
// pass for those 64 columns runs on the tile right away. W_h's panels interleave the gates: panel p holds units
// 16p..16p+15 of each of i, f, o, u, so a tile has all four gates of its 16 units and the state update needs nothing
// else.
constexpr int64_t kPanelColumns = 64;  // four 16-float registers per batch row
constexpr int64_t kPanelUnits = kPanelColumns / 4;
// Panel rows per pass over the batch. Weights that stay in L2 between steps: 128 rows (32 KB, kept in L1 while every
// batch row uses them; 256 measured 2-5% slower at H=256). Weights streamed from L3/memory at every step: 64 rows,
// the next slice software-prefetched while this one is used (below).
constexpr int64_t kResidentDepth = 128;
constexpr int64_t kStreamedDepth = 64;
constexpr int kBlockRows = 6;          // batch rows per micro-kernel: 24 accumulators + 4 panel rows + a broadcast

#if defined(__AVX512F__)
constexpr bool kBlockedAvailable = true;

// tile[r, 0:64] (+)= x[r, 0:depth] @ panel[0:depth, 0:64] for R batch rows; x rows are `x_stride` apart.
template <int R>
inline void panel_kernel(const float* __restrict x, int64_t x_stride, const float* __restrict panel, int64_t depth,
                         float* __restrict tile, bool accumulate) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < 4; ++g)
      acc[r][g] = accumulate ? _mm512_loadu_ps(tile + r * kPanelColumns + 16 * g) : _mm512_setzero_ps();
  for (int64_t k = 0; k < depth; ++k) {
    const float* w = panel + k * kPanelColumns;
    const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16), w2 = _mm512_loadu_ps(w + 32),
                 w3 = _mm512_loadu_ps(w + 48);
    for (int r = 0; r < R; ++r) {
      const __m512 v = _mm512_set1_ps(x[r * x_stride + k]);
      acc[r][0] = _mm512_fmadd_ps(v, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(v, w1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(v, w2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(v, w3, acc[r][3]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < 4; ++g) _mm512_storeu_ps(tile + r * kPanelColumns + 16 * g, acc[r][g]);
}

template <int R>
inline void panel_rows_tail(int64_t rows, const float* x, int64_t x_stride, const float* panel, int64_t depth,
                            float* tile, bool accumulate) {
  if constexpr (R > 0) {
    if (rows == R) return panel_kernel<R>(x, x_stride, panel, depth, tile, accumulate);
    panel_rows_tail<R - 1>(rows, x, x_stride, panel, depth, tile, accumulate);
  }
}

// Batch rows for the next micro-kernel call when `left` rows remain: 6, but no last call under 4 rows where that can
// be helped (1-3 rows hold too few accumulators to hide the FMA latency): 32 rows go 6,6,6,6,4,4; 13 go 6,4,3.
inline int64_t group_rows(int64_t left) {
  return left <= kBlockRows ? left : (left < 2 * kBlockRows - 2 ? left - left / 2 : kBlockRows);
}

// tile (batch, 64) = x (batch, depth) @ panel (depth, 64), the panel read in slices so that each slice serves every
// batch row while it is in L1. `streamed`: the weights do not stay in cache between steps (they are read from L3 or
// memory once per step), so 64-row slices, and while the batch works through one slice the next one is prefetched
// into L2, a share of its lines before each micro-kernel call (H=1024, B=64, one thread: 1.06-1.22x faster than
// without; at H=256, whose weights stay in L2, 4% slower: the calibration in kernels/mlstm decides which).
inline void panel_product(const float* x, int64_t batch, int64_t depth, const float* panel, float* tile,
                          bool streamed) {
  const int64_t slice_rows = streamed ? kStreamedDepth : kResidentDepth;
  int64_t groups = 0;
  for (int64_t r = 0; r < batch; r += group_rows(batch - r)) ++groups;
  for (int64_t k0 = 0; k0 < depth; k0 += slice_rows) {
    const int64_t slice = std::min(slice_rows, depth - k0);
    // The next slice (of this panel, or the next panel's first: panels are contiguous); past the last panel's end a
    // prefetch touches nothing (it never faults).
    const char* next = reinterpret_cast<const char*>(panel + (k0 + slice) * kPanelColumns);
    const int64_t lines = streamed ? slice_rows * kPanelColumns * int64_t(sizeof(float)) / 64 : 0;
    const int64_t lines_per_group = (lines + groups - 1) / std::max<int64_t>(groups, 1);
    int64_t line = 0;
    for (int64_t r = 0; r < batch;) {
      for (const int64_t end = std::min(lines, line + lines_per_group); line < end; ++line)
        _mm_prefetch(next + 64 * line, _MM_HINT_T1);
      const int64_t rows = group_rows(batch - r);
      panel_rows_tail<kBlockRows>(rows, x + r * depth + k0, depth, panel + k0 * kPanelColumns, slice,
                                  tile + r * kPanelColumns, k0 > 0);
      r += rows;
    }
  }
}

// The blocked products' epilogues, on one batch row's tile while it is in registers/L1.

// m = a * mult_x for 64 columns (a = the tile row), and a kept for the backward when `saved` is given.
BYTEZOO_INLINE void multiply_tile(const float* __restrict a, const float* __restrict mx, float* __restrict m,
                                  float* __restrict saved) {
  for (int64_t j = 0; j < kPanelColumns; j += 16) {
    const __m512 product = _mm512_loadu_ps(a + j);
    _mm512_storeu_ps(m + j, _mm512_mul_ps(product, _mm512_loadu_ps(mx + j)));
    if (saved != nullptr) _mm512_storeu_ps(saved + j, product);
  }
}

// Where a row's 16 units go: the state (h_new, c_new: null but at the last step; h_in/c_in replaced by the next
// step's input state), the outputs hs[b, t] (and cs), and with kSave the backward's coefficients (P's four gates H
// apart).
struct GateTileOutputs {
  float *h_new, *c_new, *hs, *cs, *h_in, *c_in, *p, *k, *fk;
};

// gate_row + finish_row for the 16 units of a W_h panel, the state kept in registers between them. z: the tile row,
// gates 16 apart; gx: the row's gate inputs, gates `gx_stride` (= H) apart.
template <bool kSave>
BYTEZOO_INLINE void gate_tile(const float* __restrict z, const float* __restrict gx, int64_t gx_stride, float keep,
                              float keep_next, const GateTileOutputs& out) {
  const auto pre = [&](int g) {
    return _mm512_add_ps(_mm512_loadu_ps(z + 16 * g), _mm512_loadu_ps(gx + g * gx_stride));
  };
  const Gates16 g = gates16(pre(0), pre(1), pre(2), pre(3), _mm512_loadu_ps(out.c_in));
  const __m512 next = _mm512_set1_ps(keep_next);
  if (out.h_new != nullptr) {  // the final state: written at the last step only
    _mm512_storeu_ps(out.h_new, g.h);
    _mm512_storeu_ps(out.c_new, g.c);
  }
  _mm512_storeu_ps(out.hs, g.h);
  if (out.cs != nullptr) _mm512_storeu_ps(out.cs, g.c);
  _mm512_storeu_ps(out.h_in, _mm512_mul_ps(g.h, next));
  _mm512_storeu_ps(out.c_in, _mm512_mul_ps(g.c, next));
  if constexpr (kSave) store_coefficients16(g, keep, out.p, gx_stride, out.k, out.fk);
}

// For each panel p (in parallel over panels): tile = x (batch, depth) @ panels[p], then epilogue(p, tile) with the
// tile (batch, 64) in a per-thread buffer. A task gets at least ~256K multiply-adds, so a small step stays on one
// thread instead of paying a fork and join.
template <typename Epilogue>
inline void blocked_product(const float* x, int64_t batch, int64_t depth, const at::Tensor& panels, bool streamed,
                            const Epilogue& epilogue) {
  const int64_t count = panels.size(0);
  const float* base = panels.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(batch * depth * kPanelColumns, 1));
  at::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> tile;
    tile.resize(static_cast<size_t>(batch * kPanelColumns));
    for (int64_t p = begin; p < end; ++p) {
      panel_product(x, batch, depth, base + p * depth * kPanelColumns, tile.data(), streamed);
      epilogue(p, tile.data());
    }
  });
}
#else
constexpr bool kBlockedAvailable = false;
#endif

bool blocked_products_available() { return kBlockedAvailable; }

// The weights in the blocked products' layout (what the blocked_panels operator returns and forward takes):
// W_mh (H, H) as (H/64, H, 64) panels of consecutive columns; W_h (H, 4H), columns gate-major (i, f, o, u), as
// (H/16, H, 64) panels whose column 16g + j is gate g of unit 16p + j.
std::vector<at::Tensor> blocked_panels(const at::Tensor& w_mh, const at::Tensor& w_h) {
  const int64_t hidden = w_mh.size(0);
  TORCH_CHECK(blocked_products_available(), "bytezoo_mlstm_cpu: the blocked products need an AVX-512 build");
  TORCH_CHECK(w_mh.scalar_type() == at::kFloat && w_h.scalar_type() == at::kFloat && hidden % kPanelColumns == 0 &&
                  w_mh.sizes() == at::IntArrayRef({hidden, hidden}) &&
                  w_h.sizes() == at::IntArrayRef({hidden, 4 * hidden}),
              "bytezoo_mlstm_cpu: blocked panels need float32 (H, H) and (H, 4H) weights with H a multiple of 64");
  return {w_mh.reshape({hidden, hidden / kPanelColumns, kPanelColumns}).permute({1, 0, 2}).contiguous(),
          w_h.reshape({hidden, 4, hidden / kPanelUnits, kPanelUnits})
              .permute({2, 0, 1, 3})
              .contiguous()
              .view({hidden / kPanelUnits, hidden, kPanelColumns})};
}

// Which row of gates_x / mult_x step t of sequence b reads: (b, t) itself for (B, T, ...) inputs, or the token's row
// of a (V, ...) table when input ids are given (a byte model's first layer: no (B, T, 4H) gather materialised).
struct InputRows {
  const int64_t* ids;  // (B, T) or null
  int64_t steps;
  int64_t operator()(int64_t b, int64_t t) const { return ids ? ids[b * steps + t] : b * steps + t; }
};

// Recycles the large (B, T, ...) buffers between calls. A fresh multi-megabyte allocation comes from mmap as
// untouched pages, and first-touching them cost about as much as a quarter of a training step's pointwise and
// coefficient work (H=1024, B=64, T=64: ~40 ms of faults for the forward's 134 MB of saved coefficients). A buffer
// is handed out again only when nothing else references its storage any more (the autograd graph that saved it was
// freed, the caller dropped the output). Buffers not reused during the last few calls are released, so the cache
// holds about one training step's working set; empty_cache() releases everything.
class BufferPool {
 public:
  static BufferPool& instance() {
    static BufferPool pool;
    return pool;
  }

  at::Tensor take(at::IntArrayRef sizes, const at::TensorOptions& options) {
    const int64_t numel = c10::multiply_integers(sizes);
    const int64_t bytes = numel * static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
    if (bytes < kMinBytes) return at::empty(sizes, options);
    std::lock_guard<std::mutex> guard(mutex_);
    for (Entry& entry : entries_) {
      const at::Tensor& owner = entry.owner;
      const bool idle = owner.use_count() == 1 && owner.storage().use_count() == 1;
      // Exact sizes only: a handed-out tensor's storage is never larger than the tensor (torch.save writes storages).
      if (idle && owner.dtype() == options.dtype() && owner.numel() == numel) {
        entry.last_call = calls_;
        return owner.view(sizes);
      }
    }
    at::Tensor owner = at::empty({numel}, options);
    entries_.push_back({owner, calls_});
    return owner.view(sizes);
  }

  // Called once per operator call: drops idle buffers that the last kKeepCalls calls did not use.
  void next_call() {
    std::lock_guard<std::mutex> guard(mutex_);
    ++calls_;
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                  [&](const Entry& entry) {
                                    const bool idle = entry.owner.use_count() == 1 && entry.owner.storage().use_count() == 1;
                                    return idle && calls_ - entry.last_call > kKeepCalls;
                                  }),
                   entries_.end());
  }

  void clear() {
    std::lock_guard<std::mutex> guard(mutex_);
    entries_.clear();  // buffers still in use stay alive with their users
  }

 private:
  struct Entry {
    at::Tensor owner;  // flat
    int64_t last_call;
  };
  static constexpr int64_t kMinBytes = 1 << 20;
  static constexpr int64_t kKeepCalls = 4;  // forward and backward of the last two training steps
  std::mutex mutex_;
  std::vector<Entry> entries_;
  int64_t calls_ = 0;
};

inline at::Tensor large_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return BufferPool::instance().take(sizes, options);
}

// Runs fn(row_begin, row_end) over the batch rows, in parallel only when a step has enough work to pay for a fork and
// join per step (a pass is a few microseconds of work at H=256, B=32).
constexpr int64_t kParallelElements = 65536;
template <typename Fn>
inline void for_rows(int64_t batch, int64_t width, const Fn& fn) {
  const int64_t grain = std::max<int64_t>(1, kParallelElements / std::max<int64_t>(width, 1));
  at::parallel_for(0, batch, grain, fn);
}

void check(bool condition, const char* message) { TORCH_CHECK(condition, "bytezoo_mlstm_cpu: ", message); }

// Batch-major throughout: the inputs, outputs and saved tensors are (B, T, ...) as the model has them (no transposed
// copies); a step touches row b's slice [b, t] of each, and the products read and write contiguous (B, ...) buffers.
template <typename mm_t, typename acc_t>
std::vector<at::Tensor> forward_impl(const at::Tensor& gates_x, const at::Tensor& mult_x, const RecurrentMatmul& state_matmul,
                                     const RecurrentMatmul& mult_matmul, const at::Tensor& h0, const at::Tensor& c0,
                                     const std::optional<at::Tensor>& keep, const std::optional<at::Tensor>& held,
                                     const std::optional<at::Tensor>& input_ids, bool save, bool return_cells,
                                     const std::optional<at::Tensor>& w_mh_panels,
                                     const std::optional<at::Tensor>& w_h_panels, bool stream_panels) {
  const int64_t batch = h0.size(0), hidden = h0.size(1);
  const int64_t steps = input_ids.has_value() ? input_ids->size(1) : gates_x.size(1);
  const auto acc_options = h0.options();
  const auto mm_options = gates_x.options();
  constexpr bool same_dtype = std::is_same_v<mm_t, acc_t>;

  at::Tensor hs = large_buffer({batch, steps, hidden}, mm_options);
  at::Tensor cs = return_cells ? large_buffer({batch, steps, hidden}, mm_options) : at::empty({0}, mm_options);
  // The state the current step reads (after its reset), updated row by row in place; in the products' dtype too.
  at::Tensor h_in = h0.clone(), c_in = c0.clone();
  at::Tensor h_in_mm = same_dtype ? h_in : at::empty({batch, hidden}, mm_options);
  at::Tensor h_new = at::empty({batch, hidden}, acc_options), c_new = at::empty({batch, hidden}, acc_options);
  at::Tensor mult = at::empty({batch, hidden}, mm_options);  // m = a * mult_x
  at::Tensor a_buffer = at::empty({batch, hidden}, mm_options);
  at::Tensor z_buffer = at::empty({batch, 4 * hidden}, mm_options);
  at::Tensor products, gate_coef, cell_coef, carry_coef;
  if (save) {
    products = large_buffer({batch, steps, hidden}, mm_options);  // a = h_in @ W_mh
    gate_coef = large_buffer({batch, steps, 4 * hidden}, acc_options);
    cell_coef = large_buffer({batch, steps, hidden}, acc_options);
    carry_coef = large_buffer({batch, steps, hidden}, acc_options);
  }

  const mm_t* gx = gates_x.data_ptr<mm_t>();
  const mm_t* mx = mult_x.data_ptr<mm_t>();
  const InputRows rows{input_ids.has_value() ? input_ids->data_ptr<int64_t>() : nullptr, steps};
  const acc_t* keep_ptr = keep.has_value() ? keep->data_ptr<acc_t>() : nullptr;  // (B, T)
  const bool* held_ptr = held.has_value() ? held->data_ptr<bool>() : nullptr;     // (B, T)
  acc_t* h_in_ptr = h_in.data_ptr<acc_t>();
  acc_t* c_in_ptr = c_in.data_ptr<acc_t>();
  acc_t* h_new_ptr = h_new.data_ptr<acc_t>();
  acc_t* c_new_ptr = c_new.data_ptr<acc_t>();
  mm_t* h_in_mm_ptr = same_dtype ? nullptr : h_in_mm.data_ptr<mm_t>();
  mm_t* m_ptr = mult.data_ptr<mm_t>();
  mm_t* hs_ptr = hs.data_ptr<mm_t>();
  mm_t* cs_ptr = return_cells ? cs.data_ptr<mm_t>() : nullptr;
  mm_t* products_ptr = save ? products.data_ptr<mm_t>() : nullptr;
  acc_t* gate_coef_ptr = save ? gate_coef.data_ptr<acc_t>() : nullptr;
  acc_t* cell_coef_ptr = save ? cell_coef.data_ptr<acc_t>() : nullptr;
  acc_t* carry_coef_ptr = save ? carry_coef.data_ptr<acc_t>() : nullptr;
  const auto at_bt = [&](int64_t b, int64_t t, int64_t width) { return (b * steps + t) * width; };

  // Step 0's input state: the initial state after step 0's reset.
  for (int64_t b = 0; b < batch; ++b) {
    const acc_t keep0 = keep_ptr ? keep_ptr[b * steps] : acc_t(1);
    for (int64_t j = b * hidden; j < (b + 1) * hidden; ++j) {
      h_in_ptr[j] *= keep0;
      c_in_ptr[j] *= keep0;
      if (h_in_mm_ptr) h_in_mm_ptr[j] = static_cast<mm_t>(h_in_ptr[j]);
    }
  }
  const at::Tensor h_in_0 = save ? h_in.clone() : at::Tensor();
  // The backward's dW_mh also needs every step's input state h_in; it is hs shifted by one step (times the reset
  // mask), so it is not stored: the caller keeps hs and step 0's input state, returned here.
  const auto finish_forward = [&]() {
    std::vector<at::Tensor> result{hs, cs, h_new, c_new};
    if (save) {
      for (const at::Tensor& tensor : {products, gate_coef, cell_coef, carry_coef, h_in_0}) result.push_back(tensor);
    }
    return result;
  };

  // The pointwise work of step t for batch row b on a slice of the columns, shared by both ways of running the
  // products. multiply: m[b, j0:j0+width] = a * mult_x (a given for the slice); gates: units u0..u0+width from z (the
  // slice's gate g at z + g * z_stride), then the outputs and the next step's input state of those units.
  const auto multiply = [&](int64_t t, int64_t b, int64_t j0, int64_t width, const mm_t* a) {
    multiply_row<mm_t, acc_t>(width, a, mx + rows(b, t) * hidden + j0, m_ptr + b * hidden + j0,
                              save ? products_ptr + at_bt(b, t, hidden) + j0 : nullptr);
  };
  const auto gates = [&](int64_t t, int64_t b, int64_t u0, int64_t width, const mm_t* z, int64_t z_stride) {
    const acc_t keep_t = keep_ptr ? keep_ptr[b * steps + t] : acc_t(1);
    const int64_t at = b * hidden + u0;
    acc_t* p = save ? gate_coef_ptr + at_bt(b, t, 4 * hidden) + u0 : nullptr;
    acc_t* k = save ? cell_coef_ptr + at_bt(b, t, hidden) + u0 : nullptr;
    acc_t* fk = save ? carry_coef_ptr + at_bt(b, t, hidden) + u0 : nullptr;
    if (held_ptr && held_ptr[b * steps + t]) {  // padding: the state passes through, no gradient into the gates
      std::copy_n(h_in_ptr + at, width, h_new_ptr + at);
      std::copy_n(c_in_ptr + at, width, c_new_ptr + at);
      if (save) {
        for (int64_t g = 0; g < 4; ++g) std::fill_n(p + g * hidden, width, acc_t(0));
        std::fill_n(k, width, acc_t(0));
        std::fill_n(fk, width, keep_t);
      }
    } else if (save) {
      gate_row<true>(width, z, z_stride, gx + rows(b, t) * 4 * hidden + u0, hidden, c_in_ptr + at, keep_t,
                     h_new_ptr + at, c_new_ptr + at, p, hidden, k, fk);
    } else {
      gate_row<false, mm_t, acc_t>(width, z, z_stride, gx + rows(b, t) * 4 * hidden + u0, hidden, c_in_ptr + at,
                                   keep_t, h_new_ptr + at, c_new_ptr + at, nullptr, hidden, nullptr, nullptr);
    }
    const acc_t keep_next = (keep_ptr && t + 1 < steps) ? keep_ptr[b * steps + t + 1] : acc_t(1);
    finish_row<mm_t, acc_t>(width, h_new_ptr + at, c_new_ptr + at, keep_next,
                            hs_ptr + at_bt(b, t, hidden) + u0, cs_ptr ? cs_ptr + at_bt(b, t, hidden) + u0 : nullptr,
                            h_in_ptr + at,
                            c_in_ptr + at, h_in_mm_ptr ? h_in_mm_ptr + at : nullptr);
  };

#if defined(__AVX512F__)  // without it mlstm_forward refuses panels
  if constexpr (std::is_same_v<mm_t, float> && std::is_same_v<acc_t, float>) {
    if (w_mh_panels.has_value()) {
      for (int64_t t = 0; t < steps; ++t) {
        // a = h_in @ W_mh, 64 columns at a time, each tile turned into m = a * mult_x[:, t] while in cache.
        blocked_product(h_in_ptr, batch, hidden, *w_mh_panels, stream_panels, [&](int64_t panel, const float* tile) {
          const int64_t j0 = panel * kPanelColumns;
          for (int64_t b = 0; b < batch; ++b)
            multiply_tile(tile + b * kPanelColumns, mx + rows(b, t) * hidden + j0, m_ptr + b * hidden + j0,
                          save ? products_ptr + at_bt(b, t, hidden) + j0 : nullptr);
        });
        // z = m @ W_h, 16 units (all four gates) at a time, each tile turned into those units' new state.
        blocked_product(m_ptr, batch, hidden, *w_h_panels, stream_panels, [&](int64_t panel, const float* tile) {
          const int64_t u0 = panel * kPanelUnits;
          for (int64_t b = 0; b < batch; ++b) {
            const float* z = tile + b * kPanelColumns;
            if (held_ptr && held_ptr[b * steps + t]) {
              gates(t, b, u0, kPanelUnits, z, kPanelUnits);
              continue;
            }
            const int64_t at = b * hidden + u0, out = at_bt(b, t, hidden) + u0;
            const bool last = t + 1 == steps;
            const GateTileOutputs outputs{
                last ? h_new_ptr + at : nullptr, last ? c_new_ptr + at : nullptr, hs_ptr + out,
                cs_ptr ? cs_ptr + out : nullptr, h_in_ptr + at, c_in_ptr + at, save ? gate_coef_ptr + at_bt(b, t, 4 * hidden) + u0 : nullptr,
                save ? cell_coef_ptr + out : nullptr, save ? carry_coef_ptr + out : nullptr};
            const float keep_t = keep_ptr ? keep_ptr[b * steps + t] : 1.0f;
            const float keep_next = (keep_ptr && t + 1 < steps) ? keep_ptr[b * steps + t + 1] : 1.0f;
            if (save)
              gate_tile<true>(z, gx + rows(b, t) * 4 * hidden + u0, hidden, keep_t, keep_next, outputs);
            else
              gate_tile<false>(z, gx + rows(b, t) * 4 * hidden + u0, hidden, keep_t, keep_next, outputs);
          }
        });
      }
      return finish_forward();
    }
  }
#endif
  for (int64_t t = 0; t < steps; ++t) {
    // a = h_in @ W_mh; m = a * mult_x[:, t].
    const at::Tensor a = state_matmul(h_in_mm, a_buffer);
    const mm_t* a_ptr = a.data_ptr<mm_t>();
    for_rows(batch, hidden, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) multiply(t, b, 0, hidden, a_ptr + b * hidden);
    });
    // z = m @ W_h; gates_x[:, t] is added in the pointwise pass, in acc.
    const at::Tensor z = mult_matmul(mult, z_buffer);
    const mm_t* z_ptr = z.data_ptr<mm_t>();
    for_rows(batch, 4 * hidden, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) gates(t, b, 0, hidden, z_ptr + 4 * b * hidden, hidden);
    });
  }
  return finish_forward();
}

template <typename mm_t, typename acc_t>
std::vector<at::Tensor> backward_impl(const at::Tensor& gate_coef, const at::Tensor& cell_coef, const at::Tensor& carry_coef,
                                      const at::Tensor& mult_x, const at::Tensor& products,
                                      const std::optional<at::Tensor>& keep, const std::optional<at::Tensor>& held,
                                      const RecurrentMatmul& gate_grad_matmul, const RecurrentMatmul& state_grad_matmul,
                                      const std::optional<at::Tensor>& d_hs, const std::optional<at::Tensor>& d_cs,
                                      const at::Tensor& d_h_last, const at::Tensor& d_c_last,
                                      const std::optional<at::Tensor>& input_ids) {
  const int64_t batch = gate_coef.size(0), steps = gate_coef.size(1), hidden = gate_coef.size(2) / 4;
  const auto mm_options = mult_x.options();
  const InputRows rows{input_ids.has_value() ? input_ids->data_ptr<int64_t>() : nullptr, steps};

  at::Tensor d_gates = large_buffer({batch, steps, 4 * hidden}, mm_options);  // dz, also dL/dgates_x
  at::Tensor d_mult_x = large_buffer({batch, steps, hidden}, mm_options);     // dm * a
  at::Tensor d_mult_keep = large_buffer({batch, steps, hidden}, mm_options);  // da = dm * mult_x * keep
  at::Tensor mult = large_buffer({batch, steps, hidden}, mm_options);         // m = a * mult_x
  // dL/dh_t = carried + product: `carried` holds the part that skips the product (the final state's gradient at
  // the start, then what held rows pass through), `product` the last da @ W_mh^T.
  at::Tensor carried = d_h_last.clone();
  at::Tensor grad_c = d_c_last.clone();
  at::Tensor dz_step = at::empty({batch, 4 * hidden}, mm_options);  // contiguous inputs of the step's products
  at::Tensor da_step = at::empty({batch, hidden}, mm_options);
  at::Tensor dm_buffer = at::empty({batch, hidden}, mm_options);
  at::Tensor product_buffer = at::empty({batch, hidden}, mm_options);
  const at::Tensor zeros = at::zeros({hidden}, mm_options);  // stands in for absent inputs
  at::Tensor product;  // undefined before the first step

  const acc_t* p_all = gate_coef.data_ptr<acc_t>();
  const acc_t* k_all = cell_coef.data_ptr<acc_t>();
  const acc_t* fk_all = carry_coef.data_ptr<acc_t>();
  const mm_t* mx_all = mult_x.data_ptr<mm_t>();
  const mm_t* a_all = products.data_ptr<mm_t>();
  const acc_t* keep_ptr = keep.has_value() ? keep->data_ptr<acc_t>() : nullptr;
  const bool* held_ptr = held.has_value() ? held->data_ptr<bool>() : nullptr;
  const mm_t* d_hs_all = d_hs.has_value() ? d_hs->data_ptr<mm_t>() : nullptr;
  const mm_t* d_cs_all = d_cs.has_value() ? d_cs->data_ptr<mm_t>() : nullptr;
  const mm_t* zeros_ptr = zeros.data_ptr<mm_t>();
  acc_t* carried_ptr = carried.data_ptr<acc_t>();
  acc_t* grad_c_ptr = grad_c.data_ptr<acc_t>();
  const auto at_bt = [&](int64_t b, int64_t t, int64_t width) { return (b * steps + t) * width; };

  for (int64_t t = steps - 1; t >= 0; --t) {
    const mm_t* product_ptr = product.defined() ? product.data_ptr<mm_t>() : nullptr;
    for_rows(batch, 4 * hidden, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const acc_t keep_t = keep_ptr ? keep_ptr[b * steps + t] : acc_t(1);
        const acc_t pass = (held_ptr && held_ptr[b * steps + t]) ? keep_t : acc_t(0);
        const int64_t row = b * hidden;
        gate_grad_row<mm_t, acc_t>(hidden, p_all + at_bt(b, t, 4 * hidden), k_all + at_bt(b, t, hidden),
                                   fk_all + at_bt(b, t, hidden), product_ptr ? product_ptr + row : zeros_ptr,
                                   d_hs_all ? d_hs_all + at_bt(b, t, hidden) : zeros_ptr,
                                   d_cs_all ? d_cs_all + at_bt(b, t, hidden) : zeros_ptr, pass, carried_ptr + row,
                                   grad_c_ptr + row, d_gates.data_ptr<mm_t>() + at_bt(b, t, 4 * hidden),
                                   dz_step.data_ptr<mm_t>() + 4 * row);
      }
    });
    // dm = dz @ W_h^T; then the product part of dL/dh_{t-1} = da @ W_mh^T.
    const at::Tensor dm = gate_grad_matmul(dz_step, dm_buffer);
    const mm_t* dm_ptr = dm.data_ptr<mm_t>();
    for_rows(batch, hidden, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const acc_t keep_t = keep_ptr ? keep_ptr[b * steps + t] : acc_t(1);
        const int64_t at = at_bt(b, t, hidden);
        mult_grad_row<mm_t, acc_t>(hidden, dm_ptr + b * hidden, mx_all + rows(b, t) * hidden, a_all + at, keep_t,
                                   d_mult_x.data_ptr<mm_t>() + at, d_mult_keep.data_ptr<mm_t>() + at,
                                   da_step.data_ptr<mm_t>() + b * hidden, mult.data_ptr<mm_t>() + at);
      }
    });
    product = state_grad_matmul(da_step, product_buffer);
  }
  // dL/dh0 = what the first step passes back.
  at::Tensor d_h0 = carried.add_(product.to(carried.scalar_type()));
  return {d_gates, d_mult_x, d_mult_keep, mult, d_h0, grad_c};
}

void check_batch_major(const at::Tensor& tensor, const char* name, int64_t batch, int64_t steps, int64_t width,
                       at::ScalarType dtype) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.is_contiguous() && tensor.scalar_type() == dtype &&
                  tensor.sizes() == at::IntArrayRef({batch, steps, width}),
              "bytezoo_mlstm_cpu: ", name, " must be a contiguous CPU ", dtype, " tensor of shape (", batch, ", ",
              steps, ", ", width, "); got ", tensor.scalar_type(), " ", tensor.sizes());
}

void check_state(const at::Tensor& tensor, const char* name, int64_t batch, int64_t hidden, at::ScalarType dtype) {
  TORCH_CHECK(tensor.is_contiguous() && tensor.scalar_type() == dtype && tensor.sizes() == at::IntArrayRef({batch, hidden}),
              "bytezoo_mlstm_cpu: ", name, " must be a contiguous ", dtype, " tensor of shape (", batch, ", ", hidden,
              ")");
}

void check_masks(const std::optional<at::Tensor>& keep, const std::optional<at::Tensor>& held, at::ScalarType acc,
                 int64_t batch, int64_t steps) {
  if (keep.has_value())
    TORCH_CHECK(keep->is_contiguous() && keep->scalar_type() == acc && keep->sizes() == at::IntArrayRef({batch, steps}),
                "bytezoo_mlstm_cpu: keep must be contiguous (B, T) in the state dtype");
  if (held.has_value())
    TORCH_CHECK(held->is_contiguous() && held->scalar_type() == at::kBool && held->sizes() == at::IntArrayRef({batch, steps}),
                "bytezoo_mlstm_cpu: held must be a contiguous (B, T) bool tensor");
}

at::ScalarType accumulate_type(at::ScalarType mm) { return mm == at::kDouble ? at::kDouble : at::kFloat; }

// Checks the token ids of table inputs: (B, T) int64, every id a row of the tables. Returns (B, T).
std::pair<int64_t, int64_t> check_input_ids(const at::Tensor& input_ids, int64_t table_rows) {
  TORCH_CHECK(input_ids.dim() == 2 && input_ids.is_contiguous() && input_ids.scalar_type() == at::kLong,
              "bytezoo_mlstm_cpu: input_ids must be a contiguous (B, T) int64 tensor");
  const int64_t* ids = input_ids.data_ptr<int64_t>();
  for (int64_t k = 0; k < input_ids.numel(); ++k)
    TORCH_CHECK(ids[k] >= 0 && ids[k] < table_rows, "bytezoo_mlstm_cpu: input_ids[", k, "] = ", ids[k],
                " is not a row of the (", table_rows, ", ...) tables");
  return {input_ids.size(0), input_ids.size(1)};
}

std::vector<at::Tensor> mlstm_forward(const at::Tensor& gates_x, const at::Tensor& mult_x, const at::Tensor& w_mh,
                                      const at::Tensor& w_h, const std::optional<at::Tensor>& w_mh_packed,
                                      const std::optional<at::Tensor>& w_h_packed, const at::Tensor& h0,
                                      const at::Tensor& c0, const std::optional<at::Tensor>& keep,
                                      const std::optional<at::Tensor>& held, const std::optional<at::Tensor>& input_ids,
                                      bool save, bool return_cells, const std::optional<at::Tensor>& w_mh_panels,
                                      const std::optional<at::Tensor>& w_h_panels, bool stream_panels) {
  check(gates_x.size(-1) % 4 == 0, "gates_x's last dimension must be 4H");
  const int64_t hidden = gates_x.size(-1) / 4;
  const auto mm = gates_x.scalar_type(), acc = accumulate_type(mm);
  check(mm == at::kFloat || mm == at::kDouble || mm == at::kBFloat16, "supports float32, bfloat16 and float64");
  int64_t batch = 0, steps = 0;
  if (input_ids.has_value()) {  // tables (V, 4H) and (V, H)
    check(gates_x.dim() == 2 && gates_x.is_contiguous() && mult_x.dim() == 2 && mult_x.is_contiguous() &&
              mult_x.size(0) == gates_x.size(0) && mult_x.size(1) == hidden && mult_x.scalar_type() == mm,
          "with input_ids, gates_x and mult_x must be contiguous (V, 4H) and (V, H) tables of one dtype");
    std::tie(batch, steps) = check_input_ids(*input_ids, gates_x.size(0));
  } else {
    check(gates_x.dim() == 3, "gates_x must be (B, T, 4H)");
    batch = gates_x.size(0), steps = gates_x.size(1);
    check_batch_major(gates_x, "gates_x", batch, steps, 4 * hidden, mm);
    check_batch_major(mult_x, "mult_x", batch, steps, hidden, mm);
  }
  check(steps > 0, "needs at least one step");
  check(w_mh.scalar_type() == mm && w_h.scalar_type() == mm && w_mh.sizes() == at::IntArrayRef({hidden, hidden}) &&
            w_h.sizes() == at::IntArrayRef({hidden, 4 * hidden}),
        "weights must be (H, H) and (H, 4H) in the inputs' dtype");
  check_state(h0, "h0", batch, hidden, acc);
  check_state(c0, "c0", batch, hidden, acc);
  check_masks(keep, held, acc, batch, steps);
  check(w_mh_panels.has_value() == w_h_panels.has_value(), "give both weights' panels or neither");
  if (w_mh_panels.has_value()) {
    check(blocked_products_available() && mm == at::kFloat && hidden % kPanelColumns == 0,
          "the blocked products need an AVX-512 build, float32 and H a multiple of 64");
    check(w_mh_panels->is_contiguous() && w_mh_panels->scalar_type() == at::kFloat &&
              w_mh_panels->sizes() == at::IntArrayRef({hidden / kPanelColumns, hidden, kPanelColumns}) &&
              w_h_panels->is_contiguous() && w_h_panels->scalar_type() == at::kFloat &&
              w_h_panels->sizes() == at::IntArrayRef({hidden / kPanelUnits, hidden, kPanelColumns}),
          "panels must be what blocked_panels returns for these weights");
  }
  const RecurrentMatmul state_matmul{w_mh, w_mh_packed}, mult_matmul{w_h, w_h_packed};
  BufferPool::instance().next_call();
  if (mm == at::kFloat)
    return forward_impl<float, float>(gates_x, mult_x, state_matmul, mult_matmul, h0, c0, keep, held, input_ids, save,
                                      return_cells, w_mh_panels, w_h_panels, stream_panels);
  if (mm == at::kDouble)
    return forward_impl<double, double>(gates_x, mult_x, state_matmul, mult_matmul, h0, c0, keep, held, input_ids,
                                        save, return_cells, std::nullopt, std::nullopt, false);
  return forward_impl<at::BFloat16, float>(gates_x, mult_x, state_matmul, mult_matmul, h0, c0, keep, held, input_ids,
                                           save, return_cells, std::nullopt, std::nullopt, false);
}

std::vector<at::Tensor> mlstm_backward(const at::Tensor& gate_coef, const at::Tensor& cell_coef, const at::Tensor& carry_coef,
                                       const at::Tensor& mult_x, const at::Tensor& products,
                                       const std::optional<at::Tensor>& keep, const std::optional<at::Tensor>& held,
                                       const at::Tensor& w_h_t, const at::Tensor& w_mh_t,
                                       const std::optional<at::Tensor>& w_h_t_packed,
                                       const std::optional<at::Tensor>& w_mh_t_packed, const std::optional<at::Tensor>& d_hs,
                                       const std::optional<at::Tensor>& d_cs, const at::Tensor& d_h_last,
                                       const at::Tensor& d_c_last, const std::optional<at::Tensor>& input_ids) {
  check(gate_coef.dim() == 3 && gate_coef.size(1) > 0 && gate_coef.size(2) % 4 == 0, "gate_coef must be (B, T > 0, 4H)");
  const int64_t batch = gate_coef.size(0), steps = gate_coef.size(1), hidden = gate_coef.size(2) / 4;
  const auto mm = mult_x.scalar_type(), acc = accumulate_type(mm);
  check(mm == at::kFloat || mm == at::kDouble || mm == at::kBFloat16, "supports float32, bfloat16 and float64");
  check_batch_major(gate_coef, "gate_coef", batch, steps, 4 * hidden, acc);
  check_batch_major(cell_coef, "cell_coef", batch, steps, hidden, acc);
  check_batch_major(carry_coef, "carry_coef", batch, steps, hidden, acc);
  if (input_ids.has_value()) {
    check(mult_x.dim() == 2 && mult_x.is_contiguous() && mult_x.size(1) == hidden, "with input_ids, mult_x must be a contiguous (V, H) table");
    check(check_input_ids(*input_ids, mult_x.size(0)) == std::make_pair(batch, steps), "input_ids must be (B, T)");
  } else {
    check_batch_major(mult_x, "mult_x", batch, steps, hidden, mm);
  }
  check_batch_major(products, "products", batch, steps, hidden, mm);
  if (d_hs.has_value()) check_batch_major(*d_hs, "d_hs", batch, steps, hidden, mm);
  if (d_cs.has_value()) check_batch_major(*d_cs, "d_cs", batch, steps, hidden, mm);
  check_state(d_h_last, "d_h_last", batch, hidden, acc);
  check_state(d_c_last, "d_c_last", batch, hidden, acc);
  check(w_h_t.scalar_type() == mm && w_mh_t.scalar_type() == mm && w_h_t.sizes() == at::IntArrayRef({4 * hidden, hidden}) &&
            w_mh_t.sizes() == at::IntArrayRef({hidden, hidden}),
        "transposed weights must be (4H, H) and (H, H) in the inputs' dtype");
  check_masks(keep, held, acc, batch, steps);
  const RecurrentMatmul gate_grad{w_h_t, w_h_t_packed}, state_grad{w_mh_t, w_mh_t_packed};
  BufferPool::instance().next_call();
  if (mm == at::kFloat)
    return backward_impl<float, float>(gate_coef, cell_coef, carry_coef, mult_x, products, keep, held, gate_grad,
                                       state_grad, d_hs, d_cs, d_h_last, d_c_last, input_ids);
  if (mm == at::kDouble)
    return backward_impl<double, double>(gate_coef, cell_coef, carry_coef, mult_x, products, keep, held, gate_grad,
                                         state_grad, d_hs, d_cs, d_h_last, d_c_last, input_ids);
  return backward_impl<at::BFloat16, float>(gate_coef, cell_coef, carry_coef, mult_x, products, keep, held, gate_grad,
                                            state_grad, d_hs, d_cs, d_h_last, d_c_last, input_ids);
}

void empty_cache() { BufferPool::instance().clear(); }

// How many threads one of the loops' parallel passes runs on (at::parallel_for over `tasks` tasks): 1 in a build
// without OpenMP, whatever torch.set_num_threads says. For tests and diagnostics.
int64_t parallel_threads(int64_t tasks) {
  std::mutex mutex;
  std::vector<std::thread::id> seen;
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> guard(mutex);
    if (std::find(seen.begin(), seen.end(), std::this_thread::get_id()) == seen.end())
      seen.push_back(std::this_thread::get_id());
  });
  return static_cast<int64_t>(seen.size());
}

}  // namespace

// Registered for every dispatch key (catch-all): the packed weights are oneDNN-layout tensors, and these operators
// run inside an autograd.Function's forward/backward, which handles differentiation.
TORCH_LIBRARY(bytezoo_mlstm_cpu, m) {
  m.def(
      "forward(Tensor gates_x, Tensor mult_x, Tensor w_mh, Tensor w_h, Tensor? w_mh_packed, Tensor? w_h_packed, "
      "Tensor h0, Tensor c0, Tensor? keep, Tensor? held, Tensor? input_ids, bool save, bool return_cells, "
      "Tensor? w_mh_panels, Tensor? w_h_panels, bool stream_panels=False) -> Tensor[]",
      &mlstm_forward);
  m.def(
      "backward(Tensor gate_coef, Tensor cell_coef, Tensor carry_coef, Tensor mult_x, Tensor products, Tensor? keep, "
      "Tensor? held, "
      "Tensor w_h_t, Tensor w_mh_t, Tensor? w_h_t_packed, Tensor? w_mh_t_packed, Tensor? d_hs, Tensor? d_cs, "
      "Tensor d_h_last, Tensor d_c_last, Tensor? input_ids) -> Tensor[]",
      &mlstm_backward);
  m.def("empty_cache() -> ()", &empty_cache);
  m.def("blocked_products_available() -> bool", &blocked_products_available);
  m.def("blocked_panels(Tensor w_mh, Tensor w_h) -> Tensor[]", &blocked_panels);
  m.def("parallel_threads(int tasks) -> int", &parallel_threads);
}
