// One optimizer's state for one network: its kind, hyperparameters, step count and flat state
// buffers laid out like the network's parameter buffer (see engine/network.h). Each Python
// optimizer object owns one of these, so two optimizers never share momentum or moments, and a new
// optimizer starts from zero state as in PyTorch.
//
// apply() runs ONE call of cpu/optim.h over all P parameters (every parameter shares the
// hyperparameters; weight decay applies to biases and PReLU slopes too, PyTorch's default).
// State buffers are allocated on the first apply(), sized for that network; a later apply() with
// another parameter count throws ValueError (the optimizer belongs to another model).
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/optim.h"

namespace fastmlp {

enum class OptimizerKind : int { Sgd = 0, Adagrad = 1, Rmsprop = 2, Adam = 3 };

class OptimizerState {
 public:
  explicit OptimizerState(const SgdConfig& config);
  explicit OptimizerState(const AdagradConfig& config);
  explicit OptimizerState(const RmspropConfig& config);
  explicit OptimizerState(const AdamConfig& config);  // AdamW: config.decoupled_weight_decay

  OptimizerKind kind() const { return kind_; }
  int64_t step() const { return step_; }
  float lr() const;
  void set_lr(float lr);  // ValueError unless finite and >= 0

  // Allocates the state buffers for n parameters if not done yet (so that an allocation failure
  // happens before any parameter changes); ValueError if they were sized for another n.
  void prepare(int64_t n);
  // p -= update(g) over n floats with step = step() + 1, then counts the step. Call prepare(n)
  // first; apply() does not allocate. The kernels check their config before writing anything,
  // so should one throw, parameters, state and step count are unchanged.
  void apply(float* params, const float* grads, int64_t n);

  // apply() in pieces, for a caller that updates disjoint ranges from several threads (the
  // engine's batch-parallel step updates the gradient blocks each thread just computed, while
  // they are in its cache): apply_range updates [begin, end) of the n parameters with step
  // step() + 1 without counting it; finish_step() counts the step once every range is done.
  // The rules are elementwise, so any split gives the bits of apply(). Call prepare(n) first;
  // the configuration was checked at construction, so these do not throw.
  void apply_range(float* params, const float* grads, int64_t begin, int64_t end);
  void finish_step() { ++step_; }

 private:
  OptimizerKind kind_;
  SgdConfig sgd_;
  AdagradConfig adagrad_;
  RmspropConfig rmsprop_;
  AdamConfig adam_;
  int64_t step_ = 0;
  int64_t size_ = -1;  // parameter count the buffers were sized for; -1 before the first prepare
  // sgd: [momentum]; adagrad: [sum_sq]; rmsprop: [square_avg, momentum, grad_avg]; adam: [m, v].
  // Buffers a configuration does not need stay empty.
  std::vector<float> buffers_[3];
};

}  // namespace fastmlp
