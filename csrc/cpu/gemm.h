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

// A B that many products read unchanged (the engine's weights between two optimizer updates) can
// be packed once instead of in every call: gemm_packed_b is gemm(trans_a, false, ...) with B given
// as pack_b_rows wrote it. The packed layout is the one gemm's blocks use, for all of (k, n): k is
// cut into the k-blocks gemm uses (depending on k only), and the block that starts at row pc, of
// depth kc, starts at float pc * round_up(n, NR) and holds NR-column micro-panels of NR * kc
// floats, element (p, j) at panel j / NR, offset (p - pc) * NR + j % NR; the columns past n are
// zero. Results are bit-identical to gemm's with the same B.
int64_t packed_b_floats(int64_t k, int64_t n);

// Packs rows [row_begin, row_end) of the row-major (k, n) matrix b (row stride ldb) into `packed`
// (packed_b_floats(k, n) floats, 32-byte aligned), leaving the other rows' floats as they are, so
// that threads may pack disjoint row ranges of one matrix at the same time. It checks nothing
// (it runs inside the engine's parallel regions, where an exception could not propagate): the
// caller guarantees 0 <= row_begin <= row_end <= k and ldb >= n.
void pack_b_rows(float* packed, const float* b, int64_t ldb, int64_t k, int64_t n,
                 int64_t row_begin, int64_t row_end);

void gemm_packed_b(bool trans_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                   int64_t lda, const float* packed_b, float beta, float* c, int64_t ldc,
                   const GemmEpilogue& epilogue = GemmEpilogue{});

}  // namespace fastmlp
