// Shared by the _cuda module's binding files (cuda_module.cpp, cuda_ops.cpp, cuda_engine.cpp).
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>

#include "common/errors.h"
#include "cuda/check.h"
#include "cuda/memory.h"

namespace fastmlp::bind {

// Last line of defence for the device ops (fastmlp.cuda / fastmlp.ops check shapes first): the
// buffer must hold `count` elements of `elem` bytes and live on `device` (`device_role` says which
// device that is, for the message).
inline void* need_on(const cuda::DeviceBuffer& buf, int64_t count, size_t elem, const char* name,
                     int device, const char* device_role) {
  FASTMLP_CHECK(count >= 0, name, ": negative size ", count);
  // count * elem must not wrap: a wrapped size would let a too-small buffer through.
  FASTMLP_CHECK(static_cast<uint64_t>(count) <= SIZE_MAX / elem, name, ": size ", count,
                " is too large");
  const size_t bytes = static_cast<size_t>(count) * elem;
  FASTMLP_CHECK(buf.nbytes() >= bytes, name, ": device buffer holds ", buf.nbytes(),
                " bytes, the op needs ", bytes);
  FASTMLP_CHECK(buf.device() == device, name, ": lives on cuda:", buf.device(), " but ",
                device_role, " is cuda:", device);
  return buf.data();
}

// need_on() for the current device, where the device ops run.
inline void* need(const cuda::DeviceBuffer& buf, int64_t count, size_t elem, const char* name) {
  int device = 0;
  cuda::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  return need_on(buf, count, elem, name, device, "the current device");
}

inline float* need_f32(const cuda::DeviceBuffer& buf, int64_t count, const char* name) {
  return static_cast<float*>(need(buf, count, sizeof(float), name));
}

void bind_cuda_ops(pybind11::module_& m);
void bind_cuda_engine(pybind11::module_& m);  // cuda_engine.cpp

}  // namespace fastmlp::bind
