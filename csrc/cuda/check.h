// Error handling for the CUDA backend, shared by the .cu launchers and the _cuda bindings (host
// code only). Every CUDA runtime call goes through check_cuda(); nothing aborts the process.
//   CudaError          -> RuntimeError  (a failed launch, an illegal address, no driver, ...)
//   DeviceOutOfMemory  -> MemoryError   (message names what was being allocated)
// Both carry the CUDA error name and text. Argument errors stay fastmlp::ValueError / TypeError.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

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

// The pool StreamBuffer allocates from: one per device, created on first use, never destroyed
// (it may be needed until the process ends). Not the device's default pool: that one's release
// threshold is 0, so what is freed into it goes back to the OS at the next synchronisation (the
// engine synchronises a few times per step) and every step would map its scratch again. This pool
// keeps what it holds, which is small (partial sums), and the default pool's setting, which other
// libraries in the process may rely on, is left alone.
inline cudaMemPool_t scratch_pool(int device) {
  static std::mutex mutex;
  static std::vector<cudaMemPool_t> pools;  // by device; nullptr until created
  std::lock_guard<std::mutex> lock(mutex);
  if (static_cast<size_t>(device) >= pools.size()) pools.resize(device + 1, nullptr);
  if (pools[device] == nullptr) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    check_cuda(cudaMemPoolCreate(&pool, &props), "cuda: creating the scratch memory pool");
    uint64_t keep_all = UINT64_MAX;
    const cudaError_t status =
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all);
    if (status != cudaSuccess) cudaMemPoolDestroy(pool);
    check_cuda(status, "cuda: setting the scratch pool's release threshold");
    pools[device] = pool;
  }
  return pools[device];
}

// Stream-ordered scratch memory (cudaMallocFromPoolAsync from scratch_pool): allocated and freed
// in the order of `stream`, so a workspace costs no device-wide synchronisation. RAII: freed
// (asynchronously, after the work queued on the stream so far) when it goes out of scope.
class StreamBuffer {
 public:
  StreamBuffer(size_t bytes, cudaStream_t stream, const char* what) : stream_(stream) {
    if (bytes == 0) return;
    int device = 0;
    check_cuda(cudaGetDevice(&device), what);
    const cudaError_t status = cudaMallocFromPoolAsync(&ptr_, bytes, scratch_pool(device), stream);
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
