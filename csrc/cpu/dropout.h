// Inverted dropout with a counter-based RNG (common/random.h): element i of a call is kept iff
// uniform(seed, offset + i) >= p, and kept elements are scaled by 1 / (1 - p). The mask depends
// only on (seed, offset + i), never on the thread count or the device, and backward regenerates it
// instead of storing it. 0 <= p < 1; p == 0 copies. Outputs may alias inputs.
#pragma once

#include <cstdint>

namespace fastmlp {

void dropout_forward(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t offset);
void dropout_backward(float* dx, const float* dy, int64_t n, float p, uint64_t seed,
                      uint64_t offset);
// mask[i] = 1 / (1 - p) if kept, else 0: the factor forward multiplies by.
void dropout_mask(float* mask, int64_t n, float p, uint64_t seed, uint64_t offset);

}  // namespace fastmlp
