// Entry points of activations_avx2.cpp (compiled with -mavx2 -mfma), for activations.cpp and the
// GEMM epilogue (gemm_kernel_avx2.cpp). Each is bit-identical to the scalar loop over
// common/activation_math.h it replaces. Only call after cpu_has_avx2_fma().
#pragma once

#include <cstdint>

#include "common/activation_math.h"

namespace fastmlp::detail {

// y[i] = f(x[i]) over [begin, end) for every kind but identity; false (doing nothing) for
// identity. y may alias x exactly.
bool activation_forward_avx2(float* y, const float* x, int64_t begin, int64_t end, Activation kind,
                             float alpha);
// dx[i] = dy[i] * f'(x[i]) over [begin, end) for relu/leaky_relu/prelu/elu; false (doing nothing)
// for the other kinds. dx may alias dy exactly.
bool activation_backward_avx2(float* dx, const float* x, const float* y, const float* dy,
                              int64_t begin, int64_t end, Activation kind, float alpha);
// One row of prelu_forward / prelu_backward (same contracts as the scalar rows in activations.cpp).
void prelu_forward_row_avx2(float* yr, const float* xr, const float* slope, int64_t cols,
                            int64_t n_slope);
void prelu_backward_row_avx2(float* dxr, double* acc, const float* xr, const float* slope,
                             const float* dyr, int64_t cols, int64_t n_slope);
// acc[j] += x[i * ld + j] in double, for i = 0, 1, ..., rows - 1 in that order and j < cols: the
// chunk loop of column_sum.
void column_sum_rows_avx2(double* acc, const float* x, int64_t rows, int64_t cols, int64_t ld);

}  // namespace fastmlp::detail
