// Entry points of losses_avx2.cpp (compiled with -mavx2 -mfma), for losses.cpp. Each is
// bit-identical to the scalar loop it replaces. Only call after cpu_has_avx2_fma().
#pragma once

#include <cstdint>

namespace fastmlp::detail {

// One row of bce_with_logits: returns the row's loss sum in LaneSum's order (cpu/row_exp.h) and,
// unless d is nullptr, writes d[j] = (sigmoid(z[j]) - t[j]) * grad_scale. d may alias z or t.
double bce_row_avx2(float* d, const float* z, const float* t, int64_t n, float grad_scale);
// One row of mse_loss: the row's sum of (p - t)^2 in LaneSum's order and, unless d is nullptr,
// d[j] = (p[j] - t[j]) * grad_scale (in double, rounded once). d may alias p or t.
double mse_row_avx2(float* d, const float* p, const float* t, int64_t n, double grad_scale);

}  // namespace fastmlp::detail
