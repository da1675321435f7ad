// TF32 GEMM on the tensor cores (sm_80+), same contract and epilogue as gemm.cu / cpu/gemm.h:
//   C = act(alpha * op(A) @ op(B) + beta * C + bias), preactivation <- z before act.
// Precision: A and B are rounded to TF32 (10 mantissa bits, round-to-nearest-away, cvt.rna) when
// they enter shared memory; products are exact and accumulate in FP32. Expect a relative error of
// ~1e-3 of sum_k |a_ik b_kj| instead of FP32's ~1e-6: opt-in (gemm_tf32), never the default.
//
// Design: mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 (PTX ISA, "Matrix fragments for
// mma.m16n8k8" with .tf32). A block of 256 threads (8 warps as 2 x 4) owns a BM x BN tile of C and
// walks k in steps of BK = 16 (two k8 mma steps). Shared tiles are stored with k contiguous,
// As[m][k] and Bs[n][k], rows padded to 20 floats: the fragment reads (row g = lane / 4,
// column t = lane % 4) then fall in 32 distinct banks (g * 20 mod 32 = 0, 20, 8, 28, 16, 4, 24,
// 12). Operands that are contiguous along m or n in global memory (A transposed, B not transposed)
// are scattered into that layout on the shared store. Tiles are staged through registers, double
// buffered as in gemm.cu, one __syncthreads per k-step. Edges are zero-padded on load.
// Configs: 128x128 (each warp 64x32: 4 x 4 mma tiles, 64 accumulators per thread) and 64x64 (each
// warp 32x16) for grids that would not fill the GPU. Deterministic: each output is one thread's
// fixed sequence of mma accumulations.
// Not done (next steps once timed on a GPU): cp.async / TMA staging, ldmatrix, wgmma on sm_90a.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/check.h"
#include "cuda/gemm_common.cuh"
#include "cuda/kernels.h"

namespace fastmlp::cuda {
namespace {

using gemm_detail::GemmArgs;
using gemm_detail::load4;
using gemm_detail::store1;

constexpr int kThreads = 256;
constexpr int kBK = 16;
constexpr int kLd = kBK + 4;  // padded row length of As / Bs (floats)

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Loader l's place in a tile that is contiguous along m (A transposed) or n (B not transposed) and
// is scattered into the k-contiguous shared layout: row kr of the 16 k-rows and float4 column q4.
// A warp covers 8 k-rows x 4 consecutive float4s (64 contiguous bytes per row, whole sectors),
// which makes its scattered 4-byte shared stores 2-way bank-conflicted; the plain row-major order
// (32 float4s of one k-row per warp) would be 16-way (stride 4 * kLd = 80 words = 16 mod 32).
__device__ __forceinline__ void scatter_slot(int l, int& kr, int& q4) {
  static_assert(kBK == 16, "the mapping covers 16 k-rows as two groups of 8");
  const int wl = l / 32, lane = l % 32;
  kr = (wl % 2) * 8 + lane / 4;
  q4 = ((wl / 2) * 4 + lane % 4) * 4;
}

template <int BM, int BN, bool kTransA, bool kTransB>
__global__ void __launch_bounds__(kThreads) tf32_gemm_kernel(const GemmArgs g) {
  constexpr int kWarpsM = 2, kWarpsN = 4;
  constexpr int kWarpM = BM / kWarpsM;  // rows of C per warp
  constexpr int kWarpN = BN / kWarpsN;
  constexpr int kMi = kWarpM / 16;  // m16 tiles per warp
  constexpr int kNi = kWarpN / 8;   // n8 tiles per warp
  static_assert(kMi >= 1 && kNi >= 1 && kWarpM % 16 == 0 && kWarpN % 8 == 0, "bad tile");
  constexpr int kLoadsA = (BM * kBK / 4 + kThreads - 1) / kThreads;
  constexpr int kLoadsB = (BN * kBK / 4 + kThreads - 1) / kThreads;

  __shared__ __align__(16) uint32_t As[2][BM][kLd];
  __shared__ __align__(16) uint32_t Bs[2][BN][kLd];

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
  const int grp = lane / 4, tig = lane % 4;  // "groupID" and "threadID_in_group" of the PTX docs
  const int64_t m0 = int64_t{blockIdx.y} * BM;
  const int64_t n0 = int64_t{blockIdx.x} * BN;

  float4 ra[kLoadsA];
  float4 rb[kLoadsB];

  auto load_tiles = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < kLoadsA; ++i) {
      const int l = tid + i * kThreads;
      if (l >= BM * kBK / 4) break;
      if (!kTransA) {  // A (m, k): float4 along k
        const int r = l / (kBK / 4), kq = (l % (kBK / 4)) * 4;
        const int64_t row = m0 + r, col = k0 + kq;
        ra[i] = row < g.m ? load4(g.a + row * g.lda + col, g.k - col, g.vec_a)
                          : make_float4(0.f, 0.f, 0.f, 0.f);
      } else {  // A (k, m): float4 along m
        int kr, mq;
        scatter_slot(l, kr, mq);
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
        int kr, nq;
        scatter_slot(l, kr, nq);
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

  auto store_tiles = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kLoadsA; ++i) {
      const int l = tid + i * kThreads;
      if (l >= BM * kBK / 4) break;
      const uint4 v =
          make_uint4(to_tf32(ra[i].x), to_tf32(ra[i].y), to_tf32(ra[i].z), to_tf32(ra[i].w));
      if (!kTransA) {
        const int r = l / (kBK / 4), kq = (l % (kBK / 4)) * 4;
        *reinterpret_cast<uint4*>(&As[buf][r][kq]) = v;
      } else {
        int kr, mq;
        scatter_slot(l, kr, mq);
        As[buf][mq + 0][kr] = v.x;
        As[buf][mq + 1][kr] = v.y;
        As[buf][mq + 2][kr] = v.z;
        As[buf][mq + 3][kr] = v.w;
      }
    }
#pragma unroll
    for (int i = 0; i < kLoadsB; ++i) {
      const int l = tid + i * kThreads;
      if (l >= BN * kBK / 4) break;
      const uint4 v =
          make_uint4(to_tf32(rb[i].x), to_tf32(rb[i].y), to_tf32(rb[i].z), to_tf32(rb[i].w));
      if (!kTransB) {
        int kr, nq;
        scatter_slot(l, kr, nq);
        Bs[buf][nq + 0][kr] = v.x;
        Bs[buf][nq + 1][kr] = v.y;
        Bs[buf][nq + 2][kr] = v.z;
        Bs[buf][nq + 3][kr] = v.w;
      } else {
        const int r = l / (kBK / 4), kq = (l % (kBK / 4)) * 4;
        *reinterpret_cast<uint4*>(&Bs[buf][r][kq]) = v;
      }
    }
  };

