// In-place optimizer updates over one flat parameter tensor of n floats, following PyTorch's
// torch.optim conventions exactly (the per-element rules live in common/optim_math.h, shared with
// CUDA). g below is the raw gradient; every rule first forms
//   g' = g + weight_decay * p + l1 * sign(p)       (L2 and L1 regularisation, coupled)
// except AdamW, whose weight decay is decoupled (p *= 1 - lr * weight_decay before the update).
// `step` counts updates starting at 1. State buffers start zeroed.
#pragma once

#include <cstdint>

namespace fastmlp {

// Elements per thread below which another thread does not pay for itself. An update reads 2-4
// floats and writes 1-3 per element (memory-bound, well under 1 ns/element on one core once
// vectorised), so 32K elements is ~10-30 us of work against a few us to wake a thread; a
// 1M-parameter layer uses every thread. The engine threads its update (engine/network.cpp) by it.
constexpr int64_t kOptimizerGrain = int64_t{1} << 15;

struct SgdConfig {
  float lr = 0.01f;
  float momentum = 0.0f;
  float dampening = 0.0f;
  bool nesterov = false;
  float weight_decay = 0.0f;
  float l1 = 0.0f;
};
// b = g' on the first step, else b = momentum * b + (1 - dampening) * g';
// d = g' + momentum * b if nesterov else b;  p -= lr * d.  (d = g' when momentum == 0.)
// momentum_buffer may be nullptr when momentum == 0.
void sgd_step(float* param, float* momentum_buffer, const float* grad, int64_t n,
              const SgdConfig& config, int64_t step);

struct AdagradConfig {
  float lr = 0.01f;
  float lr_decay = 0.0f;
  float weight_decay = 0.0f;
  float eps = 1e-10f;
  float l1 = 0.0f;
};
// clr = lr / (1 + (step - 1) * lr_decay);  s += g'^2;  p -= clr * g' / (sqrt(s) + eps).
void adagrad_step(float* param, float* sum_sq, const float* grad, int64_t n,
                  const AdagradConfig& config, int64_t step);

struct RmspropConfig {
  float lr = 0.01f;
  float alpha = 0.99f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float momentum = 0.0f;
  bool centered = false;
  float l1 = 0.0f;
};
// v = alpha v + (1 - alpha) g'^2;  if centered: a = alpha a + (1 - alpha) g', denom = sqrt(v - a^2)
// + eps else denom = sqrt(v) + eps;  if momentum: b = momentum b + g'/denom, p -= lr b;  else p -=
// lr g'/denom. momentum_buffer may be nullptr when momentum == 0; grad_avg may be nullptr unless
// centered.
void rmsprop_step(float* param, float* square_avg, float* momentum_buffer, float* grad_avg,
                  const float* grad, int64_t n, const RmspropConfig& config, int64_t step);

// lr and weight_decay in double: AdamW's factor 1 - lr * weight_decay is computed from them, and
// from float32-rounded ones it is off by ~1e-8, all of it when lr * weight_decay is near 1
// (lr 0.3, weight_decay 3.3333333: -1.6e-8 instead of PyTorch's 1e-8, a sign flip).
struct AdamConfig {
  double lr = 1e-3;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;  // true: AdamW
  float l1 = 0.0f;
};
// (AdamW: p *= 1 - lr * weight_decay, and g' leaves weight decay out.)
// m = beta1 m + (1 - beta1) g';  v = beta2 v + (1 - beta2) g'^2;
// p -= (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps).
void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
               const AdamConfig& config, int64_t step);

}  // namespace fastmlp
