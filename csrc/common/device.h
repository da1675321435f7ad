// Where a buffer lives and where an op runs. The engine dispatches on it; the CPU and CUDA kernels
// of one op share a signature.
#pragma once

#include <string>

#include "common/errors.h"

namespace fastmlp {

enum class Device : int { CPU = 0, CUDA = 1 };

inline const char* device_name(Device d) {
  return d == Device::CPU ? "cpu" : "cuda";
}

inline Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) return Device::CUDA;
  throw ValueError("device: unknown device '" + name + "'; known: 'cpu', 'cuda'");
}

}  // namespace fastmlp
