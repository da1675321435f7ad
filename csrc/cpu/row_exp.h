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

// sum_j v[j] in double, element j in lane j % kLanes. Successive add() calls continue the row:
// each must start at a multiple of kLanes of it (all but the last add a multiple of kLanes).
struct LaneSum {
  static constexpr int kLanes = 8;
  double lane[kLanes] = {};
  void add(const float* v, int64_t n) {
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) lane[l] += v[j + l];
    }
    for (int l = 0; j < n; ++j, ++l) lane[l] += v[j];
  }
  double total() const {
    double s = 0.0;
    for (double v : lane) s += v;
    return s;
  }
};

}  // namespace fastmlp
