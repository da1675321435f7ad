// AVX2 loops of softmax.cpp and losses.cpp: the row max and the row exponentials exp(x - shift)
// with their double sum, on eight lanes, and the logs of row sums, four at a time, in the order
// cpu/row_exp.h fixes for both paths (so the bits are the scalar loops'), exp being
// common/exp_math.h's function (cpu/exp_avx2.h).
// A row's last n < 8 elements go through one masked vector (cpu/avx2_partial.h; rows of 10
// classes are common, and a scalar tail of 2 cost as much as the full vector).
// Compiled with -mavx2 -mfma -ffp-contract=off; only called after cpu_has_avx2_fma().
#include <immintrin.h>

#include <cstdint>
#include <limits>

#include "common/exp_math.h"
#include "cpu/avx2_partial.h"
#include "cpu/exp_avx2.h"
#include "cpu/lane_sum_avx2.h"
#include "cpu/row_exp.h"

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

namespace {

// row_exp.h's log_of_sum on four lanes, with its operations in its order.
__m256d log_of_sum4(__m256d x) {
  using namespace logmath;
  const __m256i bits = _mm256_castpd_si256(x);
  // The exponent field as a double: 2^52 + e - 2^52 (e < 2^11 sits in the mantissa's low bits).
  const __m256d two52 = _mm256_set1_pd(4503599627370496.0);
  const __m256d e = _mm256_sub_pd(
      _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(bits, 52), _mm256_castpd_si256(two52))),
      two52);
  __m256d k = _mm256_sub_pd(e, _mm256_set1_pd(1023.0));
  __m256d m = _mm256_castsi256_pd(
      _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000fffffffffffffLL)),
                      _mm256_set1_epi64x(0x3ff0000000000000LL)));
  const __m256d halve = _mm256_cmp_pd(m, _mm256_set1_pd(kSqrt2), _CMP_GT_OQ);
  m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(0.5)), halve);
  k = _mm256_blendv_pd(k, _mm256_add_pd(k, _mm256_set1_pd(1.0)), halve);
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d f = _mm256_sub_pd(m, one);
  const __m256d s = _mm256_div_pd(f, _mm256_add_pd(_mm256_set1_pd(2.0), f));
  const __m256d z = _mm256_mul_pd(s, s);
  const __m256d w = _mm256_mul_pd(z, z);
  auto c = [](double v) { return _mm256_set1_pd(v); };
  const __m256d t1 = _mm256_mul_pd(
      w,
      _mm256_add_pd(c(kLg2), _mm256_mul_pd(w, _mm256_add_pd(c(kLg4), _mm256_mul_pd(w, c(kLg6))))));
  const __m256d t2 = _mm256_mul_pd(
      z, _mm256_add_pd(
             c(kLg1),
             _mm256_mul_pd(
                 w, _mm256_add_pd(
                        c(kLg3),
                        _mm256_mul_pd(w, _mm256_add_pd(c(kLg5), _mm256_mul_pd(w, c(kLg7))))))));
  const __m256d r = _mm256_add_pd(t2, t1);
  const __m256d hfsq = _mm256_mul_pd(_mm256_mul_pd(c(0.5), f), f);
  const __m256d inner =
      _mm256_add_pd(_mm256_mul_pd(s, _mm256_add_pd(hfsq, r)), _mm256_mul_pd(k, c(kLn2Lo)));
  const __m256d result =
      _mm256_sub_pd(_mm256_mul_pd(k, c(kLn2Hi)), _mm256_sub_pd(_mm256_sub_pd(hfsq, inner), f));
  // NaN or +inf: x itself, as the scalar function's first line.
  const __m256d special = _mm256_cmp_pd(x, c(std::numeric_limits<double>::infinity()), _CMP_NLT_UQ);
  return _mm256_blendv_pd(result, x, special);
}

}  // namespace

