// Argument checks shared by the bindings of the CPU engine (bind_engine.cpp, module _core) and of
// the CUDA engine (cuda_engine.cpp, module _cuda): the same rules and messages for both devices.
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>

#include "bindings/arrays.h"
#include "common/errors.h"
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

// y for `loss`: int64 labels (n,) in range, or float32 targets (n, out_features).
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

}  // namespace fastmlp::bind
