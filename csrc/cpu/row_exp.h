// Row exponentials shared by softmax.cpp and losses.cpp: exp(x - shift) over a row with
// common/exp_math.h's exp (eight lanes in softmax_avx2.cpp when the CPU has AVX2, the scalar
// function otherwise: the same bits), and row sums in eight double lanes (element j to lane
// j % 8, then the lanes in order), an order that depends only on the row length and that the
// compiler vectorises. The C library's scalar expf made a 1024 x 1000 softmax 3.6x slower than
// PyTorch's.
#pragma once

#include <cstdint>

#include "common/exp_math.h"

namespace fastmlp {

namespace detail {
// softmax_avx2.cpp; only after cpu_has_avx2_fma(). e may alias x exactly; dx may alias dy.
void exp_shifted_avx2(float* e, const float* x, float shift, int64_t n);
void log_softmax_backward_row_avx2(float* dx, const float* y, const float* dy, float s, int64_t n);
}  // namespace detail

// e[j] = exp(x[j] - shift) for j < n; e may alias x exactly. avx2 = cpu_has_avx2_fma().
inline void exp_shifted(float* e, const float* x, float shift, int64_t n, bool avx2) {
  if (avx2) {
    detail::exp_shifted_avx2(e, x, shift, n);
    return;
  }
  for (int64_t j = 0; j < n; ++j) e[j] = expmath::exp(x[j] - shift);
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
    double s = 0.0;
    for (double v : lane) s += v;
    return s;
  }
};

// sum_j exp(x[j] - shift) for j < n, in LaneSum's order (so that it equals summing the terms
// exp_shifted writes), through a stack buffer: x is only read.
inline double exp_shifted_sum(const float* x, float shift, int64_t n, bool avx2) {
  constexpr int64_t kChunk = 256;
  static_assert(kChunk % LaneSum::kLanes == 0, "a chunk must end on a lane boundary");
  LaneSum sum;
  float terms[kChunk];
  for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
    const int64_t count = n - j0 < kChunk ? n - j0 : kChunk;
    exp_shifted(terms, x + j0, shift, count, avx2);
    sum.add(terms, count);
  }
  return sum.total();
}

}  // namespace fastmlp
