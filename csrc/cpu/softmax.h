// Row-wise softmax and log-softmax over (rows, cols) row-major buffers, numerically stable
// (the row max is subtracted before exp). Output may alias input.
#pragma once

#include <cstdint>

namespace fastmlp {

void softmax_forward(float* y, const float* x, int64_t rows, int64_t cols);
void log_softmax_forward(float* y, const float* x, int64_t rows, int64_t cols);

// Given y = softmax(x): dx = y * (dy - sum_j dy_j y_j) per row. dx may alias dy.
void softmax_backward(float* dx, const float* y, const float* dy, int64_t rows, int64_t cols);
// Given y = log_softmax(x): dx = dy - exp(y) * sum_j dy_j per row. dx may alias dy.
void log_softmax_backward(float* dx, const float* y, const float* dy, int64_t rows, int64_t cols);

}  // namespace fastmlp
