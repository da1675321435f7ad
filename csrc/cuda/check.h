// Error handling for the CUDA backend, shared by the .cu launchers and the _cuda bindings (host
// code only). Every CUDA runtime call goes through check_cuda(); nothing aborts the process.
//   CudaError          -> RuntimeError  (a failed launch, an illegal address, no driver, ...)
//   DeviceOutOfMemory  -> MemoryError   (message names what was being allocated)
// Both carry the CUDA error name and text. Argument errors stay fastmlp::ValueError / TypeError.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>

#include "common/errors.h"

namespace fastmlp::cuda {

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct DeviceOutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws for any status but cudaSuccess. `what` says what was being done ("gemm launch",
// "copy to host"). The non-sticky error state is cleared first, so the next call starts clean.
inline void check_cuda(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();
  if (status == cudaErrorMemoryAllocation) {
    throw DeviceOutOfMemory(
        detail::concat(what, ": out of CUDA device memory (", cudaGetErrorString(status), ")"));
  }
  throw CudaError(
      detail::concat(what, ": ", cudaGetErrorName(status), ": ", cudaGetErrorString(status)));
}

// After a <<<...>>> launch: reports a bad configuration or a missing kernel image for this GPU.
// Errors of the running kernel itself surface at the next synchronising call.
inline void check_launch(const char* kernel) {
  check_cuda(cudaGetLastError(), kernel);
}

// Stream-ordered scratch memory (cudaMallocAsync from the device's default pool): allocated and
// freed in the order of `stream`, so a workspace costs no device-wide synchronisation. RAII: freed
// (asynchronously, after the work queued on the stream so far) when it goes out of scope.
class StreamBuffer {
 public:
  StreamBuffer(size_t bytes, cudaStream_t stream, const char* what) : stream_(stream) {
    if (bytes == 0) return;
    const cudaError_t status = cudaMallocAsync(&ptr_, bytes, stream);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw DeviceOutOfMemory(
          detail::concat("cuda: out of device memory allocating ", what, " (", bytes, " bytes)"));
    }
    check_cuda(status, what);
  }
  ~StreamBuffer() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);  // errors here resurface at the next call
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;

  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace fastmlp::cuda
