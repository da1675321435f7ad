// cpu/row_exp.h's LaneSum on AVX2 registers: eight double lanes, 0-3 in `lo` and 4-7 in `hi`,
// element j of a row added to lane j % 8, then closed by LaneSum::total's tree, so a row summed
// here has the scalar LaneSum's bits. Include only from -mavx2 translation units.
#pragma once

#include <immintrin.h>

#include "common/macros.h"

namespace fastmlp::avx2 {

struct LaneSum {
  __m256d lo = _mm256_setzero_pd();
  __m256d hi = _mm256_setzero_pd();

  // The eight float terms of v, one per lane.
  FASTMLP_ALWAYS_INLINE void add(__m256 v) {
    add(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  // Double terms: lanes 0-3 and 4-7.
  FASTMLP_ALWAYS_INLINE void add(__m256d terms_lo, __m256d terms_hi) {
    lo = _mm256_add_pd(lo, terms_lo);
    hi = _mm256_add_pd(hi, terms_hi);
  }
  // ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), as LaneSum::total.
  FASTMLP_ALWAYS_INLINE double total() const {
    const __m256d a = _mm256_add_pd(lo, hi);
    const __m128d b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
  }
};

}  // namespace fastmlp::avx2
