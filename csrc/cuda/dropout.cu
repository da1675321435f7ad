// CUDA inverted dropout (contract: cpu/dropout.h), with the counter-based Philox4x32-10 mapping of
// common/random.h, so a (seed, offset) gives the same mask on the CPU, the GPU and in
// fastmlp.reference.dropout_mask, bit for bit:
//   element i of a call has global index j = offset + i (mod 2^64), Philox counter j >> 2, word j &
//   3, u = (r >> 8) * 2^-24, kept iff u >= p, scale = 1.0f / (1.0f - p) in float as the CPU
//   computes it; kept: y = x * scale (one float multiply: the same rounding on both devices);
//   dropped: y = +0.0 exactly, even where x is NaN or inf (as the CPU). p == 0 copies.
// x, y, dx, dy, mask are n contiguous floats; y may alias x and dx may alias dy.
// Each thread owns one Philox counter c, i.e. the (up to) four elements 4c .. 4c + 3 of the global
// index space that fall inside [offset, offset + n): one Philox call per four elements, as the CPU.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/errors.h"
#include "common/random.h"
#include "cuda/check.h"
#include "cuda/device_util.cuh"
#include "cuda/kernels.h"

namespace fastmlp::cuda {
namespace {

constexpr int kThreads = 256;
constexpr uint64_t kCounterMask = ~uint64_t{0} >> 2;  // counters are j >> 2 < 2^62

enum class DropoutOut { Apply, Mask };

// groups = number of Philox counters touched: from c0 = offset >> 2 to (offset + n - 1) >> 2.
template <DropoutOut kOut>
__global__ void dropout_kernel(float* out, const float* in, int64_t n, float p, float scale,
                               uint64_t seed, uint64_t offset, int64_t groups) {
  const uint64_t c0 = offset >> 2;
  for (int64_t gidx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; gidx < groups;
       gidx += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t c = (c0 + static_cast<uint64_t>(gidx)) & kCounterMask;  // j >> 2 wraps mod 2^62
    const Philox4x32Block r = philox_block(seed, c);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      // Element index i = j - offset for j = 4c + w (mod 2^64); in range iff i < n.
      const uint64_t j = (c << 2) + static_cast<uint64_t>(w);
      const uint64_t i = j - offset;
      if (i >= static_cast<uint64_t>(n)) continue;
      const bool keep = uniform_from_bits(r.x[w]) >= p;
      if (kOut == DropoutOut::Apply) {
        out[i] = keep ? in[i] * scale : 0.0f;
      } else {
        out[i] = keep ? scale : 0.0f;
      }
    }
  }
}

float keep_scale(float p) {
  FASTMLP_CHECK(p >= 0.0f && p < 1.0f, "p: expected a drop probability in [0, 1), got ", p);
  return 1.0f / (1.0f - p);  // float, as cpu/dropout.cpp: the same scale bits on both devices
}

template <DropoutOut kOut>
void launch(float* out, const float* in, int64_t n, float p, uint64_t seed, uint64_t offset,
            cudaStream_t stream, const char* what) {
  FASTMLP_CHECK(n >= 0, "n: expected >= 0, got ", n);
  const float scale = keep_scale(p);
  if (n == 0) return;
  if (kOut == DropoutOut::Apply && p == 0.0f) {  // as the CPU: a plain copy
    if (out != in) {
      check_cuda(cudaMemcpyAsync(out, in, static_cast<size_t>(n) * sizeof(float),
                                 cudaMemcpyDeviceToDevice, stream),
                 what);
    }
    return;
  }
  // Counters from offset >> 2 to (offset + n - 1) >> 2 (with wrap-around of the 64-bit index,
  // the difference below is still the count: unsigned arithmetic mod 2^64).
  const uint64_t last = offset + static_cast<uint64_t>(n - 1);
  const int64_t groups = static_cast<int64_t>(((last >> 2) - (offset >> 2)) & kCounterMask) + 1;
  dropout_kernel<kOut><<<grid_for(groups, kThreads), kThreads, 0, stream>>>(out, in, n, p, scale,
                                                                            seed, offset, groups);
  check_launch(what);
}

}  // namespace

void dropout_forward(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t offset,
                     cudaStream_t stream) {
  launch<DropoutOut::Apply>(y, x, n, p, seed, offset, stream, "dropout_forward");
}

void dropout_backward(float* dx, const float* dy, int64_t n, float p, uint64_t seed,
                      uint64_t offset, cudaStream_t stream) {
  launch<DropoutOut::Apply>(dx, dy, n, p, seed, offset, stream, "dropout_backward");
}

void dropout_mask(float* mask, int64_t n, float p, uint64_t seed, uint64_t offset,
                  cudaStream_t stream) {
  launch<DropoutOut::Mask>(mask, nullptr, n, p, seed, offset, stream, "dropout_mask");
}

}  // namespace fastmlp::cuda
