// What the bindings of the CPU engine (bind_engine.cpp, module _core) and of the CUDA engine
// (cuda_engine.cpp, module _cuda) share: argument checks with the same rules and messages, the
// OptimizerState class, and the Network methods whose signatures agree on both devices.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings/arrays.h"
#include "common/activation_math.h"
#include "common/errors.h"
#include "cpu/optim.h"
#include "engine/targets.h"

namespace fastmlp::bind {

inline LossKind parse_loss(int loss) {
  FASTMLP_CHECK(loss >= 0 && loss <= static_cast<int>(LossKind::Bce), "loss: unknown loss kind ",
                loss, " (0 cross_entropy, 1 mse, 2 hinge, 3 bce)");
  return static_cast<LossKind>(loss);
}

inline void check_label_smoothing(LossKind loss, float label_smoothing) {
  FASTMLP_CHECK(label_smoothing >= 0.0f && label_smoothing <= 1.0f,
                "label_smoothing: expected a value in [0, 1], got ", label_smoothing);
  FASTMLP_CHECK(label_smoothing == 0.0f || loss == LossKind::CrossEntropy,
                "label_smoothing: only the cross_entropy loss takes label smoothing");
}

// x: float32 (n, in_features) with n >= 1. Net: fastmlp::Network or fastmlp::cuda::Network.
template <typename Net>
const float* check_x(const Net& net, const py::array& x) {
  const float* px = in_f32(x, "x", 2);
  check_shape(x, "x", {-1, net.in_features()});
  FASTMLP_CHECK(x.shape(0) >= 1, "x: empty batch (0 rows)");
  return px;
}

// y for `loss`: int64 labels (n,) in range, or float32 targets (n, out_features). The range check
// gives the error naming the first bad label; the engine reads y after the GIL is released, so the
// loss kernels check each label again as they read it (another thread may have changed it).
template <typename Net>
Targets check_targets(const Net& net, const py::array& y, LossKind loss, int64_t n) {
  Targets t;
  if (loss_uses_labels(loss)) {
    t.labels = in_i64(y, "y", 1);
    check_shape(y, "y", {n});
    check_labels(t.labels, n, net.out_features(), "y");
  } else {
    t.values = in_f32(y, "y", 2);
    check_shape(y, "y", {n, net.out_features()});
  }
  return t;
}

// Runs body() under the state's lock (engine/optimizer_state.h), with the GIL released while it
// waits for a training step on another thread to end; body must not touch Python objects.
template <typename State, typename Body>
auto locked(const State& state, const Body& body) {
  py::gil_scoped_release release;
  const auto lock = state.lock();
  return body();
}

// State: fastmlp::OptimizerState or fastmlp::cuda::OptimizerState (built from the cpu/optim.h
// configs; lr, step and kind as engine/optimizer_config.h).
template <typename State>
void bind_optimizer_state(py::module_& m, const char* doc) {
  py::class_<State>(m, "OptimizerState", doc)
      .def_static(
          "sgd",
          [](float lr, float momentum, float dampening, bool nesterov, float weight_decay,
             float l1) {
            return std::make_unique<State>(
                SgdConfig{lr, momentum, dampening, nesterov, weight_decay, l1});
          },
          py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
          py::arg("weight_decay"), py::arg("l1"))
      .def_static(
          "adagrad",
          [](float lr, float lr_decay, float weight_decay, float eps, float l1) {
            return std::make_unique<State>(AdagradConfig{lr, lr_decay, weight_decay, eps, l1});
          },
          py::arg("lr"), py::arg("lr_decay"), py::arg("weight_decay"), py::arg("eps"),
          py::arg("l1"))
      .def_static(
          "rmsprop",
          [](float lr, float alpha, float eps, float weight_decay, float momentum, bool centered,
             float l1) {
            return std::make_unique<State>(
                RmspropConfig{lr, alpha, eps, weight_decay, momentum, centered, l1});
          },
          py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("momentum"), py::arg("centered"), py::arg("l1"))
      .def_static(
          "adam",
          [](double lr, float beta1, float beta2, float eps, double weight_decay, bool decoupled,
             float l1) {
            return std::make_unique<State>(
                AdamConfig{lr, beta1, beta2, eps, weight_decay, decoupled, l1});
          },
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
          py::arg("weight_decay"), py::arg("decoupled_weight_decay"), py::arg("l1"))
      .def_property(
          "lr", [](const State& s) { return locked(s, [&] { return s.lr(); }); },
          [](State& s, double lr) { locked(s, [&] { s.set_lr(lr); }); })
      .def_property_readonly("step",
                             [](const State& s) { return locked(s, [&] { return s.step(); }); })
      .def_property_readonly("kind", [](const State& s) { return static_cast<int>(s.kind()); })
      .def(
          "export_state",
          [](const State& s) {
            // (step, size, {buffer name: float32 copy}); size -1 and no buffers before the first
            // step. Names as PyTorch's optimizer state (exp_avg, momentum_buffer, ...). Copied
            // under the lock, between two steps, then handed to Python.
            int64_t step = 0, size = -1;
            std::vector<float> host[3];
            locked(s, [&] {
              step = s.step();
              size = s.size();
              for (int i = 0; i < 3; ++i) {
                if (s.config().uses_buffer(i) && size >= 0) host[i] = s.buffer_copy(i);
              }
            });
            py::dict buffers;
            for (int i = 0; i < 3; ++i) {
              if (!s.config().uses_buffer(i) || size < 0) continue;
              buffers[s.config().buffer_name(i)] =
                  py::array_t<float>(static_cast<py::ssize_t>(host[i].size()), host[i].data());
            }
            return py::make_tuple(step, size, buffers);
          },
          "A copy of the step count, parameter count and state buffers (see restore_state).")
      .def(
          "restore_state",
          [](State& s, int64_t step, int64_t size, const py::dict& buffers) {
            // The buffers this configuration keeps (none for a state saved before its first
            // step, size -1). Each given one must be among them, float32 (size,); a missing one
            // is State::restore's to refuse.
            std::vector<int> kept;
            std::string names;
            for (int i = 0; i < 3; ++i) {
              if (!s.config().uses_buffer(i) || size < 0) continue;
              kept.push_back(i);
              names += (names.empty() ? "" : ", ") + std::string(s.config().buffer_name(i));
            }
            std::array<const float*, 3> data{};
            std::vector<py::array> held;  // keeps converted arrays alive during the copy
            for (const auto& item : buffers) {
              const std::string key = py::str(item.first);
              const auto it = std::find_if(kept.begin(), kept.end(),
                                           [&](int i) { return key == s.config().buffer_name(i); });
              if (it == kept.end()) {
                throw ValueError(detail::concat(key, ": not a state buffer of this optimizer (",
                                                names.empty() ? "it has none here" : names, ")"));
              }
              held.push_back(py::array::ensure(item.second));
              FASTMLP_CHECK(held.back(), key, ": expected an array");
              data[*it] = in_f32(held.back(), key.c_str(), 1);
              check_shape(held.back(), key.c_str(), {size});
            }
            locked(s, [&] { s.restore(step, size, data); });
          },
          py::arg("step"), py::arg("size"), py::arg("buffers"),
          "Replaces the step count and state buffers with saved ones (export_state's); ValueError "
          "if they do not fit this optimizer, and then nothing changes.");
}

// A new float32 array (P,) filled by net.*get (get_parameters or get_gradients), which takes the
// network's lock: the GIL is released while it waits for a step running on another thread.
template <typename Net>
py::array_t<float> flat_copy(const Net& net, void (Net::*get)(float*) const) {
  auto out = new_f32({static_cast<py::ssize_t>(net.num_parameters())});
  float* po = out.mutable_data();
  py::gil_scoped_release release;
  (net.*get)(po);
  return out;
}

// The Network methods both engines bind alike (NumPy in, NumPy out, GIL released around the
// engine call): the constructor, forward, loss_and_gradients, train_step, take_train_counts,
// evaluate, set_parameters, the parameter and gradient copies and the read-only facts. Net:
// fastmlp::Network or fastmlp::cuda::Network; State: its OptimizerState.
template <typename Net, typename State>
void bind_network_common(py::class_<Net>& cls) {
  cls.def(py::init([](std::vector<int64_t> sizes, const std::vector<int>& activations,
                      std::vector<float> alphas, std::vector<float> dropouts, uint64_t seed) {
            std::vector<Activation> kinds;
            for (int a : activations) {
              FASTMLP_CHECK(a >= 0 && a <= static_cast<int>(Activation::Tanh),
                            "activation: unknown activation kind ", a);
              kinds.push_back(static_cast<Activation>(a));
            }
            return std::make_unique<Net>(std::move(sizes), std::move(kinds), std::move(alphas),
                                         std::move(dropouts), seed);
          }),
          py::arg("sizes"), py::arg("activations"), py::arg("alphas"), py::arg("dropouts"),
          py::arg("seed"))
      .def(
          "forward",
          [](Net& net, const py::array& x, bool training) {
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
          [](Net& net, const py::array& x, const py::array& y, int loss, float label_smoothing,
             bool training) {
            const LossKind kind = parse_loss(loss);
            check_label_smoothing(kind, label_smoothing);
            const float* px = check_x(net, x);
            const int64_t n = x.shape(0);
            const Targets t = check_targets(net, y, kind, n);
            auto grads = new_f32({static_cast<py::ssize_t>(net.num_parameters())});
            float* pg = grads.mutable_data();
            double value = 0.0;
            {
              py::gil_scoped_release release;
              value = net.loss_and_gradients(px, t, n, kind, label_smoothing, training, pg);
            }
            return py::make_tuple(value, grads);
          },
          py::arg("x"), py::arg("y"), py::arg("loss"), py::arg("label_smoothing") = 0.0f,
          py::arg("training") = false,
          "(mean loss, float32 copy (P,) of its gradients), taken in one locked engine call.")
      .def(
          "train_step",
          [](Net& net, const py::array& x, const py::array& y, int loss, float label_smoothing,
             bool training, State& optimizer) {
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
      .def("take_train_counts", &Net::take_train_counts, py::call_guard<py::gil_scoped_release>(),
           "(correct, total) predictions of the train_steps since the last call; resets them.")
      .def(
          "evaluate",
          [](Net& net, const py::array& x, const py::array& y, int loss, int64_t batch_size) {
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
          "set_parameters",
          [](Net& net, const py::array& values) {
            const float* pv = in_f32(values, "weights", 1);
            check_shape(values, "weights", {net.num_parameters()});
            py::gil_scoped_release release;
            net.set_parameters(pv, net.num_parameters());
          },
          py::arg("values"))
      .def(
          "parameters", [](const Net& net) { return flat_copy(net, &Net::get_parameters); },
          "Float32 copy (P,) of the flat parameter buffer (layout: engine/network.h).")
      .def(
          "snapshot",
          [](const Net& net) {
            auto out = new_f32({static_cast<py::ssize_t>(net.num_parameters())});
            float* po = out.mutable_data();
            uint64_t offset = 0;
            {
              py::gil_scoped_release release;
              offset = net.snapshot(po);
            }
            return py::make_tuple(out, offset);
          },
          "(parameters(), rng_offset) from one locked copy: a step on another thread cannot "
          "fall between them.")
      .def(
          "gradients", [](const Net& net) { return flat_copy(net, &Net::get_gradients); },
          "Float32 copy (P,) of the gradients of the last loss_and_gradients/train_step.")
      .def_property(
          "rng_offset",
          [](const Net& net) {
            py::gil_scoped_release release;  // the getter waits for a step on another thread
            return net.rng_offset();
          },
          [](Net& net, uint64_t offset) {
            py::gil_scoped_release release;
            net.set_rng_offset(offset);
          })
      .def_property_readonly("seed", &Net::seed)
      .def_property_readonly("num_parameters", &Net::num_parameters)
      .def_property_readonly("sizes", &Net::sizes)
      .def("workspace_rows", &Net::workspace_capacity_rows,
           "Debug: the batch size the workspace is sized for.");
}

}  // namespace fastmlp::bind
