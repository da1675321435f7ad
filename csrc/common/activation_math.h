// Scalar activation math, shared by the CPU kernels, the GEMM epilogue and the CUDA kernels.
//
//   identity    f(x) = x                                   f'(x) = 1
//   relu        f(x) = max(x, 0)                           f'(x) = [x > 0]
//   leaky_relu  f(x) = x if x > 0 else alpha * x           f'(x) = 1 if x > 0 else alpha
//   prelu       same as leaky_relu, alpha is learned       df/dalpha = 0 if x > 0 else x
//   elu         f(x) = x if x > 0 else alpha * (e^x - 1)   f'(x) = 1 if x > 0 else alpha * e^x
//   sigmoid     f(x) = 1 / (1 + e^-x)                      f'(x) = f(x) * (1 - f(x))
//   tanh        f(x) = tanh(x)                             f'(x) = 1 - f(x)^2
//
// At x == 0 the derivative is the left one (relu'(0) = 0, leaky'(0) = alpha), as in PyTorch.
// NaN passes through every forward (relu included). The backward passes go through
// activation_dx, which follows PyTorch's backward kernels at NaN and inf too: relu selects
// (dx = x <= 0 ? 0 : dy, threshold_backward), so a dead unit passes no gradient even when dy is
// inf or NaN (dy * 0 would be NaN) and a NaN input passes dy on; the other sign tests take the
// x <= 0 branch for NaN and multiply (leaky: dy * alpha, as leaky_relu_backward).
// e^x, e^x - 1, sigmoid and tanh are common/exp_math.h's (vectorised in cpu/exp_avx2.h with the
// same bits): not the C library's, which are scalar calls several times slower.
// The derivative takes both the input x and the output y = f(x) and uses whichever gives it
// accurately and cheaply: y for sigmoid and tanh, x for the sign tests and for elu, whose
// f(x) + alpha would cancel to one rounding step of alpha for x below about -5 (0 from x = -20,
// where alpha * e^x is still 2e-9 alpha); PyTorch's elu_backward also reads x.
#pragma once

#include <cmath>

#include "common/exp_math.h"
#include "common/macros.h"

namespace fastmlp {

enum class Activation : int {
  Identity = 0,
  Relu = 1,
  LeakyRelu = 2,
  Prelu = 3,
  Elu = 4,
  Sigmoid = 5,
  Tanh = 6,
};

FASTMLP_HD float activation_forward(Activation kind, float x, float alpha) {
  switch (kind) {
    case Activation::Identity:
      return x;
    case Activation::Relu:
      // Written so that NaN passes through (as np.maximum and PyTorch): a NaN mapped to 0 here
      // would hide a diverged layer behind a finite loss. The AVX2 epilogue's max(0, z) is the
      // same function, -0 included.
      return x < 0.0f ? 0.0f : x;
    case Activation::LeakyRelu:
    case Activation::Prelu:
      return x > 0.0f ? x : alpha * x;
    case Activation::Elu:
      return x > 0.0f ? x : expmath::mul_rn(alpha, expmath::expm1(x));
    case Activation::Sigmoid:
      return expmath::sigmoid(x);
    case Activation::Tanh:
      return expmath::tanh(x);
  }
  return x;
}

// df/dx at x, given y = activation_forward(kind, x, alpha).
FASTMLP_HD float activation_derivative(Activation kind, float x, float y, float alpha) {
  switch (kind) {
    case Activation::Identity:
      return 1.0f;
    case Activation::Relu:
      return x > 0.0f ? 1.0f : 0.0f;
    case Activation::LeakyRelu:
    case Activation::Prelu:
      return x > 0.0f ? 1.0f : alpha;
    case Activation::Elu:
      return x > 0.0f ? 1.0f : expmath::mul_rn(alpha, expmath::exp(x));
    case Activation::Sigmoid:
      return y * (1.0f - y);
    case Activation::Tanh:
      return expmath::add_rn(1.0f, -expmath::mul_rn(y, y));  // no FMA under nvcc either
  }
  return 1.0f;
}

// dx = dy * f'(x) as every backward pass computes it (relu as a select: see the header comment).
FASTMLP_HD float activation_dx(Activation kind, float dy, float x, float y, float alpha) {
  if (kind == Activation::Relu) return x <= 0.0f ? 0.0f : dy;
  return dy * activation_derivative(kind, x, y, alpha);
}

}  // namespace fastmlp
