// Elementwise activations, PReLU and column sums (the bias gradient), CPU.
//
// Shape legend: n = number of elements of a flat buffer; (rows, cols) = a row-major matrix.
// The scalar math lives in common/activation_math.h so that the GEMM epilogue and the CUDA kernels
// compute exactly the same function; this file only adds the loops, the threading and the
// deterministic reductions.
//
// Threading: every loop asks threads_for(work, grain) how many threads are worth it, and runs
// inline (no OpenMP region at all) when the answer is 1. Elementwise results do not depend on how
// the range is split; the reductions (prelu dslope, column_sum) split the rows into chunks whose
// size depends only on rows, never on the thread count, and combine the chunks in index order,
// so their results are bit-identical for every set_num_threads.
#include "cpu/activations.h"

#include <algorithm>
#include <type_traits>

#include "common/errors.h"
#include "common/scratch.h"
#include "common/threading.h"
#include "cpu/activations_avx2.h"
#include "cpu/cpu_features.h"

namespace fastmlp {

namespace {

// Elements per thread below which another thread does not pay for itself. A parallel region costs
// ~1-5 us to open; a compare-and-select runs at ~1 element/ns per core, elu/sigmoid/tanh at
// ~0.7-1.1 ns per element with AVX2 (common/exp_math.h on eight lanes; 1024 x 256 on one thread)
// and ~5-10 ns in the scalar loop, so these grains give each thread >= ~10-30 us of work.
// Estimates from those per-element costs, not tuned on a quiet machine.
constexpr int64_t kCheapGrain = int64_t{1} << 15;  // identity, relu, leaky_relu, prelu, sums
constexpr int64_t kTranscendentalGrain = int64_t{1} << 14;        // elu, sigmoid, tanh (AVX2)
constexpr int64_t kScalarTranscendentalGrain = int64_t{1} << 12;  // the same, scalar loop

// Rows per reduction chunk: at least kMinChunkRows (so a chunk is worth a partial-sum row), and at
// most kMaxChunks chunks (so the partial sums stay small: kMaxChunks * cols doubles). Depends only
// on rows, which keeps the summation order independent of the thread count.
constexpr int64_t kMinChunkRows = 32;
constexpr int64_t kMaxChunks = 64;

// Double accumulators for a shared PReLU slope: one per AVX2 float lane (see prelu_backward_row).
constexpr int64_t kPreluLanes = 8;

int64_t chunk_rows_for(int64_t rows) {
  return std::max(kMinChunkRows, (rows + kMaxChunks - 1) / kMaxChunks);
}

bool is_transcendental(Activation kind) {
  return kind == Activation::Elu || kind == Activation::Sigmoid || kind == Activation::Tanh;
}

int64_t transcendental_grain() {
  return cpu_has_avx2_fma() ? kTranscendentalGrain : kScalarTranscendentalGrain;
}

// Calls f(std::integral_constant<Activation, K>{}) for the run-time kind, so that each loop below
// is compiled once per activation with the switch of activation_math.h folded away (and the cheap
// kinds vectorized).
template <typename F>
void dispatch(Activation kind, const F& f) {
  using A = Activation;
  switch (kind) {
    case A::Identity:
      return f(std::integral_constant<A, A::Identity>{});
    case A::Relu:
      return f(std::integral_constant<A, A::Relu>{});
    case A::LeakyRelu:
      return f(std::integral_constant<A, A::LeakyRelu>{});
    case A::Prelu:
      return f(std::integral_constant<A, A::Prelu>{});
    case A::Elu:
      return f(std::integral_constant<A, A::Elu>{});
    case A::Sigmoid:
      return f(std::integral_constant<A, A::Sigmoid>{});
    case A::Tanh:
      return f(std::integral_constant<A, A::Tanh>{});
  }
  throw ValueError(detail::concat("kind: unknown activation enum value ", static_cast<int>(kind)));
}

}  // namespace

// y[i] = f(x[i]) for i < n; x, y flat float32 (any shape). Overwrites y; y may alias x exactly
// (each element is read before it is written), partial overlap is not allowed.
void activation_forward(float* y, const float* x, int64_t n, Activation kind, float alpha) {
  if (n <= 0) return;
  const int nt = threads_for(n, is_transcendental(kind) ? transcendental_grain() : kCheapGrain);
  // identity: the loop below is a copy; the others run on eight lanes in activations_avx2.cpp.
  if (cpu_has_avx2_fma() && kind != Activation::Identity) {
    // Bit-identical to the loop below.
    parallel_ranges(n, nt, [&](int64_t begin, int64_t end) {
      detail::activation_forward_avx2(y, x, begin, end, kind, alpha);
    });
    return;
  }
  dispatch(kind, [&](auto k) {
    constexpr Activation K = decltype(k)::value;
    parallel_ranges(n, nt, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = activation_forward(K, x[i], alpha);
    });
  });
}

