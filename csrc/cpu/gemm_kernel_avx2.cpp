// AVX2/FMA micro-kernel: the 6 x 16 register tile of the GEMM (contract in cpu/gemm_kernel.h).
//
// Twelve ymm accumulators hold the tile (row r in c{r}0 = columns 0..7, c{r}1 = columns 8..15);
// each step p loads one 16-float row of the B micro-panel into two registers and broadcasts the six
// A values of column p, then issues 12 FMAs. Zen 3 retires two 256-bit FMAs per cycle, so the loop
// is FMA-bound (12 FMAs vs 2 loads + 6 broadcasts). The epilogue runs on the accumulators before
// they are stored: bias, preactivation store and identity/relu/leaky/prelu in registers; elu,
// sigmoid and tanh through activations_avx2.cpp on one row at a time (out of line: their
// exponentials would bloat every instantiation of the kernel, and cost more than the call).
// The kernel is instantiated for 1..6 rows (a short edge panel issues only its own FMAs); the
// write-back helpers are forced inline because GCC stopped inlining store_row into six
// instantiations, which made a 32x16x2 product 1.6x slower.
// Compiled with -mavx2 -mfma -ffp-contract=off (its FMAs are the intrinsics); only reached after
// cpu_has_avx2_fma().
#include <immintrin.h>

#include "cpu/activations_avx2.h"
#include "cpu/avx2_partial.h"
#include "cpu/gemm_kernel.h"

namespace fastmlp {
namespace {

using avx2::lane_mask;
using avx2::store_partial;
using gemm_blocking::MR;
using gemm_blocking::NR;
static_assert(MR == 6 && NR == 16, "the AVX2 micro-kernel is written for a 6 x 16 tile");

FASTMLP_ALWAYS_INLINE __m256 activate(__m256 z, Activation act, __m256 slope) {
  switch (act) {
    case Activation::Relu:
      // MAXPS returns its second operand unless the first is greater: max(0, z) is the scalar
      // `z < 0 ? 0 : z` (activation_forward), NaN and -0 passed through.
      return _mm256_max_ps(_mm256_setzero_ps(), z);
    case Activation::LeakyRelu:
    case Activation::Prelu: {
      const __m256 positive = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GT_OQ);
      return _mm256_blendv_ps(_mm256_mul_ps(z, slope), z, positive);
    }
    default:
      return z;  // identity; the others are handled by the caller
  }
}

inline bool vector_activation(Activation act) {
  return act == Activation::Identity || act == Activation::Relu || act == Activation::LeakyRelu ||
         act == Activation::Prelu;
}

// Columns [0, nr) of the 16 in (lo, hi) to p: full vector stores where all 8 lanes are valid.
template <bool Full>
FASTMLP_ALWAYS_INLINE void store_columns(float* p, __m256 lo, __m256 hi, int nr) {
  if (Full) {
    _mm256_storeu_ps(p, lo);
    _mm256_storeu_ps(p + 8, hi);
  } else if (nr >= 8) {
    _mm256_storeu_ps(p, lo);
    if (nr == 16)
      _mm256_storeu_ps(p + 8, hi);
    else if (nr > 8)
      store_partial(p + 8, hi, nr - 8);
  } else {
    store_partial(p, lo, nr);
  }
}

// Columns [0, nr) of p as two registers, lanes past nr zero (VMASKMOVPS loads are cheap; lanes
// masked off are not read, so memory past the row's end is never touched).
template <bool Full>
FASTMLP_ALWAYS_INLINE void load_columns(const float* p, int nr, __m256i m0, __m256i m1, __m256* lo,
                                        __m256* hi) {
  if (Full) {
    *lo = _mm256_loadu_ps(p);
    *hi = _mm256_loadu_ps(p + 8);
  } else {
    *lo = _mm256_maskload_ps(p, m0);
    *hi = nr > 8 ? _mm256_maskload_ps(p + 8, m1) : _mm256_setzero_ps();
  }
}

// Writes one row (16 columns in two registers) of the tile: z = alpha*AB + beta*C, then the
// epilogue when t.epilogue. Full: all 16 columns valid (t.nr == 16); else m0/m1 are the column
// masks of t.nr.
template <bool Full>
FASTMLP_ALWAYS_INLINE void store_row(int r, __m256 ab0, __m256 ab1, const MicroTile& t, __m256i m0,
                                     __m256i m1) {
  float* c = t.c + r * t.ldc;
  const __m256 alpha = _mm256_set1_ps(t.alpha);
  __m256 z0 = _mm256_mul_ps(alpha, ab0);
  __m256 z1 = _mm256_mul_ps(alpha, ab1);
  if (t.beta != 0.0f) {
    const __m256 beta = _mm256_set1_ps(t.beta);
    __m256 c0, c1;
    load_columns<Full>(c, t.nr, m0, m1, &c0, &c1);
    z0 = _mm256_fmadd_ps(beta, c0, z0);
    z1 = _mm256_fmadd_ps(beta, c1, z1);
  }
  if (t.epilogue) {
    if (t.bias != nullptr) {
      __m256 b0, b1;
      load_columns<Full>(t.bias, t.nr, m0, m1, &b0, &b1);
      z0 = _mm256_add_ps(z0, b0);
      z1 = _mm256_add_ps(z1, b1);
    }
    if (t.preactivation != nullptr) store_columns<Full>(t.preactivation + r * t.ldc, z0, z1, t.nr);
    if (vector_activation(t.activation)) {
      const __m256 slope = _mm256_set1_ps(t.activation_alpha);
      z0 = activate(z0, t.activation, slope);
      z1 = activate(z1, t.activation, slope);
    } else {
      alignas(32) float row[NR];
      _mm256_store_ps(row, z0);
      _mm256_store_ps(row + 8, z1);
      detail::activation_forward_avx2(row, row, 0, t.nr, t.activation, t.activation_alpha);
      z0 = _mm256_load_ps(row);
      z1 = _mm256_load_ps(row + 8);
    }
  }
  store_columns<Full>(c, z0, z1, t.nr);
}

// One row of the rank-1 update: (lo, hi) += a[0] * (b0, b1).
FASTMLP_ALWAYS_INLINE void fma_row(const float* a, __m256 b0, __m256 b1, __m256& lo, __m256& hi) {
  const __m256 ai = _mm256_broadcast_ss(a);
  lo = _mm256_fmadd_ps(ai, b0, lo);
  hi = _mm256_fmadd_ps(ai, b1, hi);
}

// The write-back of the first Rows rows of the tile (row r in c{r}0, c{r}1).
template <bool Full, int Rows>
FASTMLP_ALWAYS_INLINE void store_tile(const MicroTile& t, __m256i m0, __m256i m1, __m256 c00,
                                      __m256 c01, __m256 c10, __m256 c11, __m256 c20, __m256 c21,
                                      __m256 c30, __m256 c31, __m256 c40, __m256 c41, __m256 c50,
                                      __m256 c51) {
  store_row<Full>(0, c00, c01, t, m0, m1);
  if constexpr (Rows > 1) store_row<Full>(1, c10, c11, t, m0, m1);
  if constexpr (Rows > 2) store_row<Full>(2, c20, c21, t, m0, m1);
  if constexpr (Rows > 3) store_row<Full>(3, c30, c31, t, m0, m1);
  if constexpr (Rows > 4) store_row<Full>(4, c40, c41, t, m0, m1);
  if constexpr (Rows > 5) store_row<Full>(5, c50, c51, t, m0, m1);
}

// The tile's first Rows rows (t.mr == Rows): the FMAs of the other rows are not issued, so a short
// edge panel costs less (4 rows: 8 FMAs per step, at the full rate), and their rows of A are not
// read. Row r of A is read through its own pointer at a common offset, so one loop serves a packed
// panel and an A read in place (a micro-benchmark of this loop on a 126 x 196 block of A and
// 16 panels of B: 97-99 GF/s either way, as the loop specialised to the packed layout).
template <int Rows>
void micro_kernel(int64_t kc, const float* a, int64_t a_row, int64_t a_step, const float* b,
                  const MicroTile& t) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  const float* a0 = a;
  const float* a1 = Rows > 1 ? a + a_row : a;
  const float* a2 = Rows > 2 ? a + 2 * a_row : a;
  const float* a3 = Rows > 3 ? a + 3 * a_row : a;
  const float* a4 = Rows > 4 ? a + 4 * a_row : a;
  const float* a5 = Rows > 5 ? a + 5 * a_row : a;

