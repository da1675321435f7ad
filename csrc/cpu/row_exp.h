// Row reductions shared by softmax.cpp and losses.cpp: the row max, the exponentials
// exp(x - shift) with common/exp_math.h's exp, and their row sum in double.
//
// Each has one order of operations, fixed by the row length alone, that the AVX2 versions
// (softmax_avx2.cpp, after cpu_has_avx2_fma()) and the scalar loops here both follow, so the two
// paths give the same bits:
//   max: eight lanes, element j in lane j % 8, every lane seeded with x[0]; a lane takes x[j] only
//        if x[j] > lane (MAXPS's rule: a NaN is never taken, but a NaN x[0] stays); then the lanes
//        combined by the same rule, lane 0 first;
//   sum: eight double lanes, element j added to lane j % 8 in order; then the lanes as
//        ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), the tree the vector halves give.
// The C library's scalar expf made a 1024 x 1000 softmax 3.6x slower than PyTorch's; a scalar
// max and a separate summing pass over the stored terms cost log_softmax another ~25%.
#pragma once

#include <cstdint>
#include <limits>

#include "common/exp_math.h"

namespace fastmlp {

namespace detail {
// softmax_avx2.cpp; only after cpu_has_avx2_fma(). e may be nullptr (the terms are only summed)
// or alias x exactly; dx may alias dy.
float row_max_avx2(const float* x, int64_t n);
double exp_shifted_sum_avx2(float* e, const float* x, float shift, int64_t n);
void log_softmax_backward_row_avx2(float* dx, const float* y, const float* dy, float s, int64_t n);
}  // namespace detail

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
