// AVX2 forward of relu/leaky_relu/prelu/elu/sigmoid/tanh, backward of relu/leaky_relu/prelu/elu and
// rows of PReLU with a learned slope, called from activations.cpp after cpu_has_avx2_fma().
//
// Why this file exists: these scalar loops do not vectorize. Under the default -ftrapping-math the
// compiler will not turn `x > 0 ? x : alpha * x` or `x > 0 ? dy : dy * alpha` (a conditionally
// executed float multiply) into a select, so it keeps a branch per element, which mispredicts on
// data with random signs (the relu backward ran ~25x slower than the relu forward on a 2049 x 1031
// matrix; measured on the shared 2-core dev machine, single thread). elu, sigmoid and tanh call
// common/exp_math.h's exponentials, which cpu/exp_avx2.h evaluates on eight lanes (the C
// library's expm1f/expf/tanhf are scalar calls: these kernels were 7-19x slower, 1024 x 256 on
// one thread, and 3-9x slower than PyTorch's).
// relu's forward does vectorise, on the baseline's four SSE lanes; on eight it is 1.13x faster
// (paired runs, one thread, 1024 x 256 and 128 x 256), level with PyTorch's.
// Here both sides are computed and blended, with the same float operations as
// common/activation_math.h, so the results are bit-identical to the scalar path:
//   relu        y  = x < 0 ? 0 : x               (MAXPS(0, x): NaN and -0 pass through)
//   leaky/prelu y  = x > 0 ? x : alpha * x
//   elu         y  = x > 0 ? x : alpha * expm1(x)
//   relu        dx = x <= 0 ? 0 : dy            (a select, as PyTorch's; dy * 0 is NaN for inf dy)
//   leaky/prelu dx = dy * (x > 0 ? 1 : alpha)
//   elu         dx = dy * (x > 0 ? 1 : alpha * exp(x))
// Compiled with -mavx2 -mfma -ffp-contract=off: no multiply-add is formed unless written.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "common/activation_math.h"
#include "cpu/exp_avx2.h"

namespace fastmlp::detail {

// f(x) on eight lanes, as activation_forward does on one.
template <Activation K>
FASTMLP_ALWAYS_INLINE __m256 forward8(__m256 xv, __m256 va) {
  if constexpr (K == Activation::Relu) {
    return _mm256_max_ps(_mm256_setzero_ps(), xv);  // MAXPS returns xv unless 0 > xv
  } else if constexpr (K == Activation::LeakyRelu || K == Activation::Prelu) {
    const __m256 positive = _mm256_cmp_ps(xv, _mm256_setzero_ps(), _CMP_GT_OQ);  // NaN: no
    return _mm256_blendv_ps(_mm256_mul_ps(va, xv), xv, positive);
  } else if constexpr (K == Activation::Elu) {
    const __m256 positive = _mm256_cmp_ps(xv, _mm256_setzero_ps(), _CMP_GT_OQ);
    return _mm256_blendv_ps(_mm256_mul_ps(va, expmath::expm1(xv)), xv, positive);
  } else if constexpr (K == Activation::Sigmoid) {
    return expmath::sigmoid(xv);
  } else {
    static_assert(K == Activation::Tanh);
    return expmath::tanh(xv);
  }
}

template <Activation K>
void forward_range(float* y, const float* x, int64_t begin, int64_t end, float alpha) {
  const __m256 va = _mm256_set1_ps(alpha);
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) _mm256_storeu_ps(y + i, forward8<K>(_mm256_loadu_ps(x + i), va));
  for (; i < end; ++i) y[i] = activation_forward(K, x[i], alpha);
}

// Forward of relu/leaky_relu/prelu/elu/sigmoid/tanh over [begin, end); false (doing nothing) for
// identity. y may alias x exactly.
bool activation_forward_avx2(float* y, const float* x, int64_t begin, int64_t end, Activation kind,
                             float alpha) {
  switch (kind) {
    case Activation::Relu:
      forward_range<Activation::Relu>(y, x, begin, end, alpha);
      return true;
    case Activation::LeakyRelu:
    case Activation::Prelu:
      forward_range<Activation::LeakyRelu>(y, x, begin, end, alpha);
      return true;
    case Activation::Elu:
      forward_range<Activation::Elu>(y, x, begin, end, alpha);
      return true;
    case Activation::Sigmoid:
      forward_range<Activation::Sigmoid>(y, x, begin, end, alpha);
      return true;
    case Activation::Tanh:
      forward_range<Activation::Tanh>(y, x, begin, end, alpha);
      return true;
    default:
      return false;
  }
}

