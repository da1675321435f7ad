#include "engine/optimizer_state.h"

#include "common/errors.h"

namespace fastmlp {

void OptimizerState::prepare(int64_t n) {
  check_step_room(step_);
  if (size_ == n) return;
  FASTMLP_CHECK(size_ < 0, "optimizer: its state was built for a model with ", size_,
                " parameters, this one has ", n);
  for (int i = 0; i < 3; ++i) {
    if (config_.uses_buffer(i)) buffers_[i].assign(static_cast<size_t>(n), 0.0f);
  }
  size_ = n;
}

void OptimizerState::restore(int64_t step, int64_t n, const std::array<const float*, 3>& buffers) {
  check_restored_state(config_, step, n, buffers);
  std::vector<float> fresh[3];  // filled first: a bad_alloc here leaves the state as it was
  for (int i = 0; i < 3; ++i) {
    if (buffers[i] != nullptr) fresh[i].assign(buffers[i], buffers[i] + n);
  }
  for (int i = 0; i < 3; ++i) buffers_[i].swap(fresh[i]);
  step_ = step;
  size_ = n;
}

void OptimizerState::apply_range(float* params, const float* grads, int64_t begin, int64_t end) {
  // An empty vector's data() may be nullptr, which the kernels accept for unused buffers.
  auto state = [&](int i) { return buffers_[i].empty() ? nullptr : buffers_[i].data() + begin; };
  float* b0 = state(0);
  float* b1 = state(1);
  float* b2 = state(2);
  float* p = params + begin;
  const float* g = grads + begin;
  const int64_t n = end - begin;
  const int64_t step = step_ + 1;
  switch (config_.kind()) {
    case OptimizerKind::Sgd:
      sgd_step(p, b0, g, n, config_.sgd(), step);
      break;
    case OptimizerKind::Adagrad:
      adagrad_step(p, b0, g, n, config_.adagrad(), step);
      break;
    case OptimizerKind::Rmsprop:
      rmsprop_step(p, b0, b1, b2, g, n, config_.rmsprop(), step);
      break;
    case OptimizerKind::Adam:
      adam_step(p, b0, b1, g, n, config_.adam(), step);
      break;
  }
}

}  // namespace fastmlp
