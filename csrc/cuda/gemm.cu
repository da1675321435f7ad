// FP32 GEMM on the CUDA cores with the fused epilogue of cpu/gemm.h:
//   C = act(alpha * op(A) @ op(B) + beta * C + bias), preactivation <- z before act.
// Shapes: op(A) (m, k), op(B) (k, n), C (m, n), row-major with strides lda, ldb, ldc. All four
// transpose combinations (backprop uses NN, NT and TN). Aliasing: C must not overlap A, B or
// bias; preactivation may alias C only for the identity activation (checked by the bindings).
//
// Design (the classic 128x128x8 register-blocked SGEMM, cf. SGEMM_CUDA kernels 6-10 and
// NVIDIA's CUTLASS "SIMT" path): a block of 256 threads owns a BM x BN tile of C and walks k in
// steps of BK = 8.
//   - Global -> registers: each thread loads float4s of the next A and B tiles (16-byte loads when
//     the rows are 16-byte aligned and the four floats are inside the matrix, else guarded scalar
//     loads that zero-pad the edges, so the inner loop has a single path with no bounds checks).
//   - Registers -> shared memory, k-major: As[k][m], Bs[k][n]. Operands stored "along k" in
//     global memory (A not transposed, B transposed) are transposed on this store; rows are padded
//     by 4 floats, which keeps the float4 alignment and breaks the 2-way bank conflict of those
//     transposing stores. Two shared buffers: the loads of tile t+1 are in flight while tile t is
//     multiplied, and one __syncthreads per k-step suffices.
//   - Shared -> registers -> FMA: thread (ty, tx) of a 16x16 grid owns (BM/16) x (BN/16) outputs
//     as 4x4 sub-tiles spaced 64 apart (rows ty*4 + 64 s + i, cols tx*4 + 64 s + j), so each
//     quarter-warp's float4 reads of a Bs row are contiguous (no bank conflicts) and the epilogue
//     writes C with coalesced float4 stores.
// Two tile configs only (compile time matters): 128x128 (64 accumulators per thread) when it gives
// at least one block per SM, else 64x64 so that small layers still spread over the GPU.
// Deterministic: every output is one thread's fixed-order sum over k.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/check.h"
#include "cuda/gemm_common.cuh"
#include "cuda/kernels.h"

