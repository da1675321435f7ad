// CUDA row-wise softmax / log-softmax, forward and backward (contracts: cpu/softmax.h).
//
// Shape legend: x, y, dx, dy are (rows, cols) row-major float32. One warp per row (8 rows per
// block of 256): each lane walks the columns lane, lane + 32, ... and the warp combines its lanes
// with a fixed butterfly (device_util.cuh), so results are the same bits on every run. As on the
// CPU, the row max is subtracted before exp (common/exp_math.h's, the CPU's function) and the row
// sums are taken in double (in another order than the CPU's: results agree to an ulp or so).
// Aliasing: y may alias x, dx may alias dy. Every value a row needs is read before that row is
// written: the reductions finish (with a warp-wide exchange, which orders the lanes) before the
// write loop, and each lane rewrites only the columns it read itself.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/errors.h"
#include "common/exp_math.h"
#include "cuda/check.h"
#include "cuda/device_util.cuh"
#include "cuda/kernels.h"

namespace fastmlp::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

enum class RowOp { Softmax, LogSoftmax, SoftmaxBackward, LogSoftmaxBackward };

__device__ __forceinline__ float row_max(const float* xr, int64_t cols, int lane) {
  float m = -INFINITY;
  for (int64_t j = lane; j < cols; j += kWarp) m = fmaxf(m, xr[j]);
  return warp_max(m);
}

// out = op(in, in2) for the row of each warp. in2 is dy for the backward ops.
template <RowOp kOp>
__global__ void __launch_bounds__(kThreads)
    row_kernel(float* out, const float* in, const float* in2, int64_t rows, int64_t cols) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;  // whole warps leave together: the shuffles below stay full-warp
  const float* a = in + row * cols;
  float* o = out + row * cols;
  if (kOp == RowOp::Softmax) {
    // y = exp(x - m) / sum exp(x - m). NaN in a row makes fmaxf skip it; exp(NaN) then poisons
    // the sum, so the whole row becomes NaN, as on the CPU.
    const float m = row_max(a, cols, lane);
    double s = 0.0;
    for (int64_t j = lane; j < cols; j += kWarp) s += static_cast<double>(expmath::exp(a[j] - m));
    s = warp_sum(s);
    const float inv = static_cast<float>(1.0 / s);
    for (int64_t j = lane; j < cols; j += kWarp) o[j] = expmath::exp(a[j] - m) * inv;
  } else if (kOp == RowOp::LogSoftmax) {
    // y = (x - m) - log sum exp(x - m).
    const float m = row_max(a, cols, lane);
    double s = 0.0;
    for (int64_t j = lane; j < cols; j += kWarp) s += static_cast<double>(expmath::exp(a[j] - m));
    s = warp_sum(s);
    const float log_sum = static_cast<float>(log(s));
    for (int64_t j = lane; j < cols; j += kWarp) o[j] = (a[j] - m) - log_sum;
  } else if (kOp == RowOp::SoftmaxBackward) {
    // dx = y * (dy - sum_j dy_j y_j); in = y, in2 = dy.
    const float* d = in2 + row * cols;
    double dot = 0.0;
    for (int64_t j = lane; j < cols; j += kWarp) dot += static_cast<double>(d[j]) * a[j];
    const float dd = static_cast<float>(warp_sum(dot));
    for (int64_t j = lane; j < cols; j += kWarp) o[j] = a[j] * (d[j] - dd);
  } else {
    // dx = dy - exp(y) * sum_j dy_j; in = y, in2 = dy.
    const float* d = in2 + row * cols;
    double s = 0.0;
    for (int64_t j = lane; j < cols; j += kWarp) s += static_cast<double>(d[j]);
    const float ss = static_cast<float>(warp_sum(s));
    for (int64_t j = lane; j < cols; j += kWarp)
      o[j] = expmath::add_rn(d[j], -expmath::mul_rn(expmath::exp(a[j]), ss));
  }
}

template <RowOp kOp>
void launch(float* out, const float* in, const float* in2, int64_t rows, int64_t cols,
            cudaStream_t stream, const char* what) {
  FASTMLP_CHECK(rows >= 0 && cols >= 0, "rows, cols: expected >= 0, got ", rows, ", ", cols);
  if (rows == 0 || cols == 0) return;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  FASTMLP_CHECK(blocks < (int64_t{1} << 31), "rows: too many rows for one launch, got ", rows);
  row_kernel<kOp><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(out, in, in2, rows, cols);
  check_launch(what);
}

}  // namespace

void softmax_forward(float* y, const float* x, int64_t rows, int64_t cols, cudaStream_t stream) {
  launch<RowOp::Softmax>(y, x, nullptr, rows, cols, stream, "softmax_forward");
}

void log_softmax_forward(float* y, const float* x, int64_t rows, int64_t cols,
                         cudaStream_t stream) {
  launch<RowOp::LogSoftmax>(y, x, nullptr, rows, cols, stream, "log_softmax_forward");
}

void softmax_backward(float* dx, const float* y, const float* dy, int64_t rows, int64_t cols,
                      cudaStream_t stream) {
  launch<RowOp::SoftmaxBackward>(dx, y, dy, rows, cols, stream, "softmax_backward");
}

void log_softmax_backward(float* dx, const float* y, const float* dy, int64_t rows, int64_t cols,
                          cudaStream_t stream) {
  launch<RowOp::LogSoftmaxBackward>(dx, y, dy, rows, cols, stream, "log_softmax_backward");
}

}  // namespace fastmlp::cuda
