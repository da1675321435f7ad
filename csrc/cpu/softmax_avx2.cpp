// AVX2 loops of softmax.cpp: the row exponentials exp(x - shift) on eight lanes with
// common/exp_math.h's function (cpu/exp_avx2.h), bit-identical to softmax.cpp's scalar loops.
// A row's last n < 8 elements go through one masked vector (cpu/avx2_partial.h; rows of 10
// classes are common, and a scalar tail of 2 cost as much as the full vector); each lane has the
// scalar function's bits.
// Compiled with -mavx2 -mfma -ffp-contract=off; only called after cpu_has_avx2_fma().
#include <immintrin.h>

#include <cstdint>

#include "common/exp_math.h"
#include "cpu/avx2_partial.h"
#include "cpu/exp_avx2.h"

namespace fastmlp::detail {

// e[j] = exp(x[j] - shift) for j < n. e may alias x exactly.
void exp_shifted_avx2(float* e, const float* x, float shift, int64_t n) {
  const __m256 s = _mm256_set1_ps(shift);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(e + j, expmath::exp(_mm256_sub_ps(_mm256_loadu_ps(x + j), s)));
  }
  if (j < n) {
    const int rest = static_cast<int>(n - j);
    const __m256 xv = _mm256_maskload_ps(x + j, avx2::lane_mask(rest));
    avx2::store_partial(e + j, expmath::exp(_mm256_sub_ps(xv, s)), rest);
  }
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
