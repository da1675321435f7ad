// Counter-based random numbers shared by the CPU and CUDA kernels: Philox4x32-10 (Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the generator behind cuRAND's
// curandStatePhilox4_32_10_t and PyTorch's CUDA random numbers, with the paper's constants.
// One call maps a 128-bit counter and a 64-bit key to four independent 32-bit words; there is no
// state, so any element can be drawn in any order on any thread or device and get the same number.
//
// How fastmlp maps elements to counters (the CPU and CUDA dropout kernels and
// fastmlp.reference.dropout all follow this, so their masks are bit-identical):
//   j       = (offset + i) mod 2^64           global index of element i of a call
//   key     = { seed & 0xffffffff, seed >> 32 }
//   counter = { c & 0xffffffff, c >> 32, 0, 0 }   with c = j / 4   (j >> 2)
//   r       = philox4x32_10(counter, key)[j % 4]
//   u       = (r >> 8) * 2^-24                 uniform in [0, 1) on a grid of 2^-24, exact in float
// So elements 4c .. 4c+3 share one Philox call, and u depends only on (seed, offset + i). A caller
// that draws several masks from one seed gives each a disjoint range of offsets.
#pragma once

#include <cstdint>

#include "common/macros.h"

namespace fastmlp {

struct Philox4x32Block {
  uint32_t x[4];
};

namespace philox {
// Multipliers and Weyl key increments of Philox4x32 (Random123, philox.h).
constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kW1 = 0xBB67AE85u;  // sqrt(3) - 1
constexpr int kRounds = 10;

FASTMLP_HD void mul_hilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  *lo = a * b;
#else
  const uint64_t prod = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(prod >> 32);
  *lo = static_cast<uint32_t>(prod);
#endif
}
}  // namespace philox

// Philox4x32 with 10 rounds: each round is two 32x32->64 multiplies and a word shuffle keyed by
// (k0, k1); the key is bumped by the Weyl constants between rounds.
FASTMLP_HD Philox4x32Block philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                         uint32_t k0, uint32_t k1) {
  for (int round = 0; round < philox::kRounds; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox::mul_hilo(philox::kM0, c0, &hi0, &lo0);
    philox::mul_hilo(philox::kM1, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += philox::kW0;
    k1 += philox::kW1;
  }
  return Philox4x32Block{{c0, c1, c2, c3}};
}

// The four words for global indices 4c .. 4c+3 under `seed` (see the mapping above).
FASTMLP_HD Philox4x32Block philox_block(uint64_t seed, uint64_t c) {
  return philox4x32_10(static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 0u, 0u,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Top 24 bits of r as a float in [0, 1): every value is exactly representable, so the CPU, the
// GPU and NumPy agree bit for bit (no rounding step that could differ between them).
FASTMLP_HD float uniform_from_bits(uint32_t r) {
  return static_cast<float>(r >> 8) * 5.9604644775390625e-08f;  // 2^-24
}

// Inverted-dropout factor for one element: 1 / (1 - p) (passed in as `scale`) when kept
// (u >= p), else 0. Both p and scale are float so that every backend compares the same numbers.
FASTMLP_HD float dropout_factor(uint32_t r, float p, float scale) {
  return uniform_from_bits(r) >= p ? scale : 0.0f;
}

}  // namespace fastmlp
