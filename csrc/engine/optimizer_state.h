// One optimizer's state for one network: its kind, hyperparameters, step count and flat state
// buffers laid out like the network's parameter buffer (see engine/network.h). Each Python
// optimizer object owns one of these, so two optimizers never share momentum or moments, and a new
// optimizer starts from zero state as in PyTorch.
//
// One update of all P parameters is apply_range() over pieces that together cover [0, P), then
// finish_step(): the engine updates each piece of the weights and then repacks it while it is in
// the cache (engine/network.cpp, Network::update_part). Every parameter shares the
// hyperparameters (weight decay applies to biases and PReLU slopes too, PyTorch's default).
// State buffers are allocated by the first prepare(), sized for that network; a later prepare()
// with another parameter count throws ValueError (the optimizer belongs to another model).
//
// lock(): the engine holds it for a whole training step, the bindings around every other use from
// Python (lr, step, export, restore), so that a Python thread neither sees nor changes the state
// halfway through a step that another runs with the GIL released (a restore freed the buffers
// that a step was writing: a segfault). The methods themselves do not lock.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <vector>

#include "engine/optimizer_config.h"

namespace fastmlp {

class OptimizerState {
 public:
  template <typename Config>
  explicit OptimizerState(const Config& config) : config_(config) {}

  OptimizerKind kind() const { return config_.kind(); }
  int64_t step() const { return step_; }
  double lr() const { return config_.lr(); }
  const OptimizerConfig& config() const { return config_; }
  void set_lr(double lr) { config_.set_lr(lr); }  // ValueError unless finite and >= 0
  std::unique_lock<std::mutex> lock() const { return std::unique_lock<std::mutex>(mutex_); }

  // Allocates the state buffers for n parameters if not done yet (so that an allocation failure
  // happens before any parameter changes); ValueError if they were sized for another n, or if the
  // step count has no room for one more step (check_step_room).
  void prepare(int64_t n);
  // p -= update(g) over [begin, end) of the n parameters with step = step() + 1, without
  // counting the step; finish_step() counts it once every range is done. Disjoint ranges may be
  // updated from several threads (the engine's batch-parallel step updates the gradient blocks
  // each thread just computed). The rules are elementwise, so any split gives the same bits. Call
  // prepare(n) first; nothing here allocates, the configuration was checked at construction and
  // the step by prepare, so these do not throw (they run inside OpenMP regions).
  void apply_range(float* params, const float* grads, int64_t begin, int64_t end);
  void finish_step() { ++step_; }

  // Saving and restoring (fastmlp.optim's state_dict / load_state_dict). size(): the parameter
  // count the buffers were built for, -1 before the first step; buffer_copy(i): buffer i, empty
  // when the configuration does not use it (config().uses_buffer(i)) or before the first step.
  int64_t size() const { return size_; }
  std::vector<float> buffer_copy(int i) const { return buffers_[i]; }
  // Replaces the step count and the buffers with a saved state: n parameters (-1, with step 0 and
  // no buffers, for a state saved before its first step) and n floats at buffers[i] for each
  // buffer the configuration uses (nullptr for the others). ValueError if they do not fit, and
  // then nothing changes.
  void restore(int64_t step, int64_t n, const std::array<const float*, 3>& buffers);

 private:
  mutable std::mutex mutex_;
  OptimizerConfig config_;
  int64_t step_ = 0;
  int64_t size_ = -1;  // parameter count the buffers were sized for; -1 before the first prepare
  // As OptimizerConfig::uses_buffer; buffers a configuration does not need stay empty.
  std::vector<float> buffers_[3];
};

}  // namespace fastmlp