// dx[i] = dy[i] * f'(x[i]) with f'(x) computed from x and y = f(x) (activation_math.h). Overwrites
// dx; dx may alias dy exactly. x and y are only read (y is ignored by the kinds that use x only).
void activation_backward(float* dx, const float* x, const float* y, const float* dy, int64_t n,
                         Activation kind, float alpha) {
  if (n <= 0) return;
  // elu's derivative evaluates e^x; sigmoid's and tanh's reuse y.
  const int nt = threads_for(n, kind == Activation::Elu ? transcendental_grain() : kCheapGrain);
  if (cpu_has_avx2_fma() && (kind == Activation::Relu || kind == Activation::LeakyRelu ||
                             kind == Activation::Prelu || kind == Activation::Elu)) {
    // Bit-identical to the loop below (see activations_avx2.cpp for why it is needed).
    parallel_ranges(n, nt, [&](int64_t begin, int64_t end) {
      detail::activation_backward_avx2(dx, x, y, dy, begin, end, kind, alpha);
    });
    return;
  }
  dispatch(kind, [&](auto k) {
    constexpr Activation K = decltype(k)::value;
    parallel_ranges(n, nt, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        // Vectorized for identity/sigmoid/tanh; a branch per element for the sign-tested kinds
        // (see activations_avx2.cpp), which is why those take the AVX2 path when they can.
        dx[i] = activation_dx(K, dy[i], x[i], y[i], alpha);
      }
    });
  });
}

namespace {

// One row of PReLU, scalar: y = x > 0 ? x : slope * x, slope[0] or slope[j].
void prelu_forward_row(float* yr, const float* xr, const float* slope, int64_t cols,
                       int64_t n_slope) {
  if (n_slope == 1) {
    const float a = slope[0];
    for (int64_t j = 0; j < cols; ++j) yr[j] = xr[j] > 0.0f ? xr[j] : a * xr[j];
  } else {
    for (int64_t j = 0; j < cols; ++j) yr[j] = xr[j] > 0.0f ? xr[j] : slope[j] * xr[j];
  }
}

// One row of PReLU backward, scalar: dx = x > 0 ? dy : dy * slope, and the dslope terms
// dy * min(x, 0), which are exact in double (24-bit by 24-bit significands). For a per-column
// slope, acc has cols entries and term j goes to acc[j]. For a shared slope, acc has 8 lanes:
// term j < cols8 = cols - cols % 8 goes to lane j % 8 and tail term cols8 + t to lane t, which is
// the order of the AVX2 path, so both paths add the same numbers in the same order.
void prelu_backward_row(float* dxr, double* acc, const float* xr, const float* slope,
                        const float* dyr, int64_t cols, int64_t n_slope) {
  if (n_slope == 1) {
    const float a = slope[0];
    const int64_t cols8 = cols - cols % kPreluLanes;
    for (int64_t j = 0; j < cols; ++j) {
      const float xv = xr[j];
      const float g = dyr[j];
      dxr[j] = xv > 0.0f ? g : g * a;
      const int64_t lane = j < cols8 ? j % kPreluLanes : j - cols8;
      acc[lane] += static_cast<double>(g) * static_cast<double>(std::min(xv, 0.0f));
    }
  } else {
    for (int64_t j = 0; j < cols; ++j) {
      const float xv = xr[j];
      const float g = dyr[j];
      dxr[j] = xv > 0.0f ? g : g * slope[j];
      acc[j] += static_cast<double>(g) * static_cast<double>(std::min(xv, 0.0f));
    }
  }
}

// The eight lanes of a shared-slope dslope, added in a fixed order.
double sum_lanes(const double* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

}  // namespace

// y[i, j] = x[i, j] if x[i, j] > 0 else slope[j or 0] * x[i, j]; x, y (rows, cols) row-major,
// slope has n_slope = 1 (shared) or cols (per column) elements. Overwrites y; y may alias x.
void prelu_forward(float* y, const float* x, const float* slope, int64_t rows, int64_t cols,
                   int64_t n_slope) {
  if (rows <= 0 || cols <= 0) return;
  const int nt = threads_for(rows * cols, kCheapGrain);
  const bool avx2 = cpu_has_avx2_fma();
  parallel_ranges(rows, nt, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      if (avx2) {
        detail::prelu_forward_row_avx2(y + i * cols, x + i * cols, slope, cols, n_slope);
      } else {
        prelu_forward_row(y + i * cols, x + i * cols, slope, cols, n_slope);
      }
    }
  });
}

