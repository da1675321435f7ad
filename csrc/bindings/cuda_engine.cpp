// _cuda.Network and _cuda.OptimizerState: the CUDA training engine of engine/network_cuda.h, with
// the methods and argument checks of _core.Network (bind_engine.cpp, engine_bindings.h), so that
// fastmlp.MLP drives either the same way. Parameters and gradients come back as host copies.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/cuda_bindings.h"
#include "bindings/engine_bindings.h"
#include "common/errors.h"
#include "engine/network_cuda.h"

namespace fastmlp::bind {

namespace py = pybind11;

void bind_cuda_engine(py::module_& m) {
  using cuda::DeviceBuffer;
  using CudaNetwork = cuda::Network;
  using CudaOptimizerState = cuda::OptimizerState;

  bind_optimizer_state<CudaOptimizerState>(m,
                                           "One optimizer's hyperparameters, step count and state "
                                           "buffers in device memory (engine/network_cuda.h).");

  py::class_<CudaNetwork> network(m, "Network",
                                  "The CUDA training engine (engine/network_cuda.h). Use "
                                  "fastmlp.MLP(..., device='cuda') instead.");
  bind_network_common<CudaNetwork, CudaOptimizerState>(network);
  network
      .def(
          "train_step_device",
          [](CudaNetwork& net, const DeviceBuffer& x, const DeviceBuffer& y, int64_t n, int loss,
             float label_smoothing, bool training, CudaOptimizerState& optimizer,
             bool targets_checked) {
            const LossKind kind = parse_loss(loss);
            check_label_smoothing(kind, label_smoothing);
            FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
            // On the model's device, which the step makes current: the caller's current device
            // may be another GPU.
            const auto on_model = [&](const DeviceBuffer& buf, int64_t count, size_t elem,
                                      const char* name) {
              return need_on(buf, count, elem, name, net.device(), "the model's device");
            };
            FASTMLP_CHECK(n <= INT64_MAX / std::max(net.in_features(), net.out_features()),
                          "n: ", n, " rows is too many");
            const auto* px =
                static_cast<const float*>(on_model(x, n * net.in_features(), sizeof(float), "x"));
            Targets t;
            if (loss_uses_labels(kind)) {
              t.labels = static_cast<const int64_t*>(on_model(y, n, sizeof(int64_t), "y"));
            } else {
              t.values = static_cast<const float*>(
                  on_model(y, n * net.out_features(), sizeof(float), "y"));
            }
            py::gil_scoped_release release;
            return net.train_step_device(px, t, n, kind, label_smoothing, training, optimizer,
                                         targets_checked);
          },
          py::arg("x"), py::arg("y"), py::arg("n"), py::arg("loss"), py::arg("label_smoothing"),
          py::arg("training"), py::arg("optimizer"), py::arg("targets_checked") = false,
          "train_step on device buffers: x float32 (n, in), y int64 labels (n,) or float32 "
          "targets (n, out), both on this network's device.")
      .def_property(
          "fused", &CudaNetwork::fused,
          [](CudaNetwork& net, bool on) {
            py::gil_scoped_release release;  // waits for a step running in another thread
            net.set_fused(on);
          },
          "Whether the fused narrow-MLP kernels may run (engine/network_cuda.h); on by default.")
      .def("uses_fused", &CudaNetwork::uses_fused, py::arg("training"),
           "Whether a pass in this mode (training: a step or loss_and_gradients) runs the fused "
           "kernels now.")
      .def_property_readonly("device", &CudaNetwork::device);
}

}  // namespace fastmlp::bind
