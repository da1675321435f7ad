// Elementwise activations and the small reductions of backprop. x, y, dx, dy are contiguous
// float32 buffers of n elements; (rows, cols) buffers are row-major. Formulas:
// common/activation_math.h.
#pragma once

#include <cstdint>

#include "common/activation_math.h"

namespace fastmlp {

// y = f(x). y may alias x (in place).
void activation_forward(float* y, const float* x, int64_t n, Activation kind, float alpha);

// dx = dy * f'(x) where y = f(x) from the forward pass. dx may alias dy. Overwrites dx.
void activation_backward(float* dx, const float* x, const float* y, const float* dy, int64_t n,
                         Activation kind, float alpha);

// PReLU with a learned slope: x, y are (rows, cols); slope has n_slope elements, n_slope is 1
// (one slope shared by all columns) or cols (one per column). y may alias x.
void prelu_forward(float* y, const float* x, const float* slope, int64_t rows, int64_t cols,
                   int64_t n_slope);

// dx = dy * f'(x); dslope[j] = sum over the elements that use slope j of dy * min(x, 0).
// dslope is overwritten (not accumulated). dx may alias dy.
void prelu_backward(float* dx, float* dslope, const float* x, const float* slope, const float* dy,
                    int64_t rows, int64_t cols, int64_t n_slope);

// out[j] = sum_i x[i, j] (the bias gradient), x with row stride ld >= cols. Overwrites out. The
// sum order of a column depends on rows only (not on the thread count, nor on the other columns),
// so results are bit-identical across set_num_threads and for any slice of columns.
void column_sum(float* out, const float* x, int64_t rows, int64_t cols, int64_t ld);
inline void column_sum(float* out, const float* x, int64_t rows, int64_t cols) {
  column_sum(out, x, rows, cols, cols);
}

}  // namespace fastmlp