// Processes [begin, end) of the flat buffers; returns false (doing nothing) for the kinds it does
// not handle, which the caller then runs through its scalar loop. dx may alias dy exactly.
bool activation_backward_avx2(float* dx, const float* x, const float* y, const float* dy,
                              int64_t begin, int64_t end, Activation kind, float alpha) {
  if (kind != Activation::Relu && kind != Activation::LeakyRelu && kind != Activation::Prelu &&
      kind != Activation::Elu) {
    return false;
  }
  const __m256 zero = _mm256_setzero_ps();
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 va = _mm256_set1_ps(alpha);
  const bool elu = kind == Activation::Elu;
  int64_t i = begin;
  if (kind == Activation::Relu) {
    // A select, as activation_dx: dy where !(x <= 0) (true for NaN), else +0.
    for (; i + 8 <= end; i += 8) {
      const __m256 pass = _mm256_cmp_ps(_mm256_loadu_ps(x + i), zero, _CMP_NLE_UQ);
      _mm256_storeu_ps(dx + i, _mm256_and_ps(pass, _mm256_loadu_ps(dy + i)));
    }
  } else {
    for (; i + 8 <= end; i += 8) {
      const __m256 xv = _mm256_loadu_ps(x + i);
      const __m256 gv = _mm256_loadu_ps(dy + i);
      const __m256 positive = _mm256_cmp_ps(xv, zero, _CMP_GT_OQ);  // false for NaN, as `x > 0`
      const __m256 slope = elu ? _mm256_mul_ps(va, expmath::exp(xv)) : va;
      _mm256_storeu_ps(dx + i, _mm256_mul_ps(gv, _mm256_blendv_ps(slope, one, positive)));
    }
  }
  for (; i < end; ++i) dx[i] = activation_dx(kind, dy[i], x[i], y[i], alpha);
  return true;
}

// y = x > 0 ? x : slope * x over one row; slope[0] (n_slope == 1) or slope[j].
void prelu_forward_row_avx2(float* yr, const float* xr, const float* slope, int64_t cols,
                            int64_t n_slope) {
  const __m256 zero = _mm256_setzero_ps();
  const bool shared = n_slope == 1;
  const __m256 shared_slope = _mm256_set1_ps(slope[0]);
  int64_t j = 0;
  for (; j + 8 <= cols; j += 8) {
    const __m256 xv = _mm256_loadu_ps(xr + j);
    const __m256 sv = shared ? shared_slope : _mm256_loadu_ps(slope + j);
    const __m256 positive = _mm256_cmp_ps(xv, zero, _CMP_GT_OQ);
    _mm256_storeu_ps(yr + j, _mm256_blendv_ps(_mm256_mul_ps(sv, xv), xv, positive));
  }
  for (; j < cols; ++j) yr[j] = xr[j] > 0.0f ? xr[j] : slope[shared ? 0 : j] * xr[j];
}

