// _cuda.Network and _cuda.OptimizerState: the CUDA training engine of engine/network_cuda.h, with
// the methods and argument checks of _core.Network (bind_engine.cpp, engine_args.h), so that
// fastmlp.MLP drives either the same way. Parameters and gradients come back as host copies.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/cuda_bindings.h"
#include "bindings/engine_args.h"
#include "common/errors.h"
#include "engine/network_cuda.h"

namespace fastmlp::bind {

namespace py = pybind11;

void bind_cuda_engine(py::module_& m) {
  using cuda::DeviceBuffer;
  using CudaNetwork = cuda::Network;
  using CudaOptimizerState = cuda::OptimizerState;

  py::class_<CudaOptimizerState>(m, "OptimizerState",
                                 "One optimizer's hyperparameters, step count and state buffers "
                                 "in device memory (engine/network_cuda.h).")
      .def_static(
          "sgd",
          [](float lr, float momentum, float dampening, bool nesterov, float weight_decay,
             float l1) {
            return std::make_unique<CudaOptimizerState>(
                SgdConfig{lr, momentum, dampening, nesterov, weight_decay, l1});
          },
          py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
          py::arg("weight_decay"), py::arg("l1"))
      .def_static(
          "adagrad",
          [](float lr, float lr_decay, float weight_decay, float eps, float l1) {
            return std::make_unique<CudaOptimizerState>(
                AdagradConfig{lr, lr_decay, weight_decay, eps, l1});
          },
          py::arg("lr"), py::arg("lr_decay"), py::arg("weight_decay"), py::arg("eps"),
          py::arg("l1"))
      .def_static(
          "rmsprop",
          [](float lr, float alpha, float eps, float weight_decay, float momentum, bool centered,
             float l1) {
            return std::make_unique<CudaOptimizerState>(
                RmspropConfig{lr, alpha, eps, weight_decay, momentum, centered, l1});
          },
          py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("momentum"), py::arg("centered"), py::arg("l1"))
      .def_static(
          "adam",
          [](float lr, float beta1, float beta2, float eps, float weight_decay, bool decoupled,
             float l1) {
            return std::make_unique<CudaOptimizerState>(
                AdamConfig{lr, beta1, beta2, eps, weight_decay, decoupled, l1});
          },
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
          py::arg("weight_decay"), py::arg("decoupled_weight_decay"), py::arg("l1"))
      .def_property("lr", &CudaOptimizerState::lr, &CudaOptimizerState::set_lr)
      .def_property_readonly("step", &CudaOptimizerState::step)
      .def_property_readonly(
          "kind", [](const CudaOptimizerState& s) { return static_cast<int>(s.kind()); });

  py::class_<CudaNetwork>(m, "Network",
                          "The CUDA training engine (engine/network_cuda.h). Use "
                          "fastmlp.MLP(..., device='cuda') instead.")
      .def(py::init([](std::vector<int64_t> sizes, const std::vector<int>& activations,
                       std::vector<float> alphas, std::vector<float> dropouts, uint64_t seed) {
             std::vector<Activation> kinds;
             for (int a : activations) {
               FASTMLP_CHECK(a >= 0 && a <= static_cast<int>(Activation::Tanh),
                             "activation: unknown activation kind ", a);
               kinds.push_back(static_cast<Activation>(a));
             }
             return std::make_unique<CudaNetwork>(std::move(sizes), std::move(kinds),
                                                  std::move(alphas), std::move(dropouts), seed);
           }),
           py::arg("sizes"), py::arg("activations"), py::arg("alphas"), py::arg("dropouts"),
           py::arg("seed"))
      .def(
          "forward",
          [](CudaNetwork& net, const py::array& x, bool training) {
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
          "Logits (n, out) as a NumPy array. training=True applies dropout and advances "
          "rng_offset.")
      .def(
          "loss_and_gradients",
          [](CudaNetwork& net, const py::array& x, const py::array& y, int loss,
             float label_smoothing, bool training) {
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
          [](CudaNetwork& net, const py::array& x, const py::array& y, int loss,
             float label_smoothing, bool training, CudaOptimizerState& optimizer) {
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
      .def(
          "train_step_device",
          [](CudaNetwork& net, const DeviceBuffer& x, const DeviceBuffer& y, int64_t n, int loss,
             float label_smoothing, bool training, CudaOptimizerState& optimizer) {
            const LossKind kind = parse_loss(loss);
            check_label_smoothing(kind, label_smoothing);
            FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
            const float* px = need_f32(x, n * net.in_features(), "x");
            Targets t;
            if (loss_uses_labels(kind)) {
              t.labels = static_cast<const int64_t*>(need(y, n, sizeof(int64_t), "y"));
            } else {
              t.values = need_f32(y, n * net.out_features(), "y");
            }
            py::gil_scoped_release release;
            return net.train_step_device(px, t, n, kind, label_smoothing, training, optimizer);
          },
          py::arg("x"), py::arg("y"), py::arg("n"), py::arg("loss"), py::arg("label_smoothing"),
          py::arg("training"), py::arg("optimizer"),
          "train_step on device buffers: x float32 (n, in), y int64 labels (n,) or float32 "
          "targets (n, out), both on this network's device.")
      .def("take_train_counts", &CudaNetwork::take_train_counts,
           py::call_guard<py::gil_scoped_release>(),
           "(correct, total) predictions of the train_steps since the last call; resets them.")
      .def(
          "evaluate",
          [](CudaNetwork& net, const py::array& x, const py::array& y, int loss,
             int64_t batch_size) {
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
          [](const CudaNetwork& net) {
            auto out = new_f32({static_cast<py::ssize_t>(net.num_parameters())});
            float* po = out.mutable_data();
            py::gil_scoped_release release;
            net.get_parameters(po);
            return out;
          },
          "Host copy (P,) of the flat parameter buffer (layout: engine/network.h).")
      .def(
          "gradients",
          [](const CudaNetwork& net) {
            auto out = new_f32({static_cast<py::ssize_t>(net.num_parameters())});
            float* po = out.mutable_data();
            py::gil_scoped_release release;
            net.get_gradients(po);
            return out;
          },
          "Host copy (P,) of the gradients of the last loss_and_gradients/train_step.")
      .def(
          "set_parameters",
          [](CudaNetwork& net, const py::array& values) {
            const float* pv = in_f32(values, "weights", 1);
            check_shape(values, "weights", {net.num_parameters()});
            py::gil_scoped_release release;
            net.set_parameters(pv, net.num_parameters());
          },
          py::arg("values"))
      .def_property("rng_offset", &CudaNetwork::rng_offset, &CudaNetwork::set_rng_offset)
      .def_property_readonly("seed", &CudaNetwork::seed)
      .def_property_readonly("num_parameters", &CudaNetwork::num_parameters)
      .def_property_readonly("sizes", &CudaNetwork::sizes)
      .def_property_readonly("device", &CudaNetwork::device)
      .def("workspace_rows", &CudaNetwork::workspace_capacity_rows,
           "Debug: the batch size the workspace is sized for.");
}

}  // namespace fastmlp::bind
