// Pieces shared by the two CUDA GEMMs (gemm.cu: FP32 on the CUDA cores; gemm_tf32.cu: TF32 on the
// tensor cores): the argument bundle, the global->register tile loads with zero padding at the
// edges, the fused epilogue, and the host-side checks and tile-config choice.
//
// Contract (cpu/gemm.h): C = act(alpha * op(A) @ op(B) + beta * C + bias), row-major;
// op(A) (m, k) is A (m, k) or, trans_a, A (k, m); op(B) (k, n) is B (k, n) or, trans_b, B (n, k);
// beta == 0 never reads C; preactivation (m, n, row stride ldc) receives z before the activation.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/activation_math.h"
#include "common/errors.h"
#include "cpu/gemm.h"
#include "cuda/check.h"

namespace fastmlp::cuda::gemm_detail {

struct GemmArgs {
  const float* a;
  const float* b;
  float* c;
  float* preactivation;  // nullptr: not stored
  const float* bias;     // nullptr: no bias
  int64_t m, n, k;
  int64_t lda, ldb, ldc;
  float alpha, beta;
  Activation activation;
  float activation_alpha;
  bool vec_a;  // A's rows may be read as float4: lda % 4 == 0 and a 16-byte aligned
  bool vec_b;
  bool vec_c;  // C / preactivation rows may be written as float4
};

// Loads 4 consecutive floats p[0..3] of a row whose valid length from p is `valid` (may be <= 0);
// missing elements are 0, so the tile past the matrix edge is zero-padded and contributes nothing.
// `vec` (the row is 16-byte aligned at p) allows one 16-byte load when all four are valid.
__device__ __forceinline__ float4 load4(const float* p, int64_t valid, bool vec) {
  if (vec && valid >= 4) return __ldg(reinterpret_cast<const float4*>(p));
  float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (valid > 0) v.x = __ldg(p);
  if (valid > 1) v.y = __ldg(p + 1);
  if (valid > 2) v.z = __ldg(p + 2);
  if (valid > 3) v.w = __ldg(p + 3);
  return v;
}

// z = alpha * acc (+ beta * C) (+ bias); preactivation <- z; C <- act(z), in the CPU epilogue's
// order of operations (cpu/gemm_kernel_generic.cpp). Out-of-range (row, col) are skipped.
__device__ __forceinline__ float epilogue_value(const GemmArgs& g, int64_t row, int64_t col,
                                                float acc) {
  float z = g.alpha * acc;
  if (g.beta != 0.0f) z += g.beta * g.c[row * g.ldc + col];
  if (g.bias != nullptr) z += __ldg(g.bias + col);
  return z;
}

__device__ __forceinline__ void store1(const GemmArgs& g, int64_t row, int64_t col, float acc) {
  if (row >= g.m || col >= g.n) return;
  const float z = epilogue_value(g, row, col, acc);
  if (g.preactivation != nullptr) g.preactivation[row * g.ldc + col] = z;
  g.c[row * g.ldc + col] = activation_forward(g.activation, z, g.activation_alpha);
}

// Four consecutive columns col..col+3 of one row (col % 4 == 0): one 16-byte store each for C and
// the preactivation when the row is aligned and all four are inside the matrix.
__device__ __forceinline__ void store4(const GemmArgs& g, int64_t row, int64_t col, float4 acc) {
  if (row >= g.m) return;
  if (g.vec_c && col + 3 < g.n) {
    const int64_t at = row * g.ldc + col;
    float4 z;
    z.x = epilogue_value(g, row, col + 0, acc.x);
    z.y = epilogue_value(g, row, col + 1, acc.y);
    z.z = epilogue_value(g, row, col + 2, acc.z);
    z.w = epilogue_value(g, row, col + 3, acc.w);
    if (g.preactivation != nullptr) *reinterpret_cast<float4*>(g.preactivation + at) = z;
    const Activation kind = g.activation;
    const float aa = g.activation_alpha;
    z.x = activation_forward(kind, z.x, aa);
    z.y = activation_forward(kind, z.y, aa);
    z.z = activation_forward(kind, z.z, aa);
    z.w = activation_forward(kind, z.w, aa);
    *reinterpret_cast<float4*>(g.c + at) = z;
    return;
  }
  store1(g, row, col + 0, acc.x);
  store1(g, row, col + 1, acc.y);
  store1(g, row, col + 2, acc.z);
  store1(g, row, col + 3, acc.w);
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// Checks the sizes (the bindings have checked shapes and aliasing) and fills GemmArgs.
inline GemmArgs make_args(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                          const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                          float* c, int64_t ldc, const GemmEpilogue& epi) {
  FASTMLP_CHECK(m >= 0 && n >= 0 && k >= 0, "m, n, k: expected >= 0, got ", m, ", ", n, ", ", k);
  FASTMLP_CHECK(lda >= (trans_a ? m : k) && lda >= 1, "lda: too small for op(a), got ", lda);
  FASTMLP_CHECK(ldb >= (trans_b ? k : n) && ldb >= 1, "ldb: too small for op(b), got ", ldb);
  FASTMLP_CHECK(ldc >= n && ldc >= 1, "ldc: expected >= n = ", n, ", got ", ldc);
  GemmArgs g{};
  g.a = a;
  g.b = b;
  g.c = c;
  g.preactivation = epi.preactivation;
  g.bias = epi.bias;
  g.m = m;
  g.n = n;
  // alpha == 0 reads neither A nor B (as BLAS and cpu/gemm.cpp): with k = 0 the accumulators stay
  // 0, so inf/NaN in A or B cannot turn alpha * acc into NaN.
  g.k = alpha == 0.0f ? 0 : k;
  g.lda = lda;
  g.ldb = ldb;
  g.ldc = ldc;
  g.alpha = alpha;
  g.beta = beta;
  g.activation = epi.activation;
  g.activation_alpha = epi.activation_alpha;
  g.vec_a = lda % 4 == 0 && aligned16(a);
  g.vec_b = ldb % 4 == 0 && aligned16(b);
  g.vec_c = ldc % 4 == 0 && aligned16(c) &&
            (epi.preactivation == nullptr || aligned16(epi.preactivation));
  return g;
}

// Streaming multiprocessors of the current device (the tile-config choice needs it).
inline int sm_count() {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "gemm: cudaGetDevice");
  int sms = 0;
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
             "gemm: cudaDeviceGetAttribute(multiprocessor count)");
  return sms;
}