  float acc[kMi][kNi][4];
#pragma unroll
  for (int i = 0; i < kMi; ++i) {
#pragma unroll
    for (int j = 0; j < kNi; ++j) {
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;
    }
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
    if (has_next) load_tiles((kt + 1) * kBK);
#pragma unroll
    for (int ks = 0; ks < kBK; ks += 8) {
      uint32_t af[kMi][4];
      uint32_t bf[kNi][2];
#pragma unroll
      for (int i = 0; i < kMi; ++i) {
        const int r = wm * kWarpM + i * 16 + grp;
        af[i][0] = As[cur][r][ks + tig];
        af[i][1] = As[cur][r + 8][ks + tig];
        af[i][2] = As[cur][r][ks + tig + 4];
        af[i][3] = As[cur][r + 8][ks + tig + 4];
      }
#pragma unroll
      for (int j = 0; j < kNi; ++j) {
        const int c = wn * kWarpN + j * 8 + grp;
        bf[j][0] = Bs[cur][c][ks + tig];
        bf[j][1] = Bs[cur][c][ks + tig + 4];
      }
#pragma unroll
      for (int i = 0; i < kMi; ++i) {
#pragma unroll
        for (int j = 0; j < kNi; ++j) mma_tf32(acc[i][j], af[i], bf[j]);
      }
    }
    if (has_next) store_tiles(cur ^ 1);
    __syncthreads();
  }

  // Accumulator fragment: d0, d1 at (row grp, cols 2 tig, 2 tig + 1); d2, d3 at row grp + 8.
#pragma unroll
  for (int i = 0; i < kMi; ++i) {
    const int64_t row = m0 + wm * kWarpM + i * 16 + grp;
#pragma unroll
    for (int j = 0; j < kNi; ++j) {
      const int64_t col = n0 + wn * kWarpN + j * 8 + 2 * tig;
      store1(g, row, col, acc[i][j][0]);
      store1(g, row, col + 1, acc[i][j][1]);
      store1(g, row + 8, col, acc[i][j][2]);
      store1(g, row + 8, col + 1, acc[i][j][3]);
    }
  }
}

template <int BM, int BN>
void launch_config(bool trans_a, bool trans_b, const GemmArgs& g, cudaStream_t stream) {
  gemm_detail::for_each_row_slab(g, trans_a, BM, BN, [&](const GemmArgs& slab, dim3 grid) {
    if (!trans_a && !trans_b) {
      tf32_gemm_kernel<BM, BN, false, false><<<grid, kThreads, 0, stream>>>(slab);
    } else if (!trans_a && trans_b) {
      tf32_gemm_kernel<BM, BN, false, true><<<grid, kThreads, 0, stream>>>(slab);
    } else if (trans_a && !trans_b) {
      tf32_gemm_kernel<BM, BN, true, false><<<grid, kThreads, 0, stream>>>(slab);
    } else {
      tf32_gemm_kernel<BM, BN, true, true><<<grid, kThreads, 0, stream>>>(slab);
    }
    check_launch("gemm_tf32: tf32_gemm_kernel launch");
  });
}

}  // namespace

void gemm_tf32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
               int64_t ldc, const GemmEpilogue& epilogue, cudaStream_t stream) {
  const GemmArgs g = gemm_detail::make_args(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                                            c, ldc, epilogue);
  if (m == 0 || n == 0) return;
  int device = 0, major = 0;
  check_cuda(cudaGetDevice(&device), "gemm_tf32: cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
             "gemm_tf32: cudaDeviceGetAttribute(compute capability)");
  FASTMLP_CHECK(major >= 8, "tf32: needs a GPU of compute capability 8.0 or newer (Ampere+), got ",
                major, ".x");
  const int64_t big_tiles = ((m + 127) / 128) * ((n + 127) / 128);
  if (big_tiles >= gemm_detail::sm_count()) {
    launch_config<128, 128>(trans_a, trans_b, g, stream);
  } else {
    launch_config<64, 64>(trans_a, trans_b, g, stream);
  }
}

}  // namespace fastmlp::cuda
