#include "engine/optimizer_state.h"

#include <cmath>

#include "common/errors.h"

namespace fastmlp {

namespace {
void check_lr(float lr) {
  FASTMLP_CHECK(std::isfinite(lr) && lr >= 0.0f, "lr: expected a finite learning rate >= 0, got ",
                lr);
}
}  // namespace

// Each constructor runs its kernel on zero elements: that applies the kernel's own config checks
// (one set of rules) now, when the optimizer is built, instead of at the first step.
OptimizerState::OptimizerState(const SgdConfig& config) : kind_(OptimizerKind::Sgd), sgd_(config) {
  check_lr(config.lr);
  sgd_step(nullptr, nullptr, nullptr, 0, sgd_, 1);
}
OptimizerState::OptimizerState(const AdagradConfig& config)
    : kind_(OptimizerKind::Adagrad), adagrad_(config) {
  check_lr(config.lr);
  adagrad_step(nullptr, nullptr, nullptr, 0, adagrad_, 1);
}
OptimizerState::OptimizerState(const RmspropConfig& config)
    : kind_(OptimizerKind::Rmsprop), rmsprop_(config) {
  check_lr(config.lr);
  rmsprop_step(nullptr, nullptr, nullptr, nullptr, nullptr, 0, rmsprop_, 1);
}
OptimizerState::OptimizerState(const AdamConfig& config)
    : kind_(OptimizerKind::Adam), adam_(config) {
  check_lr(config.lr);
  adam_step(nullptr, nullptr, nullptr, nullptr, 0, adam_, 1);
}

float OptimizerState::lr() const {
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
  return 0.0f;
}

void OptimizerState::set_lr(float lr) {
  check_lr(lr);
  switch (kind_) {
    case OptimizerKind::Sgd:
      sgd_.lr = lr;
      break;
    case OptimizerKind::Adagrad:
      adagrad_.lr = lr;
      break;
    case OptimizerKind::Rmsprop:
      rmsprop_.lr = lr;
      break;
    case OptimizerKind::Adam:
      adam_.lr = lr;
      break;
  }
}

void OptimizerState::prepare(int64_t n) {
  if (size_ == n) return;
  FASTMLP_CHECK(size_ < 0, "optimizer: its state was built for a model with ", size_,
                " parameters, this one has ", n);
  const auto sz = static_cast<size_t>(n);
  switch (kind_) {
    case OptimizerKind::Sgd:
      if (sgd_.momentum != 0.0f) buffers_[0].assign(sz, 0.0f);
      break;
    case OptimizerKind::Adagrad:
      buffers_[0].assign(sz, 0.0f);
      break;
    case OptimizerKind::Rmsprop:
      buffers_[0].assign(sz, 0.0f);
      if (rmsprop_.momentum != 0.0f) buffers_[1].assign(sz, 0.0f);
      if (rmsprop_.centered) buffers_[2].assign(sz, 0.0f);
      break;
    case OptimizerKind::Adam:
      buffers_[0].assign(sz, 0.0f);
      buffers_[1].assign(sz, 0.0f);
      break;
  }
  size_ = n;
}

void OptimizerState::apply(float* params, const float* grads, int64_t n) {
  apply_range(params, grads, 0, n);
  finish_step();
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
  switch (kind_) {
    case OptimizerKind::Sgd:
      sgd_step(p, b0, g, n, sgd_, step);
      break;
    case OptimizerKind::Adagrad:
      adagrad_step(p, b0, g, n, adagrad_, step);
      break;
    case OptimizerKind::Rmsprop:
      rmsprop_step(p, b0, b1, b2, g, n, rmsprop_, step);
      break;
    case OptimizerKind::Adam:
      adam_step(p, b0, b1, g, n, adam_, step);
      break;
  }
}

}  // namespace fastmlp
