// Micro-kernels of the CPU GEMM: one MR x NR tile of C from a packed A micro-panel and a packed B
// micro-panel (layouts below), with the scaling by alpha/beta and, on the last k-block, the fused
// epilogue. Called only by csrc/cpu/gemm.cpp; the AVX2 one only after cpu_has_avx2_fma().
//
//   a: MR x kc micro-panel of op(A), at any strides: op(A)(i, p) = a[i*a_row + p*a_step].
//      Packed by gemm.cpp, column by column: a_row = 1, a_step = MR. Read where it lies: a_row =
//      lda, a_step = 1 for a row-major A; a_row = 1, a_step = lda for A^T. Only rows i < mr are
//      read (rows past the matrix edge may not exist when A is read in place).
//   b: packed kc x NR micro-panel of op(B), row by row: b[p*NR + j] = op(B)(p, j). Columns past
//      the matrix edge are zero in the panel, so a kernel may compute all NR columns of AB; only
//      the write-back must look at nr. (The kernels skip the FMAs of rows past mr; gemm.cpp cuts
//      a remainder of 2 rows as 4 + 4 for the AVX2 one.)
//   Write-back of the valid mr x nr corner (mr <= MR, nr <= NR), with AB = sum_p a[:, p] b[p, :]:
//      z = alpha * AB + beta * C          (beta == 0: C is not read, so NaN/garbage is harmless)
//      if epilogue: z += bias;  preactivation <- z (if given);  C <- act(z)
//      else:        C <- z
#pragma once

#include <cstdint>

#include "common/activation_math.h"
#include "cpu/gemm_config.h"

namespace fastmlp {

struct MicroTile {
  float* c = nullptr;  // top-left element of the tile in C
  int64_t ldc = 0;     // row stride of C (and of preactivation)
  int mr = 0;          // valid rows, 1..MR
  int nr = 0;          // valid columns, 1..NR
  float alpha = 1.0f;
  float beta = 0.0f;      // the caller's beta on the first k-block, 1 (accumulate) on later ones
  bool epilogue = false;  // true on the last k-block only
  const float* bias = nullptr;  // bias + column of the tile, or null
  Activation activation = Activation::Identity;
  float activation_alpha = 0.0f;
  float* preactivation = nullptr;  // same position as c in the preactivation matrix, or null
};

void gemm_micro_kernel_avx2(int64_t kc, const float* a, int64_t a_row, int64_t a_step,
                            const float* b, const MicroTile& tile);
void gemm_micro_kernel_generic(int64_t kc, const float* a, int64_t a_row, int64_t a_step,
                               const float* b, const MicroTile& tile);

}  // namespace fastmlp
