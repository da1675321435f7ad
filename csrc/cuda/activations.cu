// CUDA activations and the small reductions of backprop (contracts: cpu/activations.h; scalar
// math: common/activation_math.h, the same FASTMLP_HD functions the CPU kernels call).
//
// Shape legend: x, y, dx, dy are n contiguous floats, or (rows, cols) row-major; slope has
// n_slope = 1 or cols elements. Elementwise kernels are grid-stride loops; y may alias x and dx may
// alias dy (each element is read before it is written, by the same thread).
//
// Reductions (column_sum, prelu's dslope) are deterministic and accumulate in double like the CPU:
// rows are cut into chunks whose size depends only on `rows` (chunk_rows_for, as the CPU), a block
// of 32 x 8 threads sums a 32-column strip of one chunk (each thread a fixed row subset, then the
// 8 partials in order), and a second kernel adds the chunk partials in chunk order. The result
// therefore has the same bits on every run (not necessarily the CPU's bits: the order differs).
// The exponentials of elu, sigmoid and tanh are common/exp_math.h's, written with explicit
// roundings (__fmul_rn, __fadd_rn, fmaf) as is tanh's derivative, so elementwise results are
// meant to have the CPU's bits (not yet checked on a GPU: tests/test_cuda.py compares to a
// tolerance).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/activation_math.h"
#include "common/errors.h"
#include "cuda/check.h"
#include "cuda/device_util.cuh"
#include "cuda/kernels.h"

namespace fastmlp::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kStripCols = 32;  // columns per reduction block (one warp wide: coalesced rows)
constexpr int kStripRows = 8;   // thread rows per reduction block
constexpr int64_t kMinChunkRows = 32;
constexpr int64_t kMaxChunks = 64;

int64_t chunk_rows_for(int64_t rows) {
  return std::max(kMinChunkRows, (rows + kMaxChunks - 1) / kMaxChunks);
}

__global__ void activation_forward_kernel(float* y, const float* x, int64_t n, Activation kind,
                                          float alpha) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] = activation_forward(kind, x[i], alpha);
  }
}

__global__ void activation_backward_kernel(float* dx, const float* x, const float* y,
                                           const float* dy, int64_t n, Activation kind,
                                           float alpha) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dx[i] = activation_dx(kind, dy[i], x[i], y[i], alpha);
  }
}

__global__ void prelu_forward_kernel(float* y, const float* x, const float* slope, int64_t rows,
                                     int64_t cols, int64_t n_slope) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float a = n_slope == 1 ? slope[0] : slope[i % cols];
    y[i] = activation_forward(Activation::Prelu, x[i], a);
  }
}

// One (chunk, 32-column strip) of a column reduction: partial[chunk * cols + j] = the double sum
// over the chunk's rows of v(i, j), where v is x (column_sum) or dy * min(x, 0) (prelu, which
// also writes dx = dy * f'(x) for the elements it visits). Block (32, 8); grid (strips, chunks).
template <bool kPrelu>
__global__ void column_partials_kernel(double* partial, float* dx, const float* x,
                                       const float* slope, const float* dy, int64_t rows,
                                       int64_t cols, int64_t n_slope, int64_t chunk_rows) {
  __shared__ double sums[kStripRows][kStripCols];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = int64_t{blockIdx.x} * kStripCols + tx;
  const int64_t r0 = int64_t{blockIdx.y} * chunk_rows;
  const int64_t r1 = std::min(rows, r0 + chunk_rows);
  double acc = 0.0;
  if (col < cols) {
    const float a = kPrelu ? (n_slope == 1 ? slope[0] : slope[col]) : 0.0f;
    for (int64_t r = r0 + ty; r < r1; r += kStripRows) {
      const int64_t at = r * cols + col;
      if (kPrelu) {
        const float xv = x[at];
        const float g = dy[at];
        dx[at] = xv > 0.0f ? g : g * a;  // dx may alias dy: g was read first
        // std::min(xv, 0) as on the CPU: NaN and -0 pass through (fminf would drop a NaN).
        const float negative_part = 0.0f < xv ? 0.0f : xv;
        acc += static_cast<double>(g) * static_cast<double>(negative_part);
      } else {
        acc += static_cast<double>(x[at]);
      }
    }
  }
  sums[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && col < cols) {
    double total = 0.0;
    for (int t = 0; t < kStripRows; ++t) total += sums[t][tx];
    partial[int64_t{blockIdx.y} * cols + col] = total;
  }
}

// totals[j] = sum over chunks (in chunk order) of partial[c * cols + j]; out[j] = float(totals[j])
// when out is given.
__global__ void column_finish_kernel(float* out, double* totals, const double* partial,
                                     int64_t n_chunks, int64_t cols) {
  for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < cols;
       j += int64_t{gridDim.x} * blockDim.x) {
    double s = 0.0;
    for (int64_t c = 0; c < n_chunks; ++c) s += partial[c * cols + j];
    totals[j] = s;
    if (out != nullptr) out[j] = static_cast<float>(s);
  }
}

