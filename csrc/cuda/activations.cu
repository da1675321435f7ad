// CUDA activations, elementwise over n floats: y = f(x) and dx = dy * f'(x), the same scalar math
// as the CPU kernels (common/activation_math.h). Skeleton for the "CUDA variants" issue: compiled on
// every machine with nvcc, not yet exposed to Python.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/activation_math.h"

namespace fastmlp::cuda {

__global__ void activation_forward_kernel(float* __restrict__ y, const float* __restrict__ x,
                                          int64_t n, Activation kind, float alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = activation_forward(kind, x[i], alpha);
  }
}

__global__ void activation_backward_kernel(float* dx, const float* __restrict__ x,
                                           const float* __restrict__ y, const float* dy, int64_t n,
                                           Activation kind, float alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    dx[i] = dy[i] * activation_derivative(kind, x[i], y[i], alpha);
  }
}

cudaError_t activation_forward(float* y, const float* x, int64_t n, Activation kind, float alpha,
                               cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  activation_forward_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), threads, 0,
                              stream>>>(y, x, n, kind, alpha);
  return cudaGetLastError();
}

cudaError_t activation_backward(float* dx, const float* x, const float* y, const float* dy,
                                int64_t n, Activation kind, float alpha, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  activation_backward_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), threads, 0,
                               stream>>>(dx, x, y, dy, n, kind, alpha);
  return cudaGetLastError();
}

}  // namespace fastmlp::cuda
