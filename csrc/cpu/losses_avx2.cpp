// AVX2 rows of losses.cpp's mean squared error and binary cross-entropy on logits, eight elements
// at a time with the scalar loops' operations and LaneSum's order, so with their bits. MSE:
//   diff = p - t in double, loss term diff^2, gradient diff * grad_scale rounded to float.
// BCE:
//   e = exp(-|z|), loss term = (max(z, 0) - z t) + log1p(e) (the first part in double),
//   gradient (sigmoid(z) - t) * grad_scale with sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e),
// exp and log1p being common/exp_math.h's (cpu/exp_avx2.h), the terms summed in LaneSum's eight
// double lanes. The C library's scalar expf and log1pf made a 1024 x 784 loss 3.7x slower than
// PyTorch's.
// Compiled with -mavx2 -mfma -ffp-contract=off; only called after cpu_has_avx2_fma().
#include "cpu/losses_avx2.h"

#include <immintrin.h>

#include "cpu/avx2_partial.h"
#include "cpu/exp_avx2.h"
#include "cpu/lane_sum_avx2.h"

namespace fastmlp::detail {
namespace {

// The eight loss terms of (z, t) to `sum`, and the logistic, *sig. Lanes off `keep` (a row's tail,
// loaded as z = t = 0) add +0 instead of log 2, which leaves LaneSum's lanes as the scalar loop
// leaves them (a lane is never -0).
FASTMLP_ALWAYS_INLINE void bce8(__m256 z, __m256 t, __m256 keep, avx2::LaneSum* sum, __m256* sig) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = expmath::exp(_mm256_or_ps(z, _mm256_set1_ps(-0.0f)));  // -|z|
  const __m256 log_term = _mm256_and_ps(expmath::log1p_unit(e), keep);
  const __m256 non_negative = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GE_OQ);
  *sig = _mm256_div_ps(_mm256_blendv_ps(e, one, non_negative), _mm256_add_ps(one, e));
  const __m256d zero = _mm256_setzero_pd();
  const __m256d z_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(z));
  const __m256d z_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(z, 1));
  const __m256d t_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(t));
  const __m256d t_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1));
  // MAXPD(0, z) is the scalar `z < 0 ? 0 : z` (std::max(z, 0.0)): NaN passes.
  sum->add(_mm256_add_pd(_mm256_sub_pd(_mm256_max_pd(zero, z_lo), _mm256_mul_pd(z_lo, t_lo)),
                         _mm256_cvtps_pd(_mm256_castps256_ps128(log_term))),
           _mm256_add_pd(_mm256_sub_pd(_mm256_max_pd(zero, z_hi), _mm256_mul_pd(z_hi, t_hi)),
                         _mm256_cvtps_pd(_mm256_extractf128_ps(log_term, 1))));
}

// diff = p - t in double for the eight lanes; adds diff^2 to `sum`, returns diff * scale rounded
// to float (the gradient: |p - t| may exceed float's range while the gradient fits).
FASTMLP_ALWAYS_INLINE __m256 mse8(__m256 p, __m256 t, __m256d scale, avx2::LaneSum* sum) {
  const __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(p)),
                                   _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
  const __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)),
                                   _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)));
  sum->add(_mm256_mul_pd(lo, lo), _mm256_mul_pd(hi, hi));
  return _mm256_set_m128(_mm256_cvtpd_ps(_mm256_mul_pd(hi, scale)),
                         _mm256_cvtpd_ps(_mm256_mul_pd(lo, scale)));
}

}  // namespace

double bce_row_avx2(float* d, const float* z, const float* t, int64_t n, float grad_scale) {
  const __m256 scale = _mm256_set1_ps(grad_scale);
  const __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  avx2::LaneSum sum;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 tv = _mm256_loadu_ps(t + j);
    __m256 sig;
    bce8(_mm256_loadu_ps(z + j), tv, all, &sum, &sig);
    if (d != nullptr) _mm256_storeu_ps(d + j, _mm256_mul_ps(_mm256_sub_ps(sig, tv), scale));
  }
  if (j < n) {
    const int rest = static_cast<int>(n - j);
    const __m256i mask = avx2::lane_mask(rest);
    const __m256 tv = _mm256_maskload_ps(t + j, mask);
    __m256 sig;
    bce8(_mm256_maskload_ps(z + j, mask), tv, _mm256_castsi256_ps(mask), &sum, &sig);
    if (d != nullptr) {
      avx2::store_partial(d + j, _mm256_mul_ps(_mm256_sub_ps(sig, tv), scale), rest);
    }
  }
  return sum.total();
}

double mse_row_avx2(float* d, const float* p, const float* t, int64_t n, double grad_scale) {
  const __m256d scale = _mm256_set1_pd(grad_scale);
  avx2::LaneSum sum;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 g = mse8(_mm256_loadu_ps(p + j), _mm256_loadu_ps(t + j), scale, &sum);
    if (d != nullptr) _mm256_storeu_ps(d + j, g);
  }
  if (j < n) {
    // Lanes past the row load p = t = 0 and add +0: LaneSum's lanes stay as they are.
    const int rest = static_cast<int>(n - j);
    const __m256i mask = avx2::lane_mask(rest);
    const __m256 g =
        mse8(_mm256_maskload_ps(p + j, mask), _mm256_maskload_ps(t + j, mask), scale, &sum);
    if (d != nullptr) avx2::store_partial(d + j, g, rest);
  }
  return sum.total();
}

}  // namespace fastmlp::detail
