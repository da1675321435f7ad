// fastmlp._cuda: built only when nvcc was found. Importing it never fails for want of a GPU or a
// driver (the CUDA runtime is linked statically); device_info() reports what it can see.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda/runtime.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastmlp CUDA kernels";
  m.def("device_info", [] {
    const fastmlp::cuda::DeviceQuery q = fastmlp::cuda::query_devices();
    py::dict info;
    info["device_count"] = q.count;
    info["error"] = q.error;
    info["devices"] = q.names;
    info["compute_capabilities"] = q.compute_capabilities;
    info["runtime_version"] = q.runtime_version;
    info["driver_version"] = q.driver_version;
    return info;
  });
}
