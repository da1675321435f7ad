// CUDA runtime queries that never abort: a missing driver or device is reported as data.
#pragma once

#include <string>
#include <vector>

namespace fastmlp::cuda {

struct DeviceQuery {
  int count = 0;      // usable devices (0 when there is no driver or no device)
  std::string error;  // why count is 0, empty otherwise
  std::vector<std::string> names;
  std::vector<int> compute_capabilities;  // major * 10 + minor
  int runtime_version = 0;                // e.g. 13000
  int driver_version = 0;                 // 0 when no driver
};

DeviceQuery query_devices();

}  // namespace fastmlp::cuda