  // C is read (beta != 0) or written right after the loop: start pulling its rows in now.
  for (int r = 0; r < Rows; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(t.c + r * t.ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(t.c + r * t.ldc + NR - 1), _MM_HINT_T0);
  }

  int64_t o = 0;  // offset of step p in every row of A: p * a_step
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p, o += a_step) {
    // A packed panel streams from the L2; fetch it a few steps ahead (in place, this fetches
    // row 0 ahead, which the hardware prefetchers would do anyway).
    _mm_prefetch(reinterpret_cast<const char*>(a0 + o + 8 * a_step), _MM_HINT_T0);
    const __m256 b0 = _mm256_load_ps(b);
    const __m256 b1 = _mm256_load_ps(b + 8);
    fma_row(a0 + o, b0, b1, c00, c01);
    if constexpr (Rows > 1) fma_row(a1 + o, b0, b1, c10, c11);
    if constexpr (Rows > 2) fma_row(a2 + o, b0, b1, c20, c21);
    if constexpr (Rows > 3) fma_row(a3 + o, b0, b1, c30, c31);
    if constexpr (Rows > 4) fma_row(a4 + o, b0, b1, c40, c41);
    if constexpr (Rows > 5) fma_row(a5 + o, b0, b1, c50, c51);
    b += NR;
  }

  const __m256i m0 = lane_mask(t.nr < 8 ? t.nr : 8);
  const __m256i m1 = lane_mask(t.nr > 8 ? t.nr - 8 : 0);
  if (t.nr == NR) {
    store_tile<true, Rows>(t, m0, m1, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51);
  } else {
    store_tile<false, Rows>(t, m0, m1, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51);
  }
}

}  // namespace

void gemm_micro_kernel_avx2(int64_t kc, const float* a, int64_t a_row, int64_t a_step,
                            const float* b, const MicroTile& t) {
  switch (t.mr) {
    case 6:
      return micro_kernel<6>(kc, a, a_row, a_step, b, t);
    case 5:
      return micro_kernel<5>(kc, a, a_row, a_step, b, t);
    case 4:
      return micro_kernel<4>(kc, a, a_row, a_step, b, t);
    case 3:
      return micro_kernel<3>(kc, a, a_row, a_step, b, t);
    case 2:
      return micro_kernel<2>(kc, a, a_row, a_step, b, t);
    default:
      return micro_kernel<1>(kc, a, a_row, a_step, b, t);
  }
}

}  // namespace fastmlp
