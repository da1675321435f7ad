// Device-side helpers shared by the .cu files: launch sizes and deterministic warp/block
// reductions. Every reduction here combines values in a fixed order that depends only on the launch
// shape (never on timing), and no float atomics are used anywhere in fastmlp's CUDA code: the same
// inputs give the same bits on every run.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fastmlp::cuda {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Blocks for a grid-stride loop over n items: enough to fill any current GPU (132 SMs x 16 blocks
// of 256 threads on an H100), capped so the count fits gridDim.x; each thread loops for the rest.
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  constexpr int64_t kMaxBlocks = int64_t{1} << 16;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

// Butterfly sums and maxima across a warp: every lane ends with the same value, combined in the
// same order on every run.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}

// Sums the values of all threads of a (1-D) block of kThreads threads, in a fixed tree order; the
// result is valid in thread 0. `scratch` is shared memory of kThreads / 32 elements.
template <int kThreads, typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  static_assert(kThreads % kWarp == 0 && kThreads <= 1024, "block_sum: whole warps only");
  v = warp_sum(v);
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = T(0);
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / kWarp; ++w) total += scratch[w];
  }
  return total;
}

}  // namespace fastmlp::cuda
