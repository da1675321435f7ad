// AVX2 loops of softmax.cpp: the row exponentials exp(x - shift) on eight lanes with
// common/exp_math.h's function (cpu/exp_avx2.h), bit-identical to softmax.cpp's scalar loops.
// Compiled with -mavx2 -mfma -ffp-contract=off; only called after cpu_has_avx2_fma().
#include <immintrin.h>

#include <cstdint>

#include "common/exp_math.h"
#include "cpu/exp_avx2.h"

namespace fastmlp::detail {
namespace {

// The last n < 8 elements of a row through one vector (rows of 10 classes are common: a scalar
// tail of 2 cost as much as the full vector). Lanes past n read nothing (masked load) and are
// dropped; each lane's bits are those of the scalar function.
struct Tail {
  __m256i mask;
  int n;
  explicit Tail(int64_t count) : n(static_cast<int>(count)) {
    mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  __m256 load(const float* p) const { return _mm256_maskload_ps(p, mask); }
  // Through a buffer: VMASKMOVPS stores are microcoded on AMD Zen (see gemm_kernel_avx2.cpp).
  void store(float* p, __m256 v) const {
    alignas(32) float row[8];
    _mm256_store_ps(row, v);
    for (int l = 0; l < n; ++l) p[l] = row[l];
  }
};

}  // namespace

// e[j] = exp(x[j] - shift) for j < n. e may alias x exactly.
void exp_shifted_avx2(float* e, const float* x, float shift, int64_t n) {
  const __m256 s = _mm256_set1_ps(shift);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(e + j, expmath::exp(_mm256_sub_ps(_mm256_loadu_ps(x + j), s)));
  }
  if (j < n) {
    const Tail tail(n - j);
    tail.store(e + j, expmath::exp(_mm256_sub_ps(tail.load(x + j), s)));
  }
}

// dx[j] = dy[j] - exp(y[j]) * s for j < n. dx may alias dy exactly.
void log_softmax_backward_row_avx2(float* dx, const float* y, const float* dy, float s, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = expmath::exp(_mm256_loadu_ps(y + j));
    _mm256_storeu_ps(dx + j, _mm256_sub_ps(_mm256_loadu_ps(dy + j), _mm256_mul_ps(e, vs)));
  }
  if (j < n) {
    const Tail tail(n - j);
    const __m256 e = expmath::exp(tail.load(y + j));
    tail.store(dx + j, _mm256_sub_ps(tail.load(dy + j), _mm256_mul_ps(e, vs)));
  }
}

}  // namespace fastmlp::detail
