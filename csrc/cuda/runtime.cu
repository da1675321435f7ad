#include <cuda_runtime.h>

#include "cuda/runtime.h"

namespace fastmlp::cuda {

DeviceQuery query_devices() {
  DeviceQuery q;
  cudaRuntimeGetVersion(&q.runtime_version);
  cudaDriverGetVersion(&q.driver_version);
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    q.error = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return q;
  }
  q.count = count;
  if (count == 0) q.error = "no CUDA device found";
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) == cudaSuccess) {
      q.names.emplace_back(prop.name);
      q.compute_capabilities.push_back(prop.major * 10 + prop.minor);
    }
  }
  return q;
}

}  // namespace fastmlp::cuda
