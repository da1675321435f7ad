// Partial AVX2 vectors: the lanes [0, n) of a row that does not fill a whole vector (the GEMM's
// edge tiles, the tails of softmax rows). Include only from -mavx2 translation units.
#pragma once

#include <immintrin.h>

#include "common/macros.h"

namespace fastmlp::avx2 {

// Lanes 0..n-1 set, for masked loads (n in 0..8). Masked-off lanes read no memory.
FASTMLP_ALWAYS_INLINE __m256i lane_mask(int n) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
}

// Stores lanes [0, n) of v to p, n in 0..8. VMASKMOVPS stores are microcoded on AMD Zen (tens of
// uops each, and as slow with an all-zero mask), so an edge row goes through a buffer instead:
// on 32x2x16, a narrow output layer, the masked stores were a third of the GEMM's time.
FASTMLP_ALWAYS_INLINE void store_partial(float* p, __m256 v, int n) {
  alignas(32) float row[8];
  _mm256_store_ps(row, v);
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j)
    if (j < n) p[j] = row[j];
}

}  // namespace fastmlp::avx2
