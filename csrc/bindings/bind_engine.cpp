// _core.Network and _core.OptimizerState: the training engine of engine/network.h on NumPy arrays.
// fastmlp.nn converts and checks first; every argument is checked again here (dtype, shape, label
// range, batch > 0), then the GIL is released around the engine call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "bindings/engine_bindings.h"
#include "common/errors.h"
#include "engine/network.h"
#include "engine/optimizer_state.h"

namespace fastmlp::bind {
namespace {

namespace py = pybind11;

// The fast path's test, made on the raw object without creating any Python object: a NumPy array
// of dtype `type_num` in native byte order, aligned, C-contiguous, with `ndim` dimensions.
bool plain_array(PyObject* o, int type_num, int ndim) {
  if (!py::detail::npy_api::get().PyArray_Check_(o)) return false;
  const auto* a = py::detail::array_proxy(o);
  const auto* d = py::detail::array_descriptor_proxy(a->descr);
  constexpr int kNeed =
      py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
  return a->nd == ndim && (a->flags & kNeed) == kNeed && d->type_num == type_num &&
         d->byteorder != '>';
}

// train_step_fast: one train_step when x and y need neither a conversion nor an error message
// (x float32 (n, in) with n >= 1; labels int64 (n,) in range, or float32 targets (n, out) [(n,)
// when out == 1], finite, in [0, 1] for bce); nullopt otherwise, and the caller takes the checked
// path of fastmlp.nn, which converts or raises with the argument named. Non-finite x needs no
// pass here: the engine diagnoses it when the loss or gradient check fires (engine/network.h).
std::optional<double> train_step_fast(Network& net, py::handle x, py::handle y, int loss,
                                      bool training, OptimizerState& optimizer) {
  static const int f32 = py::dtype::of<float>().num();
  static const int i64 = py::dtype::of<int64_t>().num();
  if (loss < 0 || loss > static_cast<int>(LossKind::Bce)) return std::nullopt;
  const auto kind = static_cast<LossKind>(loss);
  if (!plain_array(x.ptr(), f32, 2)) return std::nullopt;
  const auto* xa = py::detail::array_proxy(x.ptr());
  const int64_t n = xa->dimensions[0];
  if (n < 1 || xa->dimensions[1] != net.in_features()) return std::nullopt;
  const int64_t c = net.out_features();
  Targets t;
  const auto* ya = py::detail::array_proxy(y.ptr());
  if (loss_uses_labels(kind)) {
    if (c < 2 || !plain_array(y.ptr(), i64, 1) || ya->dimensions[0] != n) return std::nullopt;
    t.labels = reinterpret_cast<const int64_t*>(ya->data);
    // With the GIL held; the engine then reads the caller's array without it, so the loss kernels
    // check each label again as they read it (cpu/losses.h): memory safety never rests on this.
    int64_t bad = 0;  // one branch-free pass (vectorises) instead of a branch per label
    for (int64_t i = 0; i < n; ++i) bad |= t.labels[i] < 0 || t.labels[i] >= c;
    if (bad) return std::nullopt;
  } else {
    const bool as_2d =
        plain_array(y.ptr(), f32, 2) && ya->dimensions[0] == n && ya->dimensions[1] == c;
    const bool as_1d = c == 1 && plain_array(y.ptr(), f32, 1) && ya->dimensions[0] == n;
    if (!as_2d && !as_1d) return std::nullopt;
    t.values = reinterpret_cast<const float*>(ya->data);
    // `!(v >= 0 && v <= 1)` is also true for NaN; any inf or NaN fails the mse test.
    int bad = 0;
    if (kind == LossKind::Bce) {
      for (int64_t i = 0; i < n * c; ++i) bad |= !(t.values[i] >= 0.0f && t.values[i] <= 1.0f);
    } else {
      for (int64_t i = 0; i < n * c; ++i) bad |= !(std::fabs(t.values[i]) <= 3.4028235e38f);
    }
    if (bad) return std::nullopt;
  }
  const auto* px = reinterpret_cast<const float*>(xa->data);
  py::gil_scoped_release release;
  return net.train_step(px, t, n, kind, 0.0f, training, optimizer);
}

// debug_unchecked_labels: `call` ("train_step", "loss_and_gradients" or "evaluate") with x and y
// checked as usual except for the label range, so that a test can hand the loss kernels a label
// out of range deterministically, as another thread rewriting y after the range check would.
double debug_unchecked_labels(Network& net, const std::string& call, const py::array& x,
                              const py::array& y, int loss, OptimizerState* optimizer) {
  const LossKind kind = parse_loss(loss);
  FASTMLP_CHECK(loss_uses_labels(kind), "loss: expected a loss that takes labels");
  const float* px = check_x(net, x);
  const int64_t n = x.shape(0);
  Targets t;
  t.labels = in_i64(y, "y", 1);
  check_shape(y, "y", {n});
  if (call == "train_step") {
    FASTMLP_CHECK(optimizer != nullptr, "optimizer: train_step needs one");
    py::gil_scoped_release release;
    return net.train_step(px, t, n, kind, 0.0f, true, *optimizer);
  }
  py::gil_scoped_release release;
  if (call == "loss_and_gradients") return net.loss_and_gradients(px, t, n, kind, 0.0f, true);
  FASTMLP_CHECK(call == "evaluate", "call: expected train_step, loss_and_gradients or evaluate");
  return net.evaluate(px, t, n, kind, n).loss;
}

}  // namespace

void bind_engine(py::module_& m) {
  bind_optimizer_state<OptimizerState>(
      m,
      "One optimizer's hyperparameters, step count and flat state buffers "
      "(engine/optimizer_state.h). Built by the fastmlp.optim classes.");

  py::class_<Network> network(
      m, "Network", "The CPU training engine (engine/network.h). Use fastmlp.MLP instead.");
  network.attr("FORWARD_CHUNK_ROWS") = Network::kForwardChunkRows;
  bind_network_common<Network, OptimizerState>(network);
  network
      .def("train_step_fast", &train_step_fast, py::arg("x"), py::arg("y"), py::arg("loss"),
           py::arg("training"), py::arg("optimizer"),
           "train_step without label smoothing when x and y are already exactly what the engine "
           "reads (float32/int64, C-contiguous, right shapes, valid targets); None otherwise "
           "(nothing ran), and the caller takes the checked path.")
      .def("workspace_bytes", &Network::workspace_bytes,
           "Debug: bytes held by the activation workspace (it only grows with the batch size).")
      .def("step_is_batch_parallel", &Network::step_is_batch_parallel, py::arg("n"),
           "Debug: whether a training step on n rows now takes the batch-parallel passes.")
      .def("debug_unchecked_labels", &debug_unchecked_labels, py::arg("call"), py::arg("x"),
           py::arg("y"), py::arg("loss"), py::arg("optimizer") = nullptr,
           "Debug (tests): train_step or loss_and_gradients (training mode, no label smoothing) or "
           "evaluate without the label range check, which the loss kernels then make; returns "
           "the loss.");
}

}  // namespace fastmlp::bind