// dx = x > 0 ? dy : dy * slope over one row, and the dslope terms dy * min(x, 0) (exact in
// double) added into acc: acc[j] for a per-column slope; for a shared slope, lane j % 8 for
// j < cols8 and lane j - cols8 for the tail, as the scalar row in activations.cpp does.
// _mm256_min_ps(0, x) is `0 < x ? 0 : x`, the same as std::min(x, 0.0f) for NaN and -0 too.
void prelu_backward_row_avx2(float* dxr, double* acc, const float* xr, const float* slope,
                             const float* dyr, int64_t cols, int64_t n_slope) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 one = _mm256_set1_ps(1.0f);
  const bool shared = n_slope == 1;
  const __m256 shared_slope = _mm256_set1_ps(slope[0]);
  const int64_t cols8 = cols - cols % 8;
  __m256d lanes_lo = shared ? _mm256_loadu_pd(acc) : _mm256_setzero_pd();
  __m256d lanes_hi = shared ? _mm256_loadu_pd(acc + 4) : _mm256_setzero_pd();
  for (int64_t j = 0; j < cols8; j += 8) {
    const __m256 xv = _mm256_loadu_ps(xr + j);
    const __m256 gv = _mm256_loadu_ps(dyr + j);
    const __m256 sv = shared ? shared_slope : _mm256_loadu_ps(slope + j);
    const __m256 positive = _mm256_cmp_ps(xv, zero, _CMP_GT_OQ);
    _mm256_storeu_ps(dxr + j, _mm256_mul_ps(gv, _mm256_blendv_ps(sv, one, positive)));
    const __m256 neg = _mm256_min_ps(zero, xv);
    // The products are exact, so a fused multiply-add here would give the same sums.
    const __m256d t_lo = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(gv)),
                                       _mm256_cvtps_pd(_mm256_castps256_ps128(neg)));
    const __m256d t_hi = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(gv, 1)),
                                       _mm256_cvtps_pd(_mm256_extractf128_ps(neg, 1)));
    if (shared) {
      lanes_lo = _mm256_add_pd(lanes_lo, t_lo);
      lanes_hi = _mm256_add_pd(lanes_hi, t_hi);
    } else {
      _mm256_storeu_pd(acc + j, _mm256_add_pd(_mm256_loadu_pd(acc + j), t_lo));
      _mm256_storeu_pd(acc + j + 4, _mm256_add_pd(_mm256_loadu_pd(acc + j + 4), t_hi));
    }
  }
  if (shared) {
    _mm256_storeu_pd(acc, lanes_lo);
    _mm256_storeu_pd(acc + 4, lanes_hi);
  }
  for (int64_t j = cols8; j < cols; ++j) {
    const float xv = xr[j];
    const float g = dyr[j];
    const float s = slope[shared ? 0 : j];
    dxr[j] = xv > 0.0f ? g : g * s;
    const double term = static_cast<double>(g) * static_cast<double>(std::min(xv, 0.0f));
    acc[shared ? j - cols8 : j] += term;
  }
}

// Down the rows of a block of columns, the accumulators stay in registers: 32 columns in eight
// registers of four doubles (eight independent add chains: VADDPD has a latency of 3 cycles and
// two pipes), then 4 at a time, then one. Each acc[j] receives the same adds in the same order as
// in the scalar loop (row by row), so the sums are the same bits. 1024 x 256 on one thread: 65 ->
// 40 us (the 1 MiB it reads then bounds it), 1024 x 128: 30 -> 16 us.
void column_sum_rows_avx2(double* acc, const float* x, int64_t rows, int64_t cols, int64_t ld) {
  int64_t j = 0;
  for (; j + 32 <= cols; j += 32) {
    __m256d a[8];
    for (int q = 0; q < 8; ++q) a[q] = _mm256_loadu_pd(acc + j + 4 * q);
    const float* p = x + j;
    for (int64_t i = 0; i < rows; ++i, p += ld) {
      for (int q = 0; q < 8; ++q)
        a[q] = _mm256_add_pd(a[q], _mm256_cvtps_pd(_mm_loadu_ps(p + 4 * q)));
    }
    for (int q = 0; q < 8; ++q) _mm256_storeu_pd(acc + j + 4 * q, a[q]);
  }
  for (; j + 4 <= cols; j += 4) {
    __m256d a = _mm256_loadu_pd(acc + j);
    const float* p = x + j;
    for (int64_t i = 0; i < rows; ++i, p += ld)
      a = _mm256_add_pd(a, _mm256_cvtps_pd(_mm_loadu_ps(p)));
    _mm256_storeu_pd(acc + j, a);
  }
  for (; j < cols; ++j) {
    double a = acc[j];
    for (int64_t i = 0; i < rows; ++i) a += static_cast<double>(x[i * ld + j]);
    acc[j] = a;
  }
}

}  // namespace fastmlp::detail
