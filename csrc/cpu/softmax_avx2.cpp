// AVX2 loops of softmax.cpp and losses.cpp: the row max and the row exponentials exp(x - shift)
// with their double sum, on eight lanes, in the order cpu/row_exp.h fixes for both paths (so the
// bits are the scalar loops'), exp being common/exp_math.h's function (cpu/exp_avx2.h).
// A row's last n < 8 elements go through one masked vector (cpu/avx2_partial.h; rows of 10
// classes are common, and a scalar tail of 2 cost as much as the full vector).
// Compiled with -mavx2 -mfma -ffp-contract=off; only called after cpu_has_avx2_fma().
#include <immintrin.h>

#include <cstdint>

#include "common/exp_math.h"
#include "cpu/avx2_partial.h"
#include "cpu/exp_avx2.h"
#include "cpu/lane_sum_avx2.h"

namespace fastmlp::detail {

// max_j x[j], n >= 1: lane j % 8 keeps the running max of its elements (MAXPS(v, m) = v > m ?
// v : m, so a NaN is never taken), every lane seeded with x[0]; then the lanes, lane 0 first.
float row_max_avx2(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(x[0]);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + j), m);
  if (j < n) {
    const __m256i mask = avx2::lane_mask(static_cast<int>(n - j));
    const __m256 v = _mm256_maskload_ps(x + j, mask);
    m = _mm256_blendv_ps(m, _mm256_max_ps(v, m), _mm256_castsi256_ps(mask));
  }
  alignas(32) float lane[8];
  _mm256_store_ps(lane, m);
  float r = lane[0];
  for (int l = 1; l < 8; ++l) r = lane[l] > r ? lane[l] : r;
  return r;
}

namespace {

template <bool kStore>
double exp_shifted_sum_lanes(float* e, const float* x, float shift, int64_t n) {
  const __m256 s = _mm256_set1_ps(shift);
  avx2::LaneSum sum;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = expmath::exp(_mm256_sub_ps(_mm256_loadu_ps(x + j), s));
    if (kStore) _mm256_storeu_ps(e + j, v);
    sum.add(v);
  }
  if (j < n) {
    const int rest = static_cast<int>(n - j);
    const __m256i mask = avx2::lane_mask(rest);
    const __m256 v = expmath::exp(_mm256_sub_ps(_mm256_maskload_ps(x + j, mask), s));
    if (kStore) avx2::store_partial(e + j, v, rest);
    // The lanes past the row add +0, which leaves them as they are: they hold +0 or sums of
    // terms >= +0 (or NaN).
    sum.add(_mm256_and_ps(v, _mm256_castsi256_ps(mask)));
  }
  return sum.total();
}

}  // namespace

// sum_j exp(x[j] - shift), the terms also stored to e unless it is nullptr. e may alias x exactly.
double exp_shifted_sum_avx2(float* e, const float* x, float shift, int64_t n) {
  return e != nullptr ? exp_shifted_sum_lanes<true>(e, x, shift, n)
                      : exp_shifted_sum_lanes<false>(nullptr, x, shift, n);
}

// dx[j] = dy[j] - exp(y[j]) * s for j < n. dx may alias dy exactly.
void log_softmax_backward_row_avx2(float* dx, const float* y, const float* dy, float s, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = expmath::exp(_mm256_loadu_ps(y + j));
    _mm256_storeu_ps(dx + j, _mm256_sub_ps(_mm256_loadu_ps(dy + j), _mm256_mul_ps(e, vs)));
  }
  if (j < n) {
    const int rest = static_cast<int>(n - j);
    const __m256i mask = avx2::lane_mask(rest);
    const __m256 e = expmath::exp(_mm256_maskload_ps(y + j, mask));
    const __m256 d = _mm256_maskload_ps(dy + j, mask);
    avx2::store_partial(dx + j, _mm256_sub_ps(d, _mm256_mul_ps(e, vs)), rest);
  }
}

}  // namespace fastmlp::detail