namespace fastmlp::cuda {
namespace {

using gemm_detail::GemmArgs;
using gemm_detail::load4;
using gemm_detail::store4;

constexpr int kThreads = 256;
constexpr int kBK = 8;
constexpr int kPad = 4;  // floats of padding per shared-memory row (see the header comment)

// ptxas (nvcc 13, sm_90): 57-59 registers for 64x64 tiles, 128 for 128x128 except NT (trans_b)
// at 135, which fits one block per SM instead of two. __launch_bounds__(kThreads, 2) brings it to
// 128 with 24 bytes of spills; whether that is faster has to be measured on a GPU.
template <int BM, int BN, bool kTransA, bool kTransB>
__global__ void __launch_bounds__(kThreads) sgemm_kernel(const GemmArgs g) {
  static_assert(BM % 64 == 0 && BN % 64 == 0, "tiles are whole 64-wide sub-tile groups");
  constexpr int kSubM = BM / 64;  // 4x4 sub-tiles per thread along m
  constexpr int kSubN = BN / 64;
  constexpr int kLoadsA = (BM * kBK / 4 + kThreads - 1) / kThreads;  // float4 loads per thread
  constexpr int kLoadsB = (BN * kBK / 4 + kThreads - 1) / kThreads;

  __shared__ __align__(16) float As[2][kBK][BM + kPad];
  __shared__ __align__(16) float Bs[2][kBK][BN + kPad];

  const int tid = threadIdx.x;
  const int tx = tid % 16;
  const int ty = tid / 16;
  const int64_t m0 = int64_t{blockIdx.y} * BM;
  const int64_t n0 = int64_t{blockIdx.x} * BN;

  float4 ra[kLoadsA];
  float4 rb[kLoadsB];

  // Global -> registers for the tile starting at k0. Loader l covers one float4 of the tile.
  auto load_tiles = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < kLoadsA; ++i) {
      const int l = tid + i * kThreads;
      if (l >= BM * kBK / 4) break;
      if (!kTransA) {  // A (m, k): float4 along k; row r, columns kq..kq+3 of the tile
        const int r = l / (kBK / 4), kq = (l % (kBK / 4)) * 4;
        const int64_t row = m0 + r, col = k0 + kq;
        ra[i] = row < g.m ? load4(g.a + row * g.lda + col, g.k - col, g.vec_a)
                          : make_float4(0.f, 0.f, 0.f, 0.f);
      } else {  // A (k, m): float4 along m; k-row kr, columns mq..mq+3 of the tile
        const int kr = l / (BM / 4), mq = (l % (BM / 4)) * 4;
        const int64_t krow = k0 + kr, col = m0 + mq;
        ra[i] = krow < g.k ? load4(g.a + krow * g.lda + col, g.m - col, g.vec_a)
                           : make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
#pragma unroll
    for (int i = 0; i < kLoadsB; ++i) {
      const int l = tid + i * kThreads;
      if (l >= BN * kBK / 4) break;
      if (!kTransB) {  // B (k, n): float4 along n
        const int kr = l / (BN / 4), nq = (l % (BN / 4)) * 4;
        const int64_t krow = k0 + kr, col = n0 + nq;
        rb[i] = krow < g.k ? load4(g.b + krow * g.ldb + col, g.n - col, g.vec_b)
                           : make_float4(0.f, 0.f, 0.f, 0.f);
      } else {  // B (n, k): float4 along k
        const int r = l / (kBK / 4), kq = (l % (kBK / 4)) * 4;
        const int64_t row = n0 + r, col = k0 + kq;
        rb[i] = row < g.n ? load4(g.b + row * g.ldb + col, g.k - col, g.vec_b)
                          : make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
  };

  // Registers -> shared buffer `buf`, k-major.
  auto store_tiles = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kLoadsA; ++i) {
      const int l = tid + i * kThreads;
      if (l >= BM * kBK / 4) break;
      if (!kTransA) {
        const int r = l / (kBK / 4), kq = (l % (kBK / 4)) * 4;
        As[buf][kq + 0][r] = ra[i].x;
        As[buf][kq + 1][r] = ra[i].y;
        As[buf][kq + 2][r] = ra[i].z;
        As[buf][kq + 3][r] = ra[i].w;
      } else {
        const int kr = l / (BM / 4), mq = (l % (BM / 4)) * 4;
        *reinterpret_cast<float4*>(&As[buf][kr][mq]) = ra[i];
      }
    }
#pragma unroll
    for (int i = 0; i < kLoadsB; ++i) {
      const int l = tid + i * kThreads;
      if (l >= BN * kBK / 4) break;
      if (!kTransB) {
        const int kr = l / (BN / 4), nq = (l % (BN / 4)) * 4;
        *reinterpret_cast<float4*>(&Bs[buf][kr][nq]) = rb[i];
      } else {
        const int r = l / (kBK / 4), kq = (l % (kBK / 4)) * 4;
        Bs[buf][kq + 0][r] = rb[i].x;
        Bs[buf][kq + 1][r] = rb[i].y;
        Bs[buf][kq + 2][r] = rb[i].z;
        Bs[buf][kq + 3][r] = rb[i].w;
      }
    }
  };

  float acc[kSubM * 4][kSubN * 4];
#pragma unroll
  for (int i = 0; i < kSubM * 4; ++i) {
#pragma unroll
    for (int j = 0; j < kSubN * 4; ++j) acc[i][j] = 0.0f;
  }

  const int64_t k_tiles = (g.k + kBK - 1) / kBK;
  if (k_tiles > 0) {
    load_tiles(0);
    store_tiles(0);
    __syncthreads();
  }
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    const int cur = static_cast<int>(kt & 1);
    const bool has_next = kt + 1 < k_tiles;
    if (has_next) load_tiles((kt + 1) * kBK);  // in flight during the FMAs below
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[kSubM * 4];
      float b[kSubN * 4];
#pragma unroll
      for (int s = 0; s < kSubM; ++s) {
        const float4 v = *reinterpret_cast<const float4*>(&As[cur][kk][ty * 4 + 64 * s]);
        a[4 * s + 0] = v.x;
        a[4 * s + 1] = v.y;
        a[4 * s + 2] = v.z;
        a[4 * s + 3] = v.w;
      }
#pragma unroll
      for (int s = 0; s < kSubN; ++s) {
        const float4 v = *reinterpret_cast<const float4*>(&Bs[cur][kk][tx * 4 + 64 * s]);
        b[4 * s + 0] = v.x;
        b[4 * s + 1] = v.y;
        b[4 * s + 2] = v.z;
        b[4 * s + 3] = v.w;
      }
#pragma unroll
      for (int i = 0; i < kSubM * 4; ++i) {
#pragma unroll
        for (int j = 0; j < kSubN * 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    // The other buffer was last read in iteration kt - 1, which every thread finished before the
    // barrier that ended it; after this barrier tile kt + 1 is complete for everyone.
    if (has_next) store_tiles(cur ^ 1);
    __syncthreads();
  }

  // Epilogue, straight from the accumulators: 4 consecutive columns per store.
#pragma unroll
  for (int i = 0; i < kSubM * 4; ++i) {
    const int64_t row = m0 + ty * 4 + 64 * (i / 4) + (i % 4);
#pragma unroll
    for (int s = 0; s < kSubN; ++s) {
      const int64_t col = n0 + tx * 4 + 64 * s;
      store4(
          g, row, col,
          make_float4(acc[i][4 * s + 0], acc[i][4 * s + 1], acc[i][4 * s + 2], acc[i][4 * s + 3]));
    }
  }
}

template <int BM, int BN>
void launch_config(bool trans_a, bool trans_b, const GemmArgs& g, cudaStream_t stream) {
  gemm_detail::for_each_row_slab(g, trans_a, BM, BN, [&](const GemmArgs& slab, dim3 grid) {
    if (!trans_a && !trans_b) {
      sgemm_kernel<BM, BN, false, false><<<grid, kThreads, 0, stream>>>(slab);
    } else if (!trans_a && trans_b) {
      sgemm_kernel<BM, BN, false, true><<<grid, kThreads, 0, stream>>>(slab);
    } else if (trans_a && !trans_b) {
      sgemm_kernel<BM, BN, true, false><<<grid, kThreads, 0, stream>>>(slab);
    } else {
      sgemm_kernel<BM, BN, true, true><<<grid, kThreads, 0, stream>>>(slab);
    }
    check_launch("gemm: sgemm_kernel launch");
  });
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
          const GemmEpilogue& epilogue, cudaStream_t stream) {
  const GemmArgs g = gemm_detail::make_args(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                                            c, ldc, epilogue);
  if (m == 0 || n == 0) return;
  // 128x128 tiles once they give every SM at least one block; 64x64 (4x the blocks) below that.
  const int64_t big_tiles = ((m + 127) / 128) * ((n + 127) / 128);
  if (big_tiles >= gemm_detail::sm_count()) {
    launch_config<128, 128>(trans_a, trans_b, g, stream);
  } else {
    launch_config<64, 64>(trans_a, trans_b, g, stream);
  }
}

}  // namespace fastmlp::cuda