// dx[i, j] = dy[i, j] * (1 if x[i, j] > 0 else slope[j or 0]);
// dslope[s] = sum over the elements (i, j) that use slope s of dy[i, j] * min(x[i, j], 0).
// Shapes as prelu_forward; dslope has n_slope elements. Overwrites dx and dslope (no accumulation);
// dx may alias dy. The dslope terms are summed in double per fixed row chunk (in lanes for a
// shared slope), then the chunks are added in order, so dslope does not depend on the thread
// count, and the AVX2 and scalar rows give the same bits.
void prelu_backward(float* dx, float* dslope, const float* x, const float* slope, const float* dy,
                    int64_t rows, int64_t cols, int64_t n_slope) {
  for (int64_t s = 0; s < n_slope; ++s) dslope[s] = 0.0f;
  if (rows <= 0 || cols <= 0) return;
  const int64_t chunk = chunk_rows_for(rows);
  const int64_t n_chunks = (rows + chunk - 1) / chunk;
  const int64_t width = n_slope == 1 ? kPreluLanes : n_slope;  // accumulators per chunk
  double* partial = thread_scratch_doubles(static_cast<size_t>(n_chunks * width));
  std::fill(partial, partial + n_chunks * width, 0.0);
  const int nt =
      static_cast<int>(std::min<int64_t>(threads_for(rows * cols, kCheapGrain), n_chunks));
  const bool avx2 = cpu_has_avx2_fma();
  parallel_ranges(n_chunks, nt, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double* acc = partial + c * width;
      const int64_t r_end = std::min(rows, (c + 1) * chunk);
      for (int64_t i = c * chunk; i < r_end; ++i) {
        const int64_t off = i * cols;
        if (avx2) {
          detail::prelu_backward_row_avx2(dx + off, acc, x + off, slope, dy + off, cols, n_slope);
        } else {
          prelu_backward_row(dx + off, acc, x + off, slope, dy + off, cols, n_slope);
        }
      }
    }
  });
  if (n_slope == 1) {
    double total = 0.0;
    for (int64_t c = 0; c < n_chunks; ++c) total += sum_lanes(partial + c * width);
    dslope[0] = static_cast<float>(total);
    return;
  }
  for (int64_t s = 0; s < n_slope; ++s) {
    double total = 0.0;
    for (int64_t c = 0; c < n_chunks; ++c) total += partial[c * width + s];
    dslope[s] = static_cast<float>(total);
  }
}

// out[j] = sum_i x[i, j]; x (rows, cols) row-major, out (cols,). Overwrites out; out must not
// overlap x. Summed in double within fixed row chunks (vertical adds, so the inner loop over j
// vectorizes), then the chunks are added in index order: the result is the same for every thread
// count.
void column_sum(float* out, const float* x, int64_t rows, int64_t cols, int64_t ld) {
  if (cols <= 0) return;
  if (rows <= 0) {
    std::fill(out, out + cols, 0.0f);
    return;
  }
  const int64_t chunk = chunk_rows_for(rows);
  const int64_t n_chunks = (rows + chunk - 1) / chunk;
  double* partial = thread_scratch_doubles(static_cast<size_t>(n_chunks * cols));
  std::fill(partial, partial + n_chunks * cols, 0.0);
  const int nt =
      static_cast<int>(std::min<int64_t>(threads_for(rows * cols, kCheapGrain), n_chunks));
  const bool avx2 = cpu_has_avx2_fma();
  parallel_ranges(n_chunks, nt, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double* FASTMLP_RESTRICT acc = partial + c * cols;
      const int64_t r0 = c * chunk, r_end = std::min(rows, r0 + chunk);
      if (avx2) {
        detail::column_sum_rows_avx2(acc, x + r0 * ld, r_end - r0, cols, ld);
        continue;
      }
      for (int64_t i = r0; i < r_end; ++i) {
        const float* FASTMLP_RESTRICT xr = x + i * ld;
        for (int64_t j = 0; j < cols; ++j) acc[j] += static_cast<double>(xr[j]);
      }
    }
  });
  // The final pass reads n_chunks * cols doubles; split over columns, each column's order is fixed.
  parallel_ranges(cols, threads_for(n_chunks * cols, kCheapGrain), [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      double total = 0.0;
      for (int64_t c = 0; c < n_chunks; ++c) total += partial[c * cols + j];
      out[j] = static_cast<float>(total);
    }
  });
}

}  // namespace fastmlp