// Calls launch(slab, grid) for each slab of at most 65,535 row tiles (gridDim.y, which holds the
// m tiles, allows no more): the same product on rows [r0, r0 + slab.m) of op(A), C and the
// preactivation, so that any m runs (the CPU GEMM has no such limit). The row offsets are
// multiples of 64 rows, so the float4 alignment that vec_a / vec_c promise still holds.
template <typename Launch>
void for_each_row_slab(const GemmArgs& g, bool trans_a, int bm, int bn, Launch launch) {
  const int64_t slab_rows = int64_t{65535} * bm;
  const int64_t tiles_n = (g.n + bn - 1) / bn;
  FASTMLP_CHECK(tiles_n <= (int64_t{1} << 31) - 1, "n: too many columns, got ", g.n);
  for (int64_t r0 = 0; r0 < g.m; r0 += slab_rows) {
    GemmArgs slab = g;
    slab.m = std::min(slab_rows, g.m - r0);
    slab.a = g.a + (trans_a ? r0 : r0 * g.lda);
    slab.c = g.c + r0 * g.ldc;
    if (g.preactivation != nullptr) slab.preactivation = g.preactivation + r0 * g.ldc;
    launch(slab,
           dim3(static_cast<unsigned>(tiles_n), static_cast<unsigned>((slab.m + bm - 1) / bm)));
  }
}

}  // namespace fastmlp::cuda::gemm_detail