// out[i] = log_of_sum(sums[i]) for i < n; out may alias sums.
void log_of_sums_avx2(double* out, const double* sums, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) _mm256_storeu_pd(out + i, log_of_sum4(_mm256_loadu_pd(sums + i)));
  if (i < n) {
    alignas(32) double lanes[4] = {1.0, 1.0, 1.0, 1.0};
    for (int64_t l = 0; i + l < n; ++l) lanes[l] = sums[i + l];
    _mm256_store_pd(lanes, log_of_sum4(_mm256_load_pd(lanes)));
    for (int64_t l = 0; i + l < n; ++l) out[i + l] = lanes[l];
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

namespace {

// Columns j of eight rows r[0..7] (lanes 0..7 of r[i] are x[i][j0 + 0..7]): out[j] holds
// x[0..7][j0 + j], the rows in its lanes.
FASTMLP_ALWAYS_INLINE void transpose8(const __m256 r[8], __m256 out[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  out[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  out[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  out[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  out[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  out[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  out[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  out[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  out[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// a + b on the double terms of eight rows (rows 0-3 in [0], 4-7 in [1]).
struct RowsD {
  __m256d lo, hi;
};
FASTMLP_ALWAYS_INLINE RowsD add(RowsD a, RowsD b) {
  return {_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)};
}
FASTMLP_ALWAYS_INLINE RowsD widen(__m256 v) {
  return {_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))};
}

}  // namespace

// row_max and exp_shifted_sum (no terms stored) of eight rows of n <= 16 floats, x row-major
// (row i at x + i * n): maxes[i] and sums[i] (NaN not yet canonical). The rows are transposed so
// that each lane holds a row: the eight lanes of the row loops become eight registers, whose
// element-by-element operations are the row loops' in their order (row_exp.h), so the bits are
// theirs. A row of 10 takes two exponentials of eight lanes in the row loop, here 10 / 8 of one,
// and the eight rows' chains run side by side (log_softmax 4096 x 10, one thread: 140 -> 80 us).
void narrow_rows_max_sum_avx2(const float* x, int64_t n, float* maxes, double* sums) {
  const int lo_cols = static_cast<int>(n < 8 ? n : 8), hi_cols = static_cast<int>(n - lo_cols);
  const __m256i lo_mask = avx2::lane_mask(lo_cols), hi_mask = avx2::lane_mask(hi_cols);
  __m256 rows[8], col[16];
  for (int i = 0; i < 8; ++i) rows[i] = _mm256_maskload_ps(x + i * n, lo_mask);
  transpose8(rows, col);
  if (hi_cols > 0) {
    for (int i = 0; i < 8; ++i) rows[i] = _mm256_maskload_ps(x + i * n + 8, hi_mask);
    transpose8(rows, col + 8);
  }
  // The max: lane l of the row loop is register l here, seeded with x[0] (col[0]).
  __m256 lane[8];
  for (int l = 0; l < 8; ++l) lane[l] = l < lo_cols ? _mm256_max_ps(col[l], col[0]) : col[0];
  for (int l = 0; l < hi_cols; ++l) lane[l] = _mm256_max_ps(col[8 + l], lane[l]);
  __m256 m = lane[0];
  for (int l = 1; l < 8; ++l) m = _mm256_max_ps(lane[l], m);
  _mm256_storeu_ps(maxes, m);
  // The sum: double lane l starts at +0 and takes exp(x[l] - m), then exp(x[l + 8] - m); lanes
  // past the row take +0.
  const __m256d zero = _mm256_setzero_pd();
  RowsD acc[8];
  for (int l = 0; l < 8; ++l) {
    acc[l] = {zero, zero};
    if (l < lo_cols) acc[l] = add(acc[l], widen(expmath::exp(_mm256_sub_ps(col[l], m))));
  }
  for (int l = 0; l < hi_cols; ++l) {
    acc[l] = add(acc[l], widen(expmath::exp(_mm256_sub_ps(col[8 + l], m))));
  }
  const RowsD total = add(add(add(acc[0], acc[4]), add(acc[2], acc[6])),
                          add(add(acc[1], acc[5]), add(acc[3], acc[7])));
  _mm256_storeu_pd(sums, total.lo);
  _mm256_storeu_pd(sums + 4, total.hi);
}

}  // namespace fastmlp::detail
