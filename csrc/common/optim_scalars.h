// Host side of the optimizer rules, shared by the CPU loops (cpu/optim.cpp) and the CUDA kernels
// (cuda/optim.cu): each function checks a config (ValueError naming the field) and turns it and the
// step number into the per-element scalars of common/optim_math.h. Bias corrections and decayed
// learning rates are computed in double, as PyTorch does in Python, then rounded to float.
// Buffer checks stay with each backend (pointers on the CPU, tensor lists on the GPU).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/errors.h"
#include "common/optim_math.h"
#include "cpu/optim.h"

namespace fastmlp {
namespace optim_detail {

// NaN fails every comparison below, so it is refused along with the out-of-range values.
// double: Adam's lr and weight_decay are (cpu/optim.h); the others' floats convert exactly.
// Finite in float32 too, as the kernels use them in float32 (through the scalars below).
inline void check_nonnegative(double x, const char* name) {
  FASTMLP_CHECK(std::isfinite(static_cast<float>(x)) && x >= 0.0, name,
                ": expected a finite value >= 0, got ", x);
}
inline void check_positive(float x, const char* name) {
  FASTMLP_CHECK(std::isfinite(x) && x > 0.0f, name, ": expected a finite value > 0, got ", x);
}
inline void check_unit_interval(float x, const char* name, const char* what) {
  FASTMLP_CHECK(x >= 0.0f && x < 1.0f, name, ": expected ", what, " in [0, 1), got ", x);
}
inline void check_common(int64_t step, double lr, double weight_decay, float l1) {
  FASTMLP_CHECK(step >= 1, "step: expected >= 1 (steps count from 1), got ", step);
  check_nonnegative(lr, "lr");
  check_nonnegative(weight_decay, "weight_decay");
  check_nonnegative(l1, "l1");
}

}  // namespace optim_detail

inline SgdScalars sgd_scalars(const SgdConfig& config, int64_t step) {
  using namespace optim_detail;
  check_common(step, config.lr, config.weight_decay, config.l1);
  check_nonnegative(config.momentum, "momentum");
  FASTMLP_CHECK(config.dampening >= 0.0f && config.dampening <= 1.0f,
                "dampening: expected a value in [0, 1], got ", config.dampening);
  // As torch.optim.SGD: Nesterov looks ahead along the momentum, which needs some, undamped.
  FASTMLP_CHECK(!config.nesterov || (config.momentum > 0.0f && config.dampening == 0.0f),
                "nesterov: requires momentum > 0 and dampening == 0, got momentum ",
                config.momentum, " and dampening ", config.dampening);
  SgdScalars s{};
  s.lr = config.lr;
  s.momentum = config.momentum;
  s.one_minus_dampening = static_cast<float>(1.0 - static_cast<double>(config.dampening));
  s.weight_decay = config.weight_decay;
  s.l1 = config.l1;
  s.use_momentum = config.momentum != 0.0f;
  s.nesterov = config.nesterov;
  s.first_step = step == 1;
  return s;
}

inline AdagradScalars adagrad_scalars(const AdagradConfig& config, int64_t step) {
  using namespace optim_detail;
  check_common(step, config.lr, config.weight_decay, config.l1);
  check_nonnegative(config.lr_decay, "lr_decay");
  check_positive(config.eps, "eps");
  AdagradScalars c{};
  c.clr = static_cast<float>(static_cast<double>(config.lr) /
                             (1.0 + static_cast<double>(step - 1) * config.lr_decay));
  c.eps = config.eps;
  c.weight_decay = config.weight_decay;
  c.l1 = config.l1;
  return c;
}

inline RmspropScalars rmsprop_scalars(const RmspropConfig& config, int64_t step) {
  using namespace optim_detail;
  check_common(step, config.lr, config.weight_decay, config.l1);
  check_unit_interval(config.alpha, "alpha", "a smoothing constant");
  check_positive(config.eps, "eps");
  check_nonnegative(config.momentum, "momentum");
  RmspropScalars c{};
  c.lr = config.lr;
  c.alpha = config.alpha;
  c.one_minus_alpha = static_cast<float>(1.0 - static_cast<double>(config.alpha));
  c.eps = config.eps;
  c.weight_decay = config.weight_decay;
  c.momentum = config.momentum;
  c.l1 = config.l1;
  c.centered = config.centered;
  c.use_momentum = config.momentum != 0.0f;
  return c;
}

inline AdamScalars adam_scalars(const AdamConfig& config, int64_t step) {
  using namespace optim_detail;
  check_common(step, config.lr, config.weight_decay, config.l1);
  check_unit_interval(config.beta1, "betas", "beta1");
  check_unit_interval(config.beta2, "betas", "beta2");
  check_positive(config.eps, "eps");
  const double lr = config.lr;
  const double t = static_cast<double>(step);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(config.beta1), t);
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(config.beta2), t);
  AdamScalars c{};
  c.beta1 = config.beta1;
  c.one_minus_beta1 = static_cast<float>(1.0 - static_cast<double>(config.beta1));
  c.beta2 = config.beta2;
  c.one_minus_beta2 = static_cast<float>(1.0 - static_cast<double>(config.beta2));
  c.step_size = static_cast<float>(lr / bias_correction1);
  c.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  c.eps = config.eps;
  c.l1 = config.l1;
  if (config.decoupled_weight_decay) {
    c.weight_decay = 0.0f;
    c.decay = static_cast<float>(1.0 - lr * config.weight_decay);
  } else {
    c.weight_decay = static_cast<float>(config.weight_decay);
    c.decay = 1.0f;
  }
  return c;
}

}  // namespace fastmlp
