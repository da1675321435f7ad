// e^x and e^x - 1 in float32 for the activations (elu, sigmoid, tanh) and the row softmaxes, and
// log(1 + u) on [0, 1] for binary cross-entropy, written once as a fixed
// sequence of IEEE operations that the scalar code (CPU and CUDA) and the AVX2 code
// (cpu/exp_avx2.h) perform identically, so that every backend returns the same bits.
//
// Why not expf/expm1f/tanhf: the C library's are scalar calls (expm1f ~11 ns, tanhf ~18 ns per
// element on the 2-core EPYC), 5-9x slower than PyTorch's vectorised activations; a vectorised
// version of our own must agree with the scalar path it replaces bit for bit (the SIMD and generic
// kernels are tested for bit-identity), so both are written here from the same steps.
//
// Method (Cephes' expf): x = n ln2 + r with n = round(x log2e) and |r| <= ln2 / 2, r computed with
// ln2 split in two (Cody-Waite, the products n * kLn2Hi exact); e^r - 1 = r + r^2 q(r) with Cephes'
// degree-5 polynomial q; then e^x = 2^n (1 + (e^r - 1)) and e^x - 1 = 2^n (e^r - 1) + (2^n - 1).
// Accuracy against double over all 2^32 float inputs (a one-off sweep, 2026-11-24): sigmoid 2.40
// ulp, tanh 2.42, elu's derivative 1.01 with alpha 1 (1.77 with alpha 0.7), elu 1.60 with alpha
// 0.7 (0.83 with alpha 1 over every 97th float); tests/test_activations.py checks bounds on
// every 997th float. Subnormal results of exp are rounded once (2^n is
// applied as two normal powers of two); NaN passes through; overflow gives +inf.
//
// Every multiply-add is an explicit fma and every other product or sum an explicit mul_rn/add_rn:
// a compiler that contracted a * b + c into an FMA on one backend only would change the last bit.
// On the host mul_rn/add_rn are plain * and +, which the CPU library's -ffp-contract=off
// (CMakeLists.txt) keeps apart; nvcc contracts by default, hence __fmul_rn/__fadd_rn there.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/macros.h"

