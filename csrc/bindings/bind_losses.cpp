// Bindings for the losses (cpu/losses.h). Each returns (loss, gradient) with the gradient None when
// need_grad is false (the kernel then gets nullptr and skips it). Arrays, labels and scalar
// arguments are checked here with the GIL held; only the kernel runs without it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "common/errors.h"
#include "cpu/losses.h"

namespace fastmlp::bind {
namespace {

std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

void check_nonempty(const py::array& a, const char* name) {
  FASTMLP_CHECK(a.shape(0) > 0, name, ": empty batch (0 rows)");
  FASTMLP_CHECK(a.shape(1) > 0, name, ": expected at least one column, got shape ", shape_str(a));
}

// (loss, grad or None); the gradient buffer is allocated only when asked for.
py::tuple result(double loss, const py::object& grad) {
  return py::make_tuple(loss, grad);
}

using LabelLoss = double (*)(float*, const float*, const int64_t*, int64_t, int64_t, float,
                             const char*);
using PairLoss = double (*)(float*, const float*, const float*, int64_t, int64_t);

py::tuple label_loss(LabelLoss kernel, const py::array& input, const char* input_name,
                     const py::array& labels, float param, bool need_grad) {
  const float* xp = in_f32(input, input_name, 2);
  check_nonempty(input, input_name);
  const int64_t batch = input.shape(0), classes = input.shape(1);
  const int64_t* lp = in_i64(labels, "labels", 1);
  check_shape(labels, "labels", {batch});
  // Checked here for the message naming the first bad label; the kernel reads the caller's array
  // (no copy) with the GIL released, so it checks each label again as it reads it (cpu/losses.h).
  check_labels(lp, batch, classes, "labels");
  py::object grad = py::none();
  float* gp = nullptr;
  if (need_grad) {
    py::array_t<float> g(shape_of(input));
    gp = g.mutable_data();
    grad = std::move(g);
  }
  double loss;
  {
    py::gil_scoped_release nogil;
    loss = kernel(gp, xp, lp, batch, classes, param, "labels");
  }
  return result(loss, grad);
}

py::tuple pair_loss(PairLoss kernel, const py::array& input, const char* input_name,
                    const py::array& other, const char* other_name, bool need_grad) {
  const float* xp = in_f32(input, input_name, 2);
  check_nonempty(input, input_name);
  const int64_t batch = input.shape(0), features = input.shape(1);
  const float* op = in_f32(other, other_name, 2);
  check_shape(other, other_name, {batch, features});
  py::object grad = py::none();
  float* gp = nullptr;
  if (need_grad) {
    py::array_t<float> g(shape_of(input));
    gp = g.mutable_data();
    grad = std::move(g);
  }
  double loss;
  {
    py::gil_scoped_release nogil;
    loss = kernel(gp, xp, op, batch, features);
  }
  return result(loss, grad);
}

}  // namespace

void bind_losses(py::module_& m) {
  m.def(
      "softmax_cross_entropy",
      [](const py::array& logits, const py::array& labels, float label_smoothing, bool need_grad) {
        FASTMLP_CHECK(label_smoothing >= 0.0f && label_smoothing <= 1.0f,
                      "label_smoothing: expected a value in [0, 1], got ", label_smoothing);
        return label_loss(&softmax_cross_entropy, logits, "logits", labels, label_smoothing,
                          need_grad);
      },
      py::arg("logits"), py::arg("labels"), py::arg("label_smoothing") = 0.0f,
      py::arg("need_grad") = true, "Mean softmax cross-entropy; returns (loss, dlogits or None).");
  m.def(
      "multiclass_hinge_loss",
      [](const py::array& scores, const py::array& labels, float margin, bool need_grad) {
        FASTMLP_CHECK(std::isfinite(margin) && margin >= 0.0f,
                      "margin: expected a finite value >= 0, got ", margin);
        return label_loss(&multiclass_hinge_loss, scores, "scores", labels, margin, need_grad);
      },
      py::arg("scores"), py::arg("labels"), py::arg("margin") = 1.0f, py::arg("need_grad") = true,
      "Mean multiclass SVM hinge loss; returns (loss, dscores or None).");
  m.def(
      "mse_loss",
      [](const py::array& pred, const py::array& target, bool need_grad) {
        return pair_loss(&mse_loss, pred, "pred", target, "target", need_grad);
      },
      py::arg("pred"), py::arg("target"), py::arg("need_grad") = true,
      "Mean squared error over all elements; returns (loss, dpred or None).");
  m.def(
      "bce_with_logits",
      [](const py::array& logits, const py::array& targets, bool need_grad) {
        // Targets outside [0, 1] (or NaN) give a loss without a meaning, not an error in the
        // kernel, so they are refused here, before any work.
        const float* tp = in_f32(targets, "targets");
        const int64_t n = targets.size();
        for (int64_t i = 0; i < n; ++i) {
          FASTMLP_CHECK(tp[i] >= 0.0f && tp[i] <= 1.0f, "targets: expected values in [0, 1], got ",
                        tp[i], " at flat index ", i);
        }
        return pair_loss(&bce_with_logits, logits, "logits", targets, "targets", need_grad);
      },
      py::arg("logits"), py::arg("targets"), py::arg("need_grad") = true,
      "Mean binary cross-entropy on logits; returns (loss, dlogits or None).");
}

}  // namespace fastmlp::bind