// out[0] = float(sum_j totals[j]), one block, fixed order (the shared-slope dslope).
__global__ void sum_all_kernel(float* out, const double* totals, int64_t n) {
  __shared__ double scratch[kThreads / kWarp];
  double acc = 0.0;
  for (int64_t j = threadIdx.x; j < n; j += kThreads) acc += totals[j];
  const double total = block_sum<kThreads>(acc, scratch);
  if (threadIdx.x == 0) out[0] = static_cast<float>(total);
}

// The two-pass column reduction shared by column_sum and prelu_backward.
template <bool kPrelu>
void column_reduce(float* out, float* dx, const float* x, const float* slope, const float* dy,
                   int64_t rows, int64_t cols, int64_t n_slope, cudaStream_t stream,
                   const char* what) {
  const int64_t chunk = chunk_rows_for(rows);
  const int64_t n_chunks = (rows + chunk - 1) / chunk;
  StreamBuffer work(static_cast<size_t>((n_chunks + 1) * cols) * sizeof(double), stream, what);
  double* partial = work.as<double>();
  double* totals = partial + n_chunks * cols;
  const dim3 block(kStripCols, kStripRows);
  const dim3 grid(static_cast<unsigned>((cols + kStripCols - 1) / kStripCols),
                  static_cast<unsigned>(n_chunks));
  column_partials_kernel<kPrelu>
      <<<grid, block, 0, stream>>>(partial, dx, x, slope, dy, rows, cols, n_slope, chunk);
  check_launch(what);
  const bool shared_slope = kPrelu && n_slope == 1;
  column_finish_kernel<<<grid_for(cols, kThreads), kThreads, 0, stream>>>(
      shared_slope ? nullptr : out, totals, partial, n_chunks, cols);
  check_launch(what);
  if (shared_slope) {
    sum_all_kernel<<<1, kThreads, 0, stream>>>(out, totals, cols);
    check_launch(what);
  }
}

}  // namespace

// y = f(x) over n floats; y may alias x.
void activation_forward(float* y, const float* x, int64_t n, Activation kind, float alpha,
                        cudaStream_t stream) {
  FASTMLP_CHECK(n >= 0, "n: expected >= 0, got ", n);
  if (n == 0) return;
  activation_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(y, x, n, kind, alpha);
  check_launch("activation_forward");
}

// dx = dy * f'(x), given y = f(x); overwrites dx, which may alias dy.
void activation_backward(float* dx, const float* x, const float* y, const float* dy, int64_t n,
                         Activation kind, float alpha, cudaStream_t stream) {
  FASTMLP_CHECK(n >= 0, "n: expected >= 0, got ", n);
  if (n == 0) return;
  activation_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dx, x, y, dy, n, kind,
                                                                             alpha);
  check_launch("activation_backward");
}

// y[i, j] = x[i, j] if x > 0 else slope[j or 0] * x[i, j]; y may alias x.
void prelu_forward(float* y, const float* x, const float* slope, int64_t rows, int64_t cols,
                   int64_t n_slope, cudaStream_t stream) {
  FASTMLP_CHECK(n_slope == 1 || n_slope == cols, "slope: expected 1 or ", cols, " elements, got ",
                n_slope);
  if (rows <= 0 || cols <= 0) return;
  prelu_forward_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(y, x, slope, rows,
                                                                                 cols, n_slope);
  check_launch("prelu_forward");
}

// dx = dy * f'(x); dslope[j] = sum of dy * min(x, 0) over the elements using slope j (overwritten).
void prelu_backward(float* dx, float* dslope, const float* x, const float* slope, const float* dy,
                    int64_t rows, int64_t cols, int64_t n_slope, cudaStream_t stream) {
  FASTMLP_CHECK(n_slope == 1 || n_slope == cols, "slope: expected 1 or ", cols, " elements, got ",
                n_slope);
  if (rows <= 0 || cols <= 0) {
    check_cuda(cudaMemsetAsync(dslope, 0, static_cast<size_t>(n_slope) * sizeof(float), stream),
               "prelu_backward: zero dslope");
    return;
  }
  column_reduce<true>(dslope, dx, x, slope, dy, rows, cols, n_slope, stream, "prelu_backward");
}

// out[j] = sum_i x[i, j] (double accumulation, fixed order); overwrites out.
void column_sum(float* out, const float* x, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (cols <= 0) return;
  if (rows <= 0) {
    check_cuda(cudaMemsetAsync(out, 0, static_cast<size_t>(cols) * sizeof(float), stream),
               "column_sum: zero out");
    return;
  }
  column_reduce<false>(out, nullptr, x, nullptr, nullptr, rows, cols, cols, stream, "column_sum");
}

}  // namespace fastmlp::cuda
