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

#include "engine/optimizer_config.h"

namespace fastmlp {

class OptimizerState {
 public:
  template <typename Config>
  explicit OptimizerState(const Config& config) : config_(config) {}

  OptimizerKind kind() const { return config_.kind(); }
  int64_t step() const { return step_; }
  float lr() const { return config_.lr(); }
  void set_lr(float lr) { config_.set_lr(lr); }  // ValueError unless finite and >= 0

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
  OptimizerConfig config_;
  int64_t step_ = 0;
  int64_t size_ = -1;  // parameter count the buffers were sized for; -1 before the first prepare
  // As OptimizerConfig::uses_buffer; buffers a configuration does not need stay empty.
  std::vector<float> buffers_[3];
};

}  // namespace fastmlp