namespace fastmlp::expmath {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;      // 9 significant bits: n * kLn2Hi is exact
constexpr float kLn2Lo = -2.12194440e-4f;   // ln2 - kLn2Hi
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: (t + M) - M rounds t to an integer
constexpr float kExpMin = -104.0f;          // e^-104 < half the smallest subnormal: exp is 0
constexpr float kExpMax = 89.0f;            // e^89 > FLT_MAX: exp is +inf (n <= 128)
constexpr float kExpm1Min = -87.0f;         // e^-87 < ulp(1) / 2: e^x - 1 rounds to -1
constexpr float kExpm1Max = 88.0f;          // n <= 127; the callers pass at most 2 * kTanhMax
constexpr float kTanhMax = 9.5f;            // tanh(x) rounds to 1 from x = 9.011
// Cephes expf: e^r = 1 + r + r^2 (kQ0 + kQ1 r + ... + kQ5 r^5) on |r| <= ln2 / 2.
constexpr float kQ5 = 1.9875691500e-4f;
constexpr float kQ4 = 1.3981999507e-3f;
constexpr float kQ3 = 8.3334519073e-3f;
constexpr float kQ2 = 4.1665795894e-2f;
constexpr float kQ1 = 1.6666665459e-1f;
constexpr float kQ0 = 5.0000001201e-1f;
constexpr float kSqrt2 = 1.41421356f;
// Cephes logf: log(1 + f) = f - f^2 / 2 + f^3 (kL0 + kL1 f + ... + kL8 f^8) on 1 + f in
// [sqrt(1/2), sqrt(2)].
constexpr float kL8 = 7.0376836292e-2f;
constexpr float kL7 = -1.1514610310e-1f;
constexpr float kL6 = 1.1676998740e-1f;
constexpr float kL5 = -1.2420140846e-1f;
constexpr float kL4 = 1.4249322787e-1f;
constexpr float kL3 = -1.6668057665e-1f;
constexpr float kL2 = 2.0000714765e-1f;
constexpr float kL1 = -2.4999993993e-1f;
constexpr float kL0 = 3.3333331174e-1f;

FASTMLP_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

FASTMLP_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

FASTMLP_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

FASTMLP_HD float fma_rn(float a, float b, float c) {
  return fmaf(a, b, c);
}

// 2^n for n in [-126, 127], built from its exponent bits.
FASTMLP_HD float pow2i(int n) {
  const int32_t bits = (n + 127) << 23;
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

FASTMLP_HD float clamp(float x, float lo, float hi) {
  // Comparisons written as the AVX2 code's max/min: NaN gives lo (the callers restore NaN).
  x = x > lo ? x : lo;
  return hi < x ? hi : x;
}

// n = round(x log2e) (as a float holding an integer, |n| <= 151) and r = x - n ln2.
FASTMLP_HD float reduce(float x, float* r) {
  const float n = add_rn(add_rn(mul_rn(x, kLog2e), kRoundMagic), -kRoundMagic);
  *r = fma_rn(-n, kLn2Lo, fma_rn(-n, kLn2Hi, x));
  return n;
}

// e^r - 1 for |r| <= ln2 / 2, to about an ulp of itself (r dominates as r -> 0).
FASTMLP_HD float expm1_reduced(float r) {
  float q = fma_rn(kQ5, r, kQ4);
  q = fma_rn(q, r, kQ3);
  q = fma_rn(q, r, kQ2);
  q = fma_rn(q, r, kQ1);
  q = fma_rn(q, r, kQ0);
  return fma_rn(q, mul_rn(r, r), r);
}

// e^x: +inf above ln(FLT_MAX) = 88.72, 0 below -103.97, NaN passed through.
FASTMLP_HD float exp(float x) {
  if (x != x) return x;
  float r;
  const int n = static_cast<int>(reduce(clamp(x, kExpMin, kExpMax), &r));
  const float p = add_rn(expm1_reduced(r), 1.0f);
  // n in [-150, 128]: two normal powers of two, so that a subnormal result is rounded once.
  const int n1 = n >> 1;
  return mul_rn(mul_rn(p, pow2i(n1)), pow2i(n - n1));
}

// e^x - 1 for x <= kExpm1Max (the callers: elu's x <= 0, tanh's 2|x| <= 19); -1 below -87, NaN
// and +-0 passed through. Near 0 (n = 0) it is e^r - 1 itself, so tiny x keep their digits.
FASTMLP_HD float expm1(float x) {
  if (x != x || x == 0.0f) return x;  // NaN, or +-0 (e^r - 1 would turn -0 into +0)
  float r;
  const int n = static_cast<int>(reduce(clamp(x, kExpm1Min, kExpm1Max), &r));
  const float p = expm1_reduced(r);
  if (n == 0) return p;
  const float s = pow2i(n);  // n in [-126, 127]
  return fma_rn(s, p, add_rn(s, -1.0f));
}

// 1 / (1 + e^-x), from e = e^-|x| <= 1 so that nothing overflows: 1 / (1 + e) for x >= 0,
// e / (1 + e) below (NaN takes the second branch and stays NaN).
FASTMLP_HD float sigmoid(float x) {
  const float e = exp(-fabsf(x));
  return div_rn(x >= 0.0f ? 1.0f : e, add_rn(1.0f, e));
}

// tanh(x) = sign(x) m / (m + 2) with m = e^(2|x|) - 1: no cancellation for small |x| (m ~ 2|x|),
// and exactly 1 from |x| = kTanhMax on (m + 2 rounds to m there); -0 and NaN passed through.
FASTMLP_HD float tanh(float x) {
  float a = fabsf(x);
  a = kTanhMax < a ? kTanhMax : a;  // NaN stays NaN (the AVX2 min(kTanhMax, a))
  const float m = expm1(add_rn(a, a));
  return copysignf(div_rn(m, add_rn(m, 2.0f)), x);
}

// log(1 + f) - f for f = m - 1, m in [sqrt(1/2), sqrt(2)]: Cephes' -f^2 / 2 + f^3 p(f).
FASTMLP_HD float log1p_reduced_tail(float f) {
  float p = fma_rn(kL8, f, kL7);
  p = fma_rn(p, f, kL6);
  p = fma_rn(p, f, kL5);
  p = fma_rn(p, f, kL4);
  p = fma_rn(p, f, kL3);
  p = fma_rn(p, f, kL2);
  p = fma_rn(p, f, kL1);
  p = fma_rn(p, f, kL0);
  const float z = mul_rn(f, f);
  return fma_rn(mul_rn(f, z), p, mul_rn(-0.5f, z));
}

// log(1 + u) for u in [0, 1] (binary cross-entropy's u = e^-|z|), NaN passed through; about an
// ulp (tests/test_losses.py). w = 1 + u is rounded, and its rounding error c = (1 + u) - w is
// exact (u <= 1), so log(1 + u) = log(w) + log(1 + c / w) = log(w) + c / w to float precision,
// which keeps the digits of u -> 0 (where w = 1 and the result is c = u). log(w) by Cephes' logf:
// w = 2^k m with m in [sqrt(1/2), sqrt(2)] (k = 0 or 1; m and f = m - 1 exact), then
// log(w) = k ln2 + f + tail(f), ln2 split in two as for exp.
FASTMLP_HD float log1p_unit(float u) {
  const float w = add_rn(1.0f, u);
  const float c = add_rn(u, -add_rn(w, -1.0f));
  const bool halve = w > kSqrt2;  // NaN: false, and NaN flows through the rest
  const float f = add_rn(halve ? mul_rn(w, 0.5f) : w, -1.0f);
  const float k = halve ? 1.0f : 0.0f;
  const float tail = add_rn(fma_rn(k, kLn2Lo, log1p_reduced_tail(f)), div_rn(c, w));
  return fma_rn(k, kLn2Hi, add_rn(f, tail));
}

}  // namespace fastmlp::expmath
