// Row-wise softmax and log-softmax, forward and backward, CPU.
//
// Shape legend: x, y, dx, dy are (rows, cols) row-major float32; every row is independent, so the
// rows are split across threads and the result does not depend on the thread count. Row sums are
// taken in double (a row of 10^5 probabilities summed in float would lose ~3 digits).
// Stability: the row max m is subtracted before exp, so exp never overflows and the largest term is
// exactly 1, which also keeps the sum >= 1 (no division by zero, no log of 0).
// The row max, exp and the row sums: cpu/row_exp.h.
#include "cpu/softmax.h"

#include <algorithm>
#include <cmath>

#include "common/threading.h"
#include "cpu/cpu_features.h"
#include "cpu/row_exp.h"

namespace fastmlp {

namespace {

// Elements per thread: ~1 ns each with AVX2 (~5 ns in the scalar loop), so 16384 elements are
// ~15 us of work, above the ~1-5 us cost of opening a parallel region (and a worker's wake-up).
// An estimate from those costs, not a tuned value.
constexpr int64_t kRowGrain = int64_t{1} << 14;

}  // namespace

// y[i, j] = exp(x[i, j] - m_i) / sum_k exp(x[i, k] - m_i), m_i = max_k x[i, k].
// Overwrites y; y may alias x (each row is read for its max before it is overwritten).
void softmax_forward(float* y, const float* x, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  const bool avx2 = cpu_has_avx2_fma();
  parallel_ranges(rows, threads_for(rows * cols, kRowGrain), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const float* xr = x + i * cols;
      float* yr = y + i * cols;
      const float m = row_max(xr, cols, avx2);
      const float inv = static_cast<float>(1.0 / exp_shifted_sum(yr, xr, m, cols, avx2));
      for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
    }
  });
}

// y[i, j] = (x[i, j] - m_i) - log sum_k exp(x[i, k] - m_i). Subtracting m_i first keeps y exact
// for large logits (x - (m + log s) would round m + log s at the scale of m).
// Overwrites y; y may alias x. Rows go in blocks of about 32 KiB (the L1d): the block's maxes and
// sums first, then the logs of all its sums in one loop (log_of_sums: four lanes with AVX2), then
// its rows are written while still in the cache. Pipelined in a loop of their own, the logs cost
// less than one per row between the rows' other work (4096 x 10 on one thread: 1.2x faster); a
// block larger than the cache made 1024 x 1000 on two threads 0.88x slower (x read twice from
// memory). Each row's values do not depend on the blocking.
void log_softmax_forward(float* y, const float* x, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  constexpr int64_t kBlockFloats = 8192;
  constexpr int64_t kMaxBlockRows = 256;
  const int64_t block = std::clamp<int64_t>(kBlockFloats / cols, 1, kMaxBlockRows);
  const bool avx2 = cpu_has_avx2_fma();
  parallel_ranges(rows, threads_for(rows * cols, kRowGrain), [&](int64_t r0, int64_t r1) {
    float maxes[kMaxBlockRows];
    double logs[kMaxBlockRows];
    for (int64_t b0 = r0; b0 < r1; b0 += block) {
      const int64_t n = std::min(block, r1 - b0);
      int64_t i = 0;
      if (avx2 && cols <= kNarrowRowMax) {
        for (; i + 8 <= n; i += 8) {
          detail::narrow_rows_max_sum_avx2(x + (b0 + i) * cols, cols, maxes + i, logs + i);
          for (int64_t r = i; r < i + 8; ++r) logs[r] = canonical_nan(logs[r]);
        }
      }
      for (; i < n; ++i) {
        const float* xr = x + (b0 + i) * cols;
        maxes[i] = row_max(xr, cols, avx2);
        // The terms are only summed (no e): y may alias x, which is still needed below.
        logs[i] = exp_shifted_sum(nullptr, xr, maxes[i], cols, avx2);
      }
      log_of_sums(logs, logs, n, avx2);
      for (int64_t i = 0; i < n; ++i) {
        const float* xr = x + (b0 + i) * cols;
        float* yr = y + (b0 + i) * cols;
        const float m = maxes[i];
        const float log_sum = static_cast<float>(logs[i]);
        for (int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - m) - log_sum;
      }
    }
  });
}

// Given y = softmax(x): dx[i, j] = y[i, j] * (dy[i, j] - sum_k dy[i, k] y[i, k]).
// Overwrites dx; dx may alias dy (the row dot product is taken before the row is written).
void softmax_backward(float* dx, const float* y, const float* dy, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  // No transcendental here: two multiply-adds per element (~0.3 ns), so a larger grain.
  parallel_ranges(rows, threads_for(rows * cols, int64_t{1} << 15), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const float* yr = y + i * cols;
      const float* dyr = dy + i * cols;
      float* dxr = dx + i * cols;
      // In LaneSum's eight lanes, which the compiler vectorises (one running sum is a chain of
      // dependent adds).
      LaneSum dot;
      dot.add_terms(cols, [=](int64_t j) { return static_cast<double>(dyr[j]) * yr[j]; });
      const float d = static_cast<float>(dot.total());
      for (int64_t j = 0; j < cols; ++j) dxr[j] = yr[j] * (dyr[j] - d);
    }
  });
}

// Given y = log_softmax(x): dx[i, j] = dy[i, j] - exp(y[i, j]) * sum_k dy[i, k].
// Overwrites dx; dx may alias dy.
void log_softmax_backward(float* dx, const float* y, const float* dy, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  const bool avx2 = cpu_has_avx2_fma();
  parallel_ranges(rows, threads_for(rows * cols, kRowGrain), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const float* yr = y + i * cols;
      const float* dyr = dy + i * cols;
      float* dxr = dx + i * cols;
      LaneSum sum;
      sum.add(dyr, cols);
      const float s = static_cast<float>(sum.total());
      if (avx2) {
        detail::log_softmax_backward_row_avx2(dxr, yr, dyr, s, cols);
      } else {
        for (int64_t j = 0; j < cols; ++j) dxr[j] = dyr[j] - expmath::exp(yr[j]) * s;
      }
    }
  });
}

}  // namespace fastmlp
