// Owning device memory for the _cuda module: DeviceBuffer is the RAII object behind
// fastmlp.cuda.DeviceArray (one cudaMalloc, freed in the destructor, move-only). Host code only.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/errors.h"
#include "cuda/check.h"

namespace fastmlp::cuda {

class DeviceBuffer {
 public:
  // nbytes of device memory on the current device; `what` names the allocation in the
  // MemoryError ("cuda: out of device memory allocating x (4000000 bytes; 1024 bytes free)").
  DeviceBuffer(size_t nbytes, const std::string& what) : nbytes_(nbytes) {
    check_cuda(cudaGetDevice(&device_), "cuda: cudaGetDevice");
    if (nbytes == 0) return;
    const cudaError_t status = cudaMalloc(&ptr_, nbytes);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      cudaGetLastError();
      throw DeviceOutOfMemory(detail::concat("cuda: out of device memory allocating ", what, " (",
                                             nbytes, " bytes; ", free_bytes, " of ", total_bytes,
                                             " bytes free)"));
    }
    check_cuda(status, ("cuda: allocating " + what).c_str());
  }
  ~DeviceBuffer() {
    // cudaFree synchronises the device, so no kernel still uses the memory. Its error (e.g. at
    // interpreter exit, after the runtime unloaded) cannot be raised from a destructor; clear it.
    if (ptr_ != nullptr && cudaFree(ptr_) != cudaSuccess) cudaGetLastError();
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t nbytes() const { return nbytes_; }
  int device() const { return device_; }

 private:
  void* ptr_ = nullptr;
  size_t nbytes_ = 0;
  int device_ = 0;
};

}  // namespace fastmlp::cuda
