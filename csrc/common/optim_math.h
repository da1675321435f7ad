// Per-element optimizer update rules, shared by the CPU loops (cpu/optim.cpp) and the CUDA kernels.
// They follow PyTorch's torch.optim (single-tensor, non-fused path), including the order of the
// float32 operations where it is cheap to do so. The host turns a config and a step number into a
// small *Scalars struct once per call (bias corrections, decayed learning rates: computed in double
// as PyTorch does in Python, then rounded to float); the rules below only see floats.
//
// Notation: p parameter, g raw gradient, g' = g + weight_decay * p + l1 * sign(p) (sign(0) = 0).
// Each rule reads every input of its element before writing, so grad may alias param.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/macros.h"

namespace fastmlp {

// Branch-free (two compares, no jump) so that the CPU loops vectorise; 0 for 0 and NaN.
FASTMLP_HD float sign_of(float x) {
  return static_cast<float>(x > 0.0f) - static_cast<float>(x < 0.0f);
}

// g' = g + weight_decay * p + l1 * sign(p): coupled L2 (as torch.optim's weight_decay) and L1.
// With weight_decay == 0 and l1 == 0 this is g exactly (adding +-0 does not change a finite g).
FASTMLP_HD float regularized_grad(float g, float p, float weight_decay, float l1) {
  return g + weight_decay * p + l1 * sign_of(p);
}

// The regularised gradients an optimizer update accepts: |g| + weight_decay * |p| + l1, a bound on
// |g'|, below 2^64 (NaN and inf fail the test too). The adaptive rules square g' (Adam's and
// RMSProp's second moments, AdaGrad's sum) and from 2^64 on the square overflows float32
// (2^128): the step would write inf or NaN into the parameters while reporting success. The
// engines refuse such a step before any update, as they refuse NaN and inf. (AdaGrad's sum can
// still reach float32's range over very many steps of gradients near the bound.)
constexpr float kUpdateGradientLimit = 18446744073709551616.0f;  // 2^64

// Whether g' can be formed and squared in float32 (see kUpdateGradientLimit); false for NaN.
FASTMLP_HD bool gradient_updatable(float g, float p, float weight_decay, float l1) {
  return fabsf(g) + weight_decay * fabsf(p) + l1 < kUpdateGradientLimit;
}

// ---------------------------------------------------------------- SGD
struct SgdScalars {
  float lr;
  float momentum;
  float one_minus_dampening;
  float weight_decay;
  float l1;
  bool use_momentum;  // momentum != 0: the buffer b is read and written
  bool nesterov;
  bool first_step;  // step == 1: b = g' (PyTorch creates the buffer as a copy of g')
};

// b = g' on the first step, else b = momentum * b + (1 - dampening) * g';
// d = g' + momentum * b if nesterov else b (d = g' without momentum);  p -= lr * d.
FASTMLP_HD void sgd_update(float& p, float& b, float g, const SgdScalars& s) {
  const float gr = regularized_grad(g, p, s.weight_decay, s.l1);
  float d = gr;
  if (s.use_momentum) {
    b = s.first_step ? gr : s.momentum * b + s.one_minus_dampening * gr;
    d = s.nesterov ? gr + s.momentum * b : b;
  }
  p -= s.lr * d;
}

// ---------------------------------------------------------------- AdaGrad
struct AdagradScalars {
  float clr;  // lr / (1 + (step - 1) * lr_decay)
  float eps;
  float weight_decay;
  float l1;
};

// s += g'^2;  p -= clr * g' / (sqrt(s) + eps).
FASTMLP_HD void adagrad_update(float& p, float& s, float g, const AdagradScalars& c) {
  const float gr = regularized_grad(g, p, c.weight_decay, c.l1);
  s += gr * gr;
  p -= c.clr * gr / (sqrtf(s) + c.eps);
}

// ---------------------------------------------------------------- RMSprop
struct RmspropScalars {
  float lr;
  float alpha;
  float one_minus_alpha;
  float eps;
  float weight_decay;
  float momentum;
  float l1;
  bool centered;      // a (grad_avg) is read and written
  bool use_momentum;  // b (momentum_buffer) is read and written
};

// v = alpha v + (1 - alpha) g'^2;
// centered: a = alpha a + (1 - alpha) g', denom = sqrt(max(v - a^2, 0)) + eps, else sqrt(v) + eps;
// momentum: b = momentum b + g' / denom, p -= lr b;  else p -= lr g' / denom.
// The max(., 0) is our one addition to PyTorch: v >= a^2 holds exactly (a weighted variance), but
// in float32 v - a^2 can round below zero once the gradient is nearly constant, and PyTorch would
// then return NaN; clamping changes nothing else.
FASTMLP_HD void rmsprop_update(float& p, float& v, float& b, float& a, float g,
                               const RmspropScalars& c) {
  const float gr = regularized_grad(g, p, c.weight_decay, c.l1);
  v = c.alpha * v + c.one_minus_alpha * gr * gr;
  float var = v;
  if (c.centered) {
    a = c.alpha * a + c.one_minus_alpha * gr;
    var = v - a * a;
    var = var < 0.0f ? 0.0f : var;  // NaN stays NaN (as np.maximum in the reference)
  }
  const float denom = sqrtf(var) + c.eps;
  if (c.use_momentum) {
    b = c.momentum * b + gr / denom;
    p -= c.lr * b;
  } else {
    p -= c.lr * gr / denom;
  }
}

// ---------------------------------------------------------------- Adam / AdamW
struct AdamScalars {
  float beta1;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float step_size;              // lr / (1 - beta1^step)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  float eps;
  float weight_decay;  // coupled (Adam); 0 for AdamW
  float decay;         // 1 - lr * weight_decay for AdamW; 1 for Adam
  float l1;
};

// g' from the parameter before any decay;  AdamW: p *= 1 - lr * weight_decay;
// m = beta1 m + (1 - beta1) g';  v = beta2 v + (1 - beta2) g'^2;
// p -= step_size * m / (sqrt(v) / sqrt(1 - beta2^step) + eps).
FASTMLP_HD void adam_update(float& p, float& m, float& v, float g, const AdamScalars& c) {
  const float gr = regularized_grad(g, p, c.weight_decay, c.l1);
  float q = p * c.decay;  // exact when decay == 1 (Adam)
  m = c.beta1 * m + c.one_minus_beta1 * gr;
  v = c.beta2 * v + c.one_minus_beta2 * gr * gr;
  const float denom = sqrtf(v) / c.bias_correction2_sqrt + c.eps;
  q -= c.step_size * m / denom;
  p = q;
}

}  // namespace fastmlp
