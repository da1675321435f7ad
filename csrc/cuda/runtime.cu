// Device discovery for fastmlp._cuda. Never throws and never aborts: a missing driver or device is
// reported in DeviceQuery::error, in words a user can act on, with the CUDA error name after it.
#include <cuda_runtime.h>

#include <string>

#include "cuda/runtime.h"

namespace fastmlp::cuda {

namespace {

std::string version_str(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

}  // namespace

DeviceQuery query_devices() {
  DeviceQuery q;
  cudaRuntimeGetVersion(&q.runtime_version);
  if (cudaDriverGetVersion(&q.driver_version) != cudaSuccess) q.driver_version = 0;
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    const std::string code =
        std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    if (status == cudaErrorInsufficientDriver && q.driver_version == 0) {
      q.error = "no NVIDIA driver is installed or loaded (" + code + ")";
    } else if (status == cudaErrorInsufficientDriver) {
      q.error = "the NVIDIA driver supports CUDA " + version_str(q.driver_version) +
                " but fastmlp was built with CUDA " + version_str(q.runtime_version) +
                "; update the driver (" + code + ")";
    } else if (status == cudaErrorNoDevice) {
      q.error = "no CUDA device found (" + code + ")";
    } else {
      q.error = code;
    }
    cudaGetLastError();  // clear the (non-sticky) error so later calls start clean
    return q;
  }
  q.count = count;
  if (count == 0) q.error = "no CUDA device found";
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) == cudaSuccess) {
      q.names.emplace_back(prop.name);
      q.compute_capabilities.push_back(prop.major * 10 + prop.minor);
    } else {
      cudaGetLastError();
      q.names.emplace_back("unknown");
      q.compute_capabilities.push_back(0);
    }
  }
  return q;
}

}  // namespace fastmlp::cuda
