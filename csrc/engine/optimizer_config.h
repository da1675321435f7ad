// Which update rule an optimizer runs and with what hyperparameters, shared by the CPU optimizer
// state (engine/optimizer_state.h) and the CUDA one (engine/network_cuda.h). Header-only, so that
// the _cuda module, which does not link the CPU library, uses the same checks.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "common/errors.h"
#include "common/optim_scalars.h"
#include "cpu/optim.h"

namespace fastmlp {

enum class OptimizerKind : int { Sgd = 0, Adagrad = 1, Rmsprop = 2, Adam = 3 };

class OptimizerConfig {
 public:
  // Each constructor checks lr and the rule's configuration (common/optim_scalars.h, the checks
  // the kernels make) now, when the optimizer is built, instead of at its first step.
  explicit OptimizerConfig(const SgdConfig& config) : kind_(OptimizerKind::Sgd), sgd_(config) {
    check_lr(config.lr);
    sgd_scalars(config, 1);
  }
  explicit OptimizerConfig(const AdagradConfig& config)
      : kind_(OptimizerKind::Adagrad), adagrad_(config) {
    check_lr(config.lr);
    adagrad_scalars(config, 1);
  }
  explicit OptimizerConfig(const RmspropConfig& config)
      : kind_(OptimizerKind::Rmsprop), rmsprop_(config) {
    check_lr(config.lr);
    rmsprop_scalars(config, 1);
  }
  explicit OptimizerConfig(const AdamConfig& config) : kind_(OptimizerKind::Adam), adam_(config) {
    check_lr(config.lr);
    adam_scalars(config, 1);
  }

  OptimizerKind kind() const { return kind_; }
  const SgdConfig& sgd() const { return sgd_; }
  const AdagradConfig& adagrad() const { return adagrad_; }
  const RmspropConfig& rmsprop() const { return rmsprop_; }
  const AdamConfig& adam() const { return adam_; }

  // double: Adam keeps its lr in double (cpu/optim.h); the others' are float.
  double lr() const {
    switch (kind_) {
      case OptimizerKind::Sgd:
        return sgd_.lr;
      case OptimizerKind::Adagrad:
        return adagrad_.lr;
      case OptimizerKind::Rmsprop:
        return rmsprop_.lr;
      case OptimizerKind::Adam:
        return adam_.lr;
    }
    return 0.0;
  }

  void set_lr(double lr) {  // ValueError unless finite in float32 and >= 0
    check_lr(lr);
    switch (kind_) {
      case OptimizerKind::Sgd:
        sgd_.lr = static_cast<float>(lr);
        break;
      case OptimizerKind::Adagrad:
        adagrad_.lr = static_cast<float>(lr);
        break;
      case OptimizerKind::Rmsprop:
        rmsprop_.lr = static_cast<float>(lr);
        break;
      case OptimizerKind::Adam:
        adam_.lr = lr;
        break;
    }
  }

  // The weight decay and L1 that the rule adds into g' = g + weight_decay * p + l1 * sign(p)
  // (AdamW's decoupled decay scales p instead and is not part of g'). The engines bound |g'|
  // before an update (kUpdateGradientLimit, common/optim_math.h).
  float gradient_weight_decay() const {
    switch (kind_) {
      case OptimizerKind::Sgd:
        return sgd_.weight_decay;
      case OptimizerKind::Adagrad:
        return adagrad_.weight_decay;
      case OptimizerKind::Rmsprop:
        return rmsprop_.weight_decay;
      case OptimizerKind::Adam:
        return adam_.decoupled_weight_decay ? 0.0f : static_cast<float>(adam_.weight_decay);
    }
    return 0.0f;
  }
  float gradient_l1() const {
    switch (kind_) {
      case OptimizerKind::Sgd:
        return sgd_.l1;
      case OptimizerKind::Adagrad:
        return adagrad_.l1;
      case OptimizerKind::Rmsprop:
        return rmsprop_.l1;
      case OptimizerKind::Adam:
        return adam_.l1;
    }
    return 0.0f;
  }
  // Which of the three state buffers the rule uses (see OptimizerState): sgd [momentum];
  // adagrad [sum_sq]; rmsprop [square_avg, momentum, grad_avg]; adam [m, v].
  bool uses_buffer(int i) const {
    switch (kind_) {
      case OptimizerKind::Sgd:
        return i == 0 && sgd_.momentum != 0.0f;
      case OptimizerKind::Adagrad:
        return i == 0;
      case OptimizerKind::Rmsprop:
        return i == 0 || (i == 1 && rmsprop_.momentum != 0.0f) || (i == 2 && rmsprop_.centered);
      case OptimizerKind::Adam:
        return i == 0 || i == 1;
    }
    return false;
  }

  // PyTorch's name of state buffer i (for error messages).
  const char* buffer_name(int i) const {
    switch (kind_) {
      case OptimizerKind::Sgd:
        return "momentum_buffer";
      case OptimizerKind::Adagrad:
        return "sum";
      case OptimizerKind::Rmsprop:
        return i == 0 ? "square_avg" : i == 1 ? "momentum_buffer" : "grad_avg";
      case OptimizerKind::Adam:
        return i == 0 ? "exp_avg" : "exp_avg_sq";
    }
    return "state";
  }

 private:
  static void check_lr(double lr) {
    FASTMLP_CHECK(std::isfinite(static_cast<float>(lr)) && lr >= 0.0,
                  "lr: expected a finite learning rate >= 0, got ", lr);
  }

  OptimizerKind kind_;
  SgdConfig sgd_{};
  AdagradConfig adagrad_{};
  RmspropConfig rmsprop_{};
  AdamConfig adam_{};
};

// Checked by OptimizerState::prepare (CPU and CUDA), before a step changes anything: the step
// counts from step + 1, which must fit an int64_t. Only a restored state can be this far; past the
// check, the rules' own step check fired inside the engine's parallel update, where an exception
// ends the process.
inline void check_step_room(int64_t step) {
  FASTMLP_CHECK(step < INT64_MAX, "step: the optimizer has counted ", step,
                " steps, the most an int64 holds; it can take no more");
}

// The checks of OptimizerState::restore (CPU and CUDA): a step count >= 0; n parameters, or -1 for
// a state saved before its first step (step 0, no buffers); a buffer exactly where the
// configuration uses one.
inline void check_restored_state(const OptimizerConfig& config, int64_t step, int64_t n,
                                 const std::array<const float*, 3>& buffers) {
  FASTMLP_CHECK(step >= 0, "step: expected a count >= 0, got ", step);
  FASTMLP_CHECK(n >= 0 || (n == -1 && step == 0), "optimizer state: ", n, " parameters with step ",
                step, " (a state has its buffers once it has stepped)");
  for (int i = 0; i < 3; ++i) {
    const bool wanted = config.uses_buffer(i) && n >= 0;
    FASTMLP_CHECK((buffers[i] != nullptr) == wanted, config.buffer_name(i),
                  wanted ? ": missing from the saved state" : ": not a buffer of this state");
  }
}

}  // namespace fastmlp
