// Row reductions shared by softmax.cpp and losses.cpp: the row max, the exponentials
// exp(x - shift) with common/exp_math.h's exp, their row sum in double, and the log of that sum.
//
// Each has one order of operations, fixed by the row length alone, that the AVX2 versions
// (softmax_avx2.cpp, after cpu_has_avx2_fma()) and the scalar loops here both follow, so the two
// paths give the same bits:
//   max: eight lanes, element j in lane j % 8, every lane seeded with x[0]; a lane takes x[j] only
//        if x[j] > lane (MAXPS's rule: a NaN is never taken, but a NaN x[0] stays); then the lanes
//        combined by the same rule, lane 0 first;
//   sum: eight double lanes, element j added to lane j % 8 in order; then the lanes as
//        ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), the tree the vector halves give;
//   log: fdlibm's, operation for operation (log_of_sum; four sums at a time with AVX2).
// The C library's scalar expf made a 1024 x 1000 softmax 3.6x slower than PyTorch's; a scalar
// max and a separate summing pass over the stored terms cost log_softmax another ~25%.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "common/exp_math.h"

namespace fastmlp {

namespace detail {
// softmax_avx2.cpp; only after cpu_has_avx2_fma(). e may be nullptr (the terms are only summed)
// or alias x exactly; dx may alias dy.
float row_max_avx2(const float* x, int64_t n);
double exp_shifted_sum_avx2(float* e, const float* x, float shift, int64_t n);
void log_softmax_backward_row_avx2(float* dx, const float* y, const float* dy, float s, int64_t n);
void log_of_sums_avx2(double* out, const double* sums, int64_t n);
void narrow_rows_max_sum_avx2(const float* x, int64_t n, float* maxes, double* sums);
}  // namespace detail

// Rows this short or shorter go eight at a time through narrow_rows_max_sum_avx2.
constexpr int64_t kNarrowRowMax = 16;

// fdlibm's log (e_log.c, < 1 ulp): x = 2^k m with m in [sqrt(1/2), sqrt(2)), f = m - 1,
// s = f / (2 + f), log(m) = f - f^2/2 + s (f^2/2 + R(s^2)) with R fdlibm's degree-7 polynomial in
// s^2 (split in two halves, its order of operations), ln2 split in two.
namespace logmath {
constexpr double kLg1 = 6.666666666666735130e-01;
constexpr double kLg2 = 3.999999999940941908e-01;
constexpr double kLg3 = 2.857142874366239149e-01;
constexpr double kLg4 = 2.222219843214978396e-01;
constexpr double kLg5 = 1.818357216161805012e-01;
constexpr double kLg6 = 1.531383769920937332e-01;
constexpr double kLg7 = 1.479819860511658591e-01;
constexpr double kLn2Hi = 6.93147180369123816490e-01;
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kSqrt2 = 1.41421356237309504880;
}  // namespace logmath

// log(x) of a row's sum of exp terms: x >= 1 (the largest term is exactly 1), or NaN; also right
// for any normal x > 0 and +inf (NaN and +inf are returned as they are). glibc's log was ~35% of
// a 10-class log_softmax row; log_of_sums_avx2 takes four sums at a time with these bits.
inline double log_of_sum(double x) {
  using namespace logmath;
  if (!(x < std::numeric_limits<double>::infinity())) return x;  // NaN or +inf
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  double k = static_cast<double>(static_cast<int64_t>(bits >> 52) - 1023);
  bits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;  // m in [1, 2)
  double m;
  std::memcpy(&m, &bits, sizeof m);
  if (m > kSqrt2) {
    m = m * 0.5;
    k = k + 1.0;
  }
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  const double w = z * z;
  const double t1 = w * (kLg2 + w * (kLg4 + w * kLg6));
  const double t2 = z * (kLg1 + w * (kLg3 + w * (kLg5 + w * kLg7)));
  const double r = t2 + t1;
  const double hfsq = 0.5 * f * f;
  return k * kLn2Hi - ((hfsq - (s * (hfsq + r) + k * kLn2Lo)) - f);
}

// out[i] = log_of_sum(sums[i]) for i < n; out may alias sums.
inline void log_of_sums(double* out, const double* sums, int64_t n, bool avx2) {
  if (avx2) {
    detail::log_of_sums_avx2(out, sums, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = log_of_sum(sums[i]);
}

// sum_j term(j) in double, term j in lane j % kLanes. Successive add calls continue the row: each
// must start at a multiple of kLanes of it (all but the last add a multiple of kLanes).
struct LaneSum {
  static constexpr int kLanes = 8;
  double lane[kLanes] = {};
  template <typename Term>
  void add_terms(int64_t n, const Term& term) {
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) lane[l] += term(j + l);
    }
    for (int l = 0; j < n; ++j, ++l) lane[l] += term(j);
  }
  void add(const float* v, int64_t n) {
    add_terms(n, [v](int64_t j) { return static_cast<double>(v[j]); });
  }
  double total() const {
    return ((lane[0] + lane[4]) + (lane[2] + lane[6])) +
           ((lane[1] + lane[5]) + (lane[3] + lane[7]));
  }
};

// max_j x[j] for j < n, n >= 1 (the order in the header comment). avx2 = cpu_has_avx2_fma().
inline float row_max(const float* x, int64_t n, bool avx2) {
  if (avx2) return detail::row_max_avx2(x, n);
  constexpr int kLanes = 8;
  float lane[kLanes];
  for (float& v : lane) v = x[0];
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] = x[j + l] > lane[l] ? x[j + l] : lane[l];
  }
  for (int l = 0; j < n; ++j, ++l) lane[l] = x[j] > lane[l] ? x[j] : lane[l];
  float m = lane[0];
  for (int l = 1; l < kLanes; ++l) m = lane[l] > m ? lane[l] : m;
  return m;
}

// A row sum with one NaN for every NaN: a row holding NaNs of both signs (+NaN from x, -NaN from
// inf - inf) gives a sum whose NaN depends on the order of operands, which the compiler may swap
// in `+`, so the AVX2 and scalar paths would differ there.
inline double canonical_nan(double sum) {
  return sum == sum ? sum : std::numeric_limits<double>::quiet_NaN();
}

// sum_j exp(x[j] - shift) for j < n, in LaneSum's order (NaN canonical); also writes the terms to
// e[j] unless e is nullptr. e may alias x exactly.
inline double exp_shifted_sum(float* e, const float* x, float shift, int64_t n, bool avx2) {
  if (avx2) return canonical_nan(detail::exp_shifted_sum_avx2(e, x, shift, n));
  LaneSum sum;
  if (e != nullptr) {
    for (int64_t j = 0; j < n; ++j) e[j] = expmath::exp(x[j] - shift);
    sum.add(e, n);
  } else {
    sum.add_terms(n, [=](int64_t j) { return static_cast<double>(expmath::exp(x[j] - shift)); });
  }
  return canonical_nan(sum.total());
}

}  // namespace fastmlp
