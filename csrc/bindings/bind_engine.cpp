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
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "bindings/engine_args.h"
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

// A read-only 1-D view of n floats owned by the network; `self` keeps the network alive.
py::array flat_view(const py::object& self, const float* data, int64_t n) {
  py::array_t<float> view({static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(sizeof(float))},
                          data, self);
  view.attr("setflags")(py::arg("write") = false);
  return view;
}

}  // namespace

void bind_engine(py::module_& m) {
  py::class_<OptimizerState>(m, "OptimizerState",
                             "One optimizer's hyperparameters, step count and flat state buffers "
                             "(engine/optimizer_state.h). Built by the fastmlp.optim classes.")
      .def_static(
          "sgd",
          [](float lr, float momentum, float dampening, bool nesterov, float weight_decay,
             float l1) {
            return std::make_unique<OptimizerState>(
                SgdConfig{lr, momentum, dampening, nesterov, weight_decay, l1});
          },
          py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
          py::arg("weight_decay"), py::arg("l1"))
      .def_static(
          "adagrad",
          [](float lr, float lr_decay, float weight_decay, float eps, float l1) {
            return std::make_unique<OptimizerState>(
                AdagradConfig{lr, lr_decay, weight_decay, eps, l1});
          },
          py::arg("lr"), py::arg("lr_decay"), py::arg("weight_decay"), py::arg("eps"),
          py::arg("l1"))
      .def_static(
          "rmsprop",
          [](float lr, float alpha, float eps, float weight_decay, float momentum, bool centered,
             float l1) {
            return std::make_unique<OptimizerState>(
                RmspropConfig{lr, alpha, eps, weight_decay, momentum, centered, l1});
          },
          py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("momentum"), py::arg("centered"), py::arg("l1"))
      .def_static(
          "adam",
          [](float lr, float beta1, float beta2, float eps, float weight_decay, bool decoupled,
             float l1) {
            return std::make_unique<OptimizerState>(
                AdamConfig{lr, beta1, beta2, eps, weight_decay, decoupled, l1});
          },
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
          py::arg("weight_decay"), py::arg("decoupled_weight_decay"), py::arg("l1"))
      .def_property("lr", &OptimizerState::lr, &OptimizerState::set_lr)
      .def_property_readonly("step", &OptimizerState::step)
      .def_property_readonly("kind",
                             [](const OptimizerState& s) { return static_cast<int>(s.kind()); });

  py::class_<Network> network(
      m, "Network", "The CPU training engine (engine/network.h). Use fastmlp.MLP instead.");
  network.attr("FORWARD_CHUNK_ROWS") = Network::kForwardChunkRows;
  network
      .def(py::init([](std::vector<int64_t> sizes, const std::vector<int>& activations,
                       std::vector<float> alphas, std::vector<float> dropouts, uint64_t seed) {
             std::vector<Activation> kinds;
             for (int a : activations) {
               FASTMLP_CHECK(a >= 0 && a <= static_cast<int>(Activation::Tanh),
                             "activation: unknown activation kind ", a);
               kinds.push_back(static_cast<Activation>(a));
             }
             return std::make_unique<Network>(std::move(sizes), std::move(kinds), std::move(alphas),
                                              std::move(dropouts), seed);
           }),
           py::arg("sizes"), py::arg("activations"), py::arg("alphas"), py::arg("dropouts"),
           py::arg("seed"))
      .def(
          "forward",
          [](Network& net, const py::array& x, bool training) {
            const float* px = check_x(net, x);
            const int64_t n = x.shape(0);
            auto out = new_f32(
                {static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(net.out_features())});
            float* po = out.mutable_data();
            py::gil_scoped_release release;
            net.forward(po, px, n, training);
            return out;
          },
          py::arg("x"), py::arg("training") = false,
          "Logits (n, out). training=True applies dropout and advances rng_offset.")
      .def(
          "loss_and_gradients",
          [](Network& net, const py::array& x, const py::array& y, int loss, float label_smoothing,
             bool training) {
            const LossKind kind = parse_loss(loss);
            check_label_smoothing(kind, label_smoothing);
            const float* px = check_x(net, x);
            const int64_t n = x.shape(0);
            const Targets t = check_targets(net, y, kind, n);
            py::gil_scoped_release release;
            return net.loss_and_gradients(px, t, n, kind, label_smoothing, training);
          },
          py::arg("x"), py::arg("y"), py::arg("loss"), py::arg("label_smoothing") = 0.0f,
          py::arg("training") = false)
      .def(
          "train_step",
          [](Network& net, const py::array& x, const py::array& y, int loss, float label_smoothing,
             bool training, OptimizerState& optimizer) {
            const LossKind kind = parse_loss(loss);
            check_label_smoothing(kind, label_smoothing);
            const float* px = check_x(net, x);
            const int64_t n = x.shape(0);
            const Targets t = check_targets(net, y, kind, n);
            py::gil_scoped_release release;
            return net.train_step(px, t, n, kind, label_smoothing, training, optimizer);
          },
          py::arg("x"), py::arg("y"), py::arg("loss"), py::arg("label_smoothing"),
          py::arg("training"), py::arg("optimizer"))
      .def("train_step_fast", &train_step_fast, py::arg("x"), py::arg("y"), py::arg("loss"),
           py::arg("training"), py::arg("optimizer"),
           "train_step without label smoothing when x and y are already exactly what the engine "
           "reads (float32/int64, C-contiguous, right shapes, valid targets); None otherwise "
           "(nothing ran), and the caller takes the checked path.")
      .def("take_train_counts", &Network::take_train_counts,
           py::call_guard<py::gil_scoped_release>(),
           "(correct, total) predictions of the train_steps since the last call; resets them.")
      .def(
          "evaluate",
          [](Network& net, const py::array& x, const py::array& y, int loss, int64_t batch_size) {
            const LossKind kind = parse_loss(loss);
            const float* px = check_x(net, x);
            const int64_t n = x.shape(0);
            const Targets t = check_targets(net, y, kind, n);
            EvalResult r;
            {
              py::gil_scoped_release release;
              r = net.evaluate(px, t, n, kind, batch_size);
            }
            return py::make_tuple(r.loss, r.correct, r.total);
          },
          py::arg("x"), py::arg("y"), py::arg("loss"), py::arg("batch_size"),
          "(mean loss, correct, total) in eval mode; total is 0 for mse.")
      .def(
          "parameters",
          [](py::object self) {
            Network& net = self.cast<Network&>();
            return flat_view(self, net.parameters(), net.num_parameters());
          },
          "Read-only float32 view (P,) of the flat parameter buffer (layout: engine/network.h).")
      .def(
          "gradients",
          [](py::object self) {
            Network& net = self.cast<Network&>();
            return flat_view(self, net.gradients(), net.num_parameters());
          },
          "Read-only float32 view (P,) of the gradients of the last loss_and_gradients/train_step.")
      .def(
          "set_parameters",
          [](Network& net, const py::array& values) {
            const float* pv = in_f32(values, "weights", 1);
            check_shape(values, "weights", {net.num_parameters()});
            py::gil_scoped_release release;
            net.set_parameters(pv, net.num_parameters());
          },
          py::arg("values"))
      .def_property("rng_offset", &Network::rng_offset, &Network::set_rng_offset)
      .def_property_readonly("seed", &Network::seed)
      .def_property_readonly("num_parameters", &Network::num_parameters)
      .def_property_readonly("sizes", &Network::sizes)
      .def("workspace_bytes", &Network::workspace_bytes,
           "Debug: bytes held by the activation workspace (it only grows with the batch size).")
      .def("step_is_batch_parallel", &Network::step_is_batch_parallel, py::arg("n"),
           "Debug: whether a training step on n rows now takes the batch-parallel passes.")
      .def("workspace_rows", &Network::workspace_capacity_rows,
           "Debug: the batch size the workspace is sized for.");
}

}  // namespace fastmlp::bind
