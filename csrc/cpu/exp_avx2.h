// AVX2 versions of common/exp_math.h: eight lanes of the same operations, in the same order, so
// each lane has the scalar function's bits (tests/test_activations.py checks it). Include only
// from translation units compiled with -mavx2 -mfma -ffp-contract=off (see CMakeLists.txt).
#pragma once

#include <immintrin.h>

#include "common/exp_math.h"

namespace fastmlp::expmath {

FASTMLP_ALWAYS_INLINE __m256 splat(float v) {
  return _mm256_set1_ps(v);
}

FASTMLP_ALWAYS_INLINE __m256 is_nan(__m256 x) {
  return _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
}

// clamp(): MAXPS(x, lo) is `x > lo ? x : lo`, MINPS(hi, x) is `hi < x ? hi : x`.
FASTMLP_ALWAYS_INLINE __m256 clamp(__m256 x, float lo, float hi) {
  return _mm256_min_ps(splat(hi), _mm256_max_ps(x, splat(lo)));
}

FASTMLP_ALWAYS_INLINE __m256 reduce(__m256 x, __m256* r) {
  const __m256 magic = splat(kRoundMagic);
  const __m256 n =
      _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x, splat(kLog2e)), magic), magic);  // + (-M)
  const __m256 minus_n = _mm256_xor_ps(n, splat(-0.0f));  // -n flips the sign bit, 0 too
  *r = _mm256_fmadd_ps(minus_n, splat(kLn2Lo), _mm256_fmadd_ps(minus_n, splat(kLn2Hi), x));
  return n;
}

FASTMLP_ALWAYS_INLINE __m256 expm1_reduced(__m256 r) {
  __m256 q = _mm256_fmadd_ps(splat(kQ5), r, splat(kQ4));
  q = _mm256_fmadd_ps(q, r, splat(kQ3));
  q = _mm256_fmadd_ps(q, r, splat(kQ2));
  q = _mm256_fmadd_ps(q, r, splat(kQ1));
  q = _mm256_fmadd_ps(q, r, splat(kQ0));
  return _mm256_fmadd_ps(q, _mm256_mul_ps(r, r), r);
}

// 2^n for integer lanes n in [-126, 127].
FASTMLP_ALWAYS_INLINE __m256 pow2i(__m256i n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}

FASTMLP_ALWAYS_INLINE __m256 exp(__m256 x) {
  __m256 r;
  const __m256i n = _mm256_cvttps_epi32(reduce(clamp(x, kExpMin, kExpMax), &r));
  const __m256 p = _mm256_add_ps(expm1_reduced(r), splat(1.0f));
  const __m256i n1 = _mm256_srai_epi32(n, 1);
  const __m256 e = _mm256_mul_ps(_mm256_mul_ps(p, pow2i(n1)), pow2i(_mm256_sub_epi32(n, n1)));
  return _mm256_blendv_ps(e, x, is_nan(x));
}

FASTMLP_ALWAYS_INLINE __m256 expm1(__m256 x) {
  __m256 r;
  const __m256i n = _mm256_cvttps_epi32(reduce(clamp(x, kExpm1Min, kExpm1Max), &r));
  const __m256 p = expm1_reduced(r);
  const __m256 s = pow2i(n);
  const __m256 scaled = _mm256_fmadd_ps(s, p, _mm256_add_ps(s, splat(-1.0f)));
  const __m256 n_is_zero = _mm256_castsi256_ps(_mm256_cmpeq_epi32(n, _mm256_setzero_si256()));
  const __m256 keep_x = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_EQ_UQ);  // NaN or +-0
  return _mm256_blendv_ps(_mm256_blendv_ps(scaled, p, n_is_zero), x, keep_x);
}

FASTMLP_ALWAYS_INLINE __m256 abs(__m256 x) {
  return _mm256_andnot_ps(splat(-0.0f), x);
}

FASTMLP_ALWAYS_INLINE __m256 sigmoid(__m256 x) {
  const __m256 one = splat(1.0f);
  const __m256 e = exp(_mm256_or_ps(x, splat(-0.0f)));  // -fabsf(x): the sign bit set
  const __m256 non_negative = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
  return _mm256_div_ps(_mm256_blendv_ps(e, one, non_negative), _mm256_add_ps(one, e));
}

FASTMLP_ALWAYS_INLINE __m256 tanh(__m256 x) {
  const __m256 a = _mm256_min_ps(splat(kTanhMax), abs(x));  // `kTanhMax < a ? kTanhMax : a`
  const __m256 m = expm1(_mm256_add_ps(a, a));
  const __m256 t = _mm256_div_ps(m, _mm256_add_ps(m, splat(2.0f)));
  const __m256 sign = splat(-0.0f);
  return _mm256_or_ps(_mm256_andnot_ps(sign, t), _mm256_and_ps(sign, x));  // copysignf(t, x)
}

FASTMLP_ALWAYS_INLINE __m256 log1p_reduced_tail(__m256 f) {
  __m256 p = _mm256_fmadd_ps(splat(kL8), f, splat(kL7));
  p = _mm256_fmadd_ps(p, f, splat(kL6));
  p = _mm256_fmadd_ps(p, f, splat(kL5));
  p = _mm256_fmadd_ps(p, f, splat(kL4));
  p = _mm256_fmadd_ps(p, f, splat(kL3));
  p = _mm256_fmadd_ps(p, f, splat(kL2));
  p = _mm256_fmadd_ps(p, f, splat(kL1));
  p = _mm256_fmadd_ps(p, f, splat(kL0));
  const __m256 z = _mm256_mul_ps(f, f);
  return _mm256_fmadd_ps(_mm256_mul_ps(f, z), p, _mm256_mul_ps(splat(-0.5f), z));
}

FASTMLP_ALWAYS_INLINE __m256 log1p_unit(__m256 u) {
  const __m256 one = splat(1.0f);
  const __m256 w = _mm256_add_ps(one, u);
  const __m256 c = _mm256_sub_ps(u, _mm256_sub_ps(w, one));  // u + -(w + -1): the same roundings
  const __m256 halve = _mm256_cmp_ps(w, splat(kSqrt2), _CMP_GT_OQ);
  const __m256 f = _mm256_sub_ps(_mm256_blendv_ps(w, _mm256_mul_ps(w, splat(0.5f)), halve), one);
  const __m256 k = _mm256_and_ps(halve, one);  // 1 where halved, else +0
  const __m256 tail =
      _mm256_add_ps(_mm256_fmadd_ps(k, splat(kLn2Lo), log1p_reduced_tail(f)), _mm256_div_ps(c, w));
  return _mm256_fmadd_ps(k, splat(kLn2Hi), _mm256_add_ps(f, tail));
}

}  // namespace fastmlp::expmath
