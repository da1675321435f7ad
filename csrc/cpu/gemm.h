// Single-precision GEMM with a fused epilogue, row-major throughout.
//
//   C = act( alpha * op(A) @ op(B) + beta * C + bias )
//
//   op(A) is (m, k): A is stored (m, k) with row stride lda, or (k, m) when trans_a.
//   op(B) is (k, n): B is stored (k, n) with row stride ldb, or (n, k) when trans_b.
//   C is (m, n) with row stride ldc. bias, when given, is (n,) and added to every row.
//   When beta == 0, C is write-only (it may hold NaN or garbage on entry).
//   When epilogue.preactivation is set, it receives z = alpha*op(A)op(B) + beta*C + bias (before
//   the activation), with row stride ldc; it may not alias C unless the activation is identity.
//   The epilogue is applied once per C tile, after the last k-block, while the tile is in
//   registers. Backprop uses NN (forward x @ W), NT (dX = dZ @ W^T) and TN (dW = X^T @ dZ). k == 0
//   is valid (C = act(beta*C + bias)); m == 0 or n == 0 does nothing.
#pragma once

#include <cstdint>

#include "common/activation_math.h"

namespace fastmlp {

struct GemmEpilogue {
  const float* bias = nullptr;
  Activation activation = Activation::Identity;
  float activation_alpha = 0.0f;  // leaky_relu / prelu slope, elu alpha
  float* preactivation = nullptr;
};

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
          const GemmEpilogue& epilogue = GemmEpilogue{});

}  // namespace fastmlp
