// Fully fused forward and backward passes of a narrow MLP (every width <= 128), FP32 on the CUDA
// cores: one launch per pass instead of two or three per layer, and a chunk's hidden activations
// never leave shared memory. Contracts: the "fused narrow MLP" section of cuda/kernels.h.
//
// Shape legend (layers l = 1..L, L <= 8; widths D_0..D_L, each in [1, 128]; n rows; everything
// row-major and contiguous, row stride = width):
//   x (n, D_0)  W_l (D_{l-1}, D_l)  b_l (D_l,)  z_l, a_l, dZ_l (n, D_l)  logits, dlogits (n, D_L)
//
// Design. A block of 256 threads owns a chunk of kRows = 64 rows for the whole pass.
//   - One activation buffer act[64][stride] in shared memory holds the chunk's current layer input
//     (x, then a_1, a_2, ...; in the backward dlogits, then dZ_{L-1}, ...). A thread keeps its
//     whole output tile of a layer in registers, so after a barrier the outputs overwrite the
//     inputs in place: one buffer instead of ping-pong buffers, which halves that part of the
//     shared memory and keeps two blocks per SM on an H100 for the 128-wide nets.
//   - One weight buffer holds the current layer's W (forward: [k][n] as in memory; backward: also
//     as in memory, [i][j], read along j = the reduction index), zero-padded to whole tiles, so the
//     inner loop has no bounds checks. Layer by layer rather than the whole net at once: the
//     weights of 128-128-128-128-16 are 200 KB, more than a block may have. The next layer's
//     weights are loaded during this layer's epilogue, between the two barriers that a layer
//     needs anyway.
//   - The thread tile follows the layer's output width D, rounded up to C = 16/32/64/128 (the
//     template parameter): 1x4, 2x4, 4x4 or 4x8 outputs per thread, so narrow layers do not leave
//     most threads idle. Each k step of 4 reads one float4 of act per tile row and one float4 of
//     W per 4 columns; the row stride of act is C_max + 4 floats (an odd number of float4s), so the
//     rows a warp reads fall in distinct bank groups. Forward columns are contiguous (col0 + 4j,
//     float4 reads of a W row); backward columns are strided (tx + 16j at C = 128) so the lanes
//     read consecutive rows of W, whose stride is again an odd number of float4s.
//   - Only x (or dlogits and z_l) is read and only the logits (training: z_l and a_l; backward:
//     dZ_l) are written to global memory, a float4 per store where the widths allow it.
//   - Shared memory per block: 4 bytes x (64 x stride + the largest padded W). 64-wide nets:
//     33,792 B forward / 34,816 B backward; 128-wide nets: 99,328 / 101,376 B (the most any net
//     needs; over the 48 KB default, so the launch opts in, and under sm_80's 163 KB).
//
// Sums: each output is one thread's fmaf chain over k = 0, 1, ..., K-1 starting from 0, then
// + b: the order of cuda::gemm (gemm.cu), whose padded k steps add exact zeros. The activation
// and its derivative are the FASTMLP_HD functions of common/activation_math.h. So the fused
// passes give the bits of the unfused chain (gemm with the bias/activation epilogue per layer;
// gemm NT then activation_backward), and the same bits on every run: no atomics, no
// timing-dependent order. Padded rows and columns hold finite values (zeros, or f(0) in columns
// that the next layer multiplies by zero-padded weight rows) and are never stored.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/activation_math.h"
#include "common/errors.h"
#include "cuda/check.h"
#include "cuda/kernels.h"

namespace fastmlp::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRows = 64;  // rows of x per block
constexpr int kMaxLayers = kFusedMlpMaxLayers;

// Everything a block needs, passed by value as the kernel parameter (~600 bytes).
struct FusedArgs {
  const float* in;  // x (forward) or dlogits (backward)
  float* out;       // logits (forward only)
  const float* w[kMaxLayers];
  const float* b[kMaxLayers];      // forward; nullptr: no bias
  const float* slope[kMaxLayers];  // hidden layer h: its PReLU slope on the device, or nullptr
  float* z[kMaxLayers];            // forward (training): z of hidden layer h, written
  float* a[kMaxLayers];            // forward (training): a of hidden layer h, written
  const float* z_in[kMaxLayers];   // backward: z of hidden layer h, read
  float* dz[kMaxLayers];           // backward: dZ of hidden layer h (may alias z_in[h])
  float alpha[kMaxLayers];
  Activation act[kMaxLayers];
  int width[kMaxLayers + 1];
  int layers;
  int stride;  // row stride of act in shared memory, in floats
  int64_t n;
};

__host__ __device__ constexpr int round_up(int v, int m) {
  return (v + m - 1) / m * m;
}

// The tile width of a layer with D outputs.
__host__ __device__ constexpr int cover(int d) {
  return d <= 16 ? 16 : d <= 32 ? 32 : d <= 64 ? 64 : 128;
}

// Row stride of the backward's weight buffer for a reduction length k: whole float4s, an odd
// number of them (consecutive rows start in different 4-bank groups).
__host__ __device__ constexpr int backward_stride(int k) {
  return round_up(k, 8) + 4;
}

// Thread tile for output width C: kColThreads threads across the columns, each with kTN columns
// (kSub float4 groups) and kTM rows.
template <int C>
struct Tile {
  static constexpr int kColThreads = C == 16 ? 4 : C == 32 ? 8 : 16;
  static constexpr int kSub = C == 128 ? 2 : 1;
  static constexpr int kTN = 4 * kSub;
  static constexpr int kTM = kRows * kColThreads / kThreads;
  static_assert(kColThreads * kTN == C && kTM * (kThreads / kColThreads) == kRows,
                "the tile must cover kRows x C exactly");
};

__device__ __forceinline__ float part(const float4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// dst[r][c] (row stride dst_stride) = src[r * src_cols + c] for r < src_rows and c < src_cols,
// 0 elsewhere, for r < dst_rows and c < dst_cols (a multiple of 4). A warp per row and a float4 per
// lane: each warp reads up to 512 contiguous bytes.
__device__ __forceinline__ void load_padded(float* dst, int dst_stride, int dst_rows, int dst_cols,
                                            const float* src, int src_rows, int src_cols) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool vec = src_cols % 4 == 0 && aligned16(src);
  for (int r = warp; r < dst_rows; r += kWarps) {
    for (int c = lane * 4; c < dst_cols; c += 128) {
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (r < src_rows) {
        const float* p = src + static_cast<int64_t>(r) * src_cols + c;
        const int valid = src_cols - c;
        if (vec && valid >= 4) {
          v = __ldg(reinterpret_cast<const float4*>(p));
        } else {
          if (valid > 0) v.x = __ldg(p);
          if (valid > 1) v.y = __ldg(p + 1);
          if (valid > 2) v.z = __ldg(p + 2);
          if (valid > 3) v.w = __ldg(p + 3);
        }
      }
      *reinterpret_cast<float4*>(dst + r * dst_stride + c) = v;
    }
  }
}

// row[c..c+3] = v where inside [0, n); one 16-byte store when the row allows it (c % 4 == 0).
__device__ __forceinline__ void store_cols(float* row, int c, int n, const float4& v) {
  if (c >= n) return;
  if (n % 4 == 0 && aligned16(row)) {  // then c + 3 < n
    *reinterpret_cast<float4*>(row + c) = v;
    return;
  }
  row[c] = v.x;
  if (c + 1 < n) row[c + 1] = v.y;
  if (c + 2 < n) row[c + 2] = v.z;
  if (c + 3 < n) row[c + 3] = v.w;
}

// Forward tile: acc[i][4s + j] += sum over k < kpad of act[row0 + i][k] * w[k][col0 + 64s + j]
// (w: [kpad][C]), k ascending.
template <int C>
__device__ __forceinline__ void tile_forward(float (&acc)[Tile<C>::kTM][Tile<C>::kTN],
                                             const float* act, int stride, const float* w, int kpad,
                                             int row0, int col0) {
  using T = Tile<C>;
  for (int k0 = 0; k0 < kpad; k0 += 4) {
    float4 x[T::kTM];
#pragma unroll
    for (int i = 0; i < T::kTM; ++i) {
      x[i] = *reinterpret_cast<const float4*>(act + (row0 + i) * stride + k0);
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      float b[T::kTN];
#pragma unroll
      for (int s = 0; s < T::kSub; ++s) {
        const float4 v =
            *reinterpret_cast<const float4*>(w + (k0 + kk) * C + col0 + 4 * T::kColThreads * s);
        b[4 * s + 0] = v.x;
        b[4 * s + 1] = v.y;
        b[4 * s + 2] = v.z;
        b[4 * s + 3] = v.w;
      }
#pragma unroll
      for (int i = 0; i < T::kTM; ++i) {
        const float xv = part(x[i], kk);
#pragma unroll
        for (int j = 0; j < T::kTN; ++j) acc[i][j] = fmaf(xv, b[j], acc[i][j]);
      }
    }
  }
}

// Backward tile: acc[i][c] += sum over k < kpad of act[row0 + i][k] * w[col0 + 16c][k]
// (w: [C][w_stride], W_l as stored), k ascending.
template <int C>
__device__ __forceinline__ void tile_backward(float (&acc)[Tile<C>::kTM][Tile<C>::kTN],
                                              const float* act, int stride, const float* w,
                                              int w_stride, int kpad, int row0, int col0) {
  using T = Tile<C>;
  for (int k0 = 0; k0 < kpad; k0 += 4) {
    float4 x[T::kTM];
#pragma unroll
    for (int i = 0; i < T::kTM; ++i) {
      x[i] = *reinterpret_cast<const float4*>(act + (row0 + i) * stride + k0);
    }
#pragma unroll
    for (int c = 0; c < T::kTN; ++c) {
      const float4 v =
          *reinterpret_cast<const float4*>(w + (col0 + T::kColThreads * c) * w_stride + k0);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
        for (int i = 0; i < T::kTM; ++i) acc[i][c] = fmaf(part(x[i], kk), part(v, kk), acc[i][c]);
      }
    }
  }
}

// Layer l (0-based) of the forward: act (its input, round_up(D_l, 4) columns valid) and wbuf
// (W_l) are complete on entry; on return act holds f(z) of this layer and wbuf W_{l+1} (both
// complete), or the logits are stored for the last layer.
template <int C>
__device__ __forceinline__ void forward_layer(const FusedArgs& p, int l, float* act, float* wbuf,
                                              int64_t chunk_row0, int rows_valid) {
  using T = Tile<C>;
  const int k = p.width[l], n_out = p.width[l + 1];
  const bool last = l + 1 == p.layers;
  const int tx = threadIdx.x % T::kColThreads, ty = threadIdx.x / T::kColThreads;
  const int row0 = ty * T::kTM, col0 = tx * 4;

  // Bias and slope first, so that their global loads are in flight during the FMAs.
  const float* bias_ptr = p.b[l];
  float bias[T::kTN];
#pragma unroll
  for (int s = 0; s < T::kSub; ++s) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = col0 + 4 * T::kColThreads * s + j;
      bias[4 * s + j] = bias_ptr != nullptr && col < n_out ? __ldg(bias_ptr + col) : 0.0f;
    }
  }
  const Activation kind = last ? Activation::Identity : p.act[l];
  const float alpha = !last && p.slope[l] != nullptr ? __ldg(p.slope[l]) : p.alpha[l];

  float acc[T::kTM][T::kTN];
#pragma unroll
  for (int i = 0; i < T::kTM; ++i) {
#pragma unroll
    for (int j = 0; j < T::kTN; ++j) acc[i][j] = 0.0f;
  }
  tile_forward<C>(acc, act, p.stride, wbuf, round_up(k, 4), row0, col0);
  __syncthreads();  // every thread is done reading act and wbuf

  if (!last) {
    const int next = p.width[l + 2];
    load_padded(wbuf, cover(next), round_up(n_out, 4), cover(next), p.w[l + 1], n_out, next);
  }
  float* z_out = last ? nullptr : p.z[l];
  float* a_out = last ? nullptr : p.a[l];
#pragma unroll
  for (int i = 0; i < T::kTM; ++i) {
    const int r = row0 + i;
    const bool valid = r < rows_valid;
    const int64_t at = (chunk_row0 + r) * n_out;  // start of the global row
#pragma unroll
    for (int s = 0; s < T::kSub; ++s) {
      const int c = col0 + 4 * T::kColThreads * s;
      float4 z =
          make_float4(acc[i][4 * s], acc[i][4 * s + 1], acc[i][4 * s + 2], acc[i][4 * s + 3]);
      if (bias_ptr != nullptr) {  // as gemm.cu: no bias, no "+ 0" (which would turn -0 into +0)
        z.x += bias[4 * s];
        z.y += bias[4 * s + 1];
        z.z += bias[4 * s + 2];
        z.w += bias[4 * s + 3];
      }
      if (last) {
        if (valid) store_cols(p.out + at, c, n_out, z);
        continue;
      }
      float4 y;
      y.x = activation_forward(kind, z.x, alpha);
      y.y = activation_forward(kind, z.y, alpha);
      y.z = activation_forward(kind, z.z, alpha);
      y.w = activation_forward(kind, z.w, alpha);
      *reinterpret_cast<float4*>(act + r * p.stride + c) = y;
      if (z_out != nullptr && valid) {
        store_cols(z_out + at, c, n_out, z);
        store_cols(a_out + at, c, n_out, y);
      }
    }
  }
  if (!last) __syncthreads();  // this layer's outputs and the next weights are complete
}

// Step l (0-based, l >= 1) of the backward: act holds dZ of layer l (round_up(D_{l+1}, 4)
// columns), wbuf W_l; computes dZ of hidden layer h = l - 1 (width D_l), stores it and, when
// another step follows, leaves it in act and W_{l-1} in wbuf.
template <int C>
__device__ __forceinline__ void backward_layer(const FusedArgs& p, int l, float* act, float* wbuf,
                                               int64_t chunk_row0, int rows_valid) {
  using T = Tile<C>;
  const int h = l - 1;
  const int n_out = p.width[l], k = p.width[l + 1];
  const int tx = threadIdx.x % T::kColThreads, ty = threadIdx.x / T::kColThreads;
  const int row0 = ty * T::kTM, col0 = tx;
  const Activation kind = p.act[h];
  const float alpha = p.slope[h] != nullptr ? __ldg(p.slope[h]) : p.alpha[h];

  float acc[T::kTM][T::kTN];
#pragma unroll
  for (int i = 0; i < T::kTM; ++i) {
#pragma unroll
    for (int j = 0; j < T::kTN; ++j) acc[i][j] = 0.0f;
  }
  tile_backward<C>(acc, act, p.stride, wbuf, backward_stride(k), round_up(k, 4), row0, col0);
  __syncthreads();  // every thread is done reading act and wbuf

  const bool more = h > 0;
  if (more) {
    const int prev = p.width[h];  // W_{l-1} is (prev, n_out)
    load_padded(wbuf, backward_stride(n_out), cover(prev), round_up(n_out, 4), p.w[h], prev, n_out);
  }
  // Plain loads of z (not __ldg): dz may alias z, each element read and then written by this
  // thread only.
  const float* z = p.z_in[h];
  float* dz = p.dz[h];
#pragma unroll
  for (int i = 0; i < T::kTM; ++i) {
    const int r = row0 + i;
    const bool valid = r < rows_valid;
    const int64_t at = (chunk_row0 + r) * n_out;
#pragma unroll
    for (int c = 0; c < T::kTN; ++c) {
      const int col = col0 + T::kColThreads * c;
      float d = 0.0f;  // padded rows and columns: 0, which the next step multiplies harmlessly
      if (valid && col < n_out) {
        const float zv = z[at + col];
        // The derivative takes y = f(z) (sigmoid, tanh), recomputed here: a_l's bits, as long as
        // y is rounded as it is when stored. The explicit add (y + 0 == y) keeps the compiler from
        // fusing the forward's last operation into the derivative's arithmetic, which could
        // change a last bit against activation_backward's (which reads the stored y).
        const float y = __fadd_rn(activation_forward(kind, zv, alpha), 0.0f);
        d = activation_dx(kind, acc[i][c], zv, y, alpha);
        dz[at + col] = d;
      }
      if (more) act[r * p.stride + col] = d;
    }
  }
  if (more) __syncthreads();  // dZ_h and the next weights are complete
}

// body(std::integral_constant<int, C>) for the tile width C = cover(d) of a layer with d outputs;
// a kernel built for kMaxC = 64 has no 128-wide tile.
template <int kMaxC, typename Body>
__device__ __forceinline__ void with_tile(int d, Body&& body) {
  if (d <= 16) {
    body(std::integral_constant<int, 16>{});
  } else if (d <= 32) {
    body(std::integral_constant<int, 32>{});
  } else if constexpr (kMaxC == 64) {
    body(std::integral_constant<int, 64>{});
  } else if (d <= 64) {
    body(std::integral_constant<int, 64>{});
  } else {
    body(std::integral_constant<int, 128>{});
  }
}

// Two builds of each kernel, by the widest layer. kMaxC = 128 holds the 4x8 tile and needs ~120
// registers: at most 128 at 2 blocks per SM (and two blocks of ~100 KB of shared memory fit on an
// H100). kMaxC = 64 stops at the 4x4 tile: the forward fits in 64 registers, 4 blocks per SM; the
// backward (f and f' inlined in its epilogue) takes ~110 and spills when held to 80 (3 blocks),
// so it stays at 2 blocks per SM.
template <int kMaxC>
constexpr int kForwardMinBlocks = kMaxC == 128 ? 2 : 4;
constexpr int kBackwardMinBlocks = 2;

template <int kMaxC>
__global__ void __launch_bounds__(kThreads, kForwardMinBlocks<kMaxC>)
    fused_mlp_forward_kernel(const FusedArgs p) {
  extern __shared__ float4 fused_smem[];
  float* act = reinterpret_cast<float*>(fused_smem);
  float* wbuf = act + kRows * p.stride;
  const int64_t chunk_row0 = int64_t{blockIdx.x} * kRows;
  const int rows_valid = static_cast<int>(p.n - chunk_row0 < kRows ? p.n - chunk_row0 : kRows);
  const int d0 = p.width[0];
  load_padded(act, p.stride, kRows, round_up(d0, 4), p.in + chunk_row0 * d0, rows_valid, d0);
  load_padded(wbuf, cover(p.width[1]), round_up(d0, 4), cover(p.width[1]), p.w[0], d0, p.width[1]);
  __syncthreads();
  for (int l = 0; l < p.layers; ++l) {
    with_tile<kMaxC>(p.width[l + 1], [&](auto tile) {  // uniform across the block
      forward_layer<decltype(tile)::value>(p, l, act, wbuf, chunk_row0, rows_valid);
    });
  }
}

template <int kMaxC>
__global__ void __launch_bounds__(kThreads, kBackwardMinBlocks)
    fused_mlp_backward_kernel(const FusedArgs p) {
  extern __shared__ float4 fused_smem[];
  float* act = reinterpret_cast<float*>(fused_smem);
  float* wbuf = act + kRows * p.stride;
  const int64_t chunk_row0 = int64_t{blockIdx.x} * kRows;
  const int rows_valid = static_cast<int>(p.n - chunk_row0 < kRows ? p.n - chunk_row0 : kRows);
  const int top = p.layers - 1;  // the last layer: dlogits @ W_L^T comes first
  const int d_out = p.width[top + 1], d_in = p.width[top];
  load_padded(act, p.stride, kRows, round_up(d_out, 4), p.in + chunk_row0 * d_out, rows_valid,
              d_out);
  load_padded(wbuf, backward_stride(d_out), cover(d_in), round_up(d_out, 4), p.w[top], d_in, d_out);
  __syncthreads();
  for (int l = top; l >= 1; --l) {
    with_tile<kMaxC>(p.width[l], [&](auto tile) {
      backward_layer<decltype(tile)::value>(p, l, act, wbuf, chunk_row0, rows_valid);
    });
  }
}

// ---------------------------------------------------------------- host side
// layers, width[] and stride of a net of widths D_0..D_L (already checked against the limits).
FusedArgs shape_of(const std::vector<int64_t>& widths) {
  FusedArgs p{};
  p.layers = static_cast<int>(widths.size()) - 1;
  int widest = 1;
  for (int l = 0; l <= p.layers; ++l) {
    p.width[l] = static_cast<int>(widths[l]);
    widest = p.width[l] > widest ? p.width[l] : widest;
  }
  p.stride = cover(widest) + 4;
  return p;
}

// Checks the description and fills the per-layer part of FusedArgs.
FusedArgs describe(const FusedMlp& net, int64_t n, const char* what) {
  const int64_t layers = static_cast<int64_t>(net.weights.size());
  FASTMLP_CHECK(layers >= 1 && layers <= kMaxLayers, "weights: ", what, " takes 1 to ", kMaxLayers,
                " layers, got ", layers);
  FASTMLP_CHECK(static_cast<int64_t>(net.widths.size()) == layers + 1, "widths: expected ",
                layers + 1, " widths for ", layers, " layers, got ", net.widths.size());
  for (const int64_t d : net.widths) {
    FASTMLP_CHECK(d >= 1 && d <= kFusedMlpMaxWidth, "widths: ", what, " takes widths in [1, ",
                  kFusedMlpMaxWidth, "], got ", d);
  }
  FASTMLP_CHECK(static_cast<int64_t>(net.biases.size()) == layers || net.biases.empty(),
                "biases: expected ", layers, " (or none), got ", net.biases.size());
  const size_t hidden = static_cast<size_t>(layers - 1);
  FASTMLP_CHECK(net.activations.size() == hidden && net.alphas.size() == hidden,
                "activations: expected ", hidden, " activations and alphas (one per hidden layer)",
                ", got ", net.activations.size(), " and ", net.alphas.size());
  FASTMLP_CHECK(net.prelu_slopes.empty() || net.prelu_slopes.size() == hidden,
                "prelu_slopes: expected ", hidden, " entries (or none), got ",
                net.prelu_slopes.size());
  FASTMLP_CHECK(n >= 0, "n: expected >= 0, got ", n);
  FusedArgs p = shape_of(net.widths);
  p.n = n;
  for (int64_t l = 0; l < layers; ++l) {
    FASTMLP_CHECK(net.weights[l] != nullptr, "weights: layer ", l + 1, " has no weight matrix");
    p.w[l] = net.weights[l];
    p.b[l] = net.biases.empty() ? nullptr : net.biases[l];
  }
  for (size_t h = 0; h < hidden; ++h) {
    p.act[h] = net.activations[h];
    p.alpha[h] = net.alphas[h];
    p.slope[h] = net.prelu_slopes.empty() || net.activations[h] != Activation::Prelu
                     ? nullptr
                     : net.prelu_slopes[h];
  }
  return p;
}

// Every width <= 64: the kernels built without the 4x8 tile fit (stride = cover(widest) + 4).
bool narrow(const FusedArgs& p) {
  return p.stride <= 64 + 4;
}

// Shared memory of one block: the activation buffer plus the largest per-layer weight buffer.
size_t forward_bytes(const FusedArgs& p) {
  int w = 0;
  for (int l = 0; l < p.layers; ++l) {
    const int need = round_up(p.width[l], 4) * cover(p.width[l + 1]);
    w = need > w ? need : w;
  }
  return sizeof(float) * static_cast<size_t>(kRows * p.stride + w);
}

size_t backward_bytes(const FusedArgs& p) {
  int w = 0;
  for (int l = 1; l < p.layers; ++l) {
    const int need = cover(p.width[l]) * backward_stride(p.width[l + 1]);
    w = need > w ? need : w;
  }
  return sizeof(float) * static_cast<size_t>(kRows * p.stride + w);
}

int shared_memory_limit(const char* what) {
  int device = 0;
  check_cuda(cudaGetDevice(&device), what);
  int limit = 0;
  check_cuda(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), what);
  return limit;
}

// Above the default 48 KB of shared memory per block a kernel must opt in. The attribute
// belongs to the kernel on the current device, not to a launch, so it is set once per (kernel,
// device), to the device's limit: setting it to each net's need would let two threads race (one
// lowering it between the other's set and launch, which then fails), and setting it per launch
// costs a driver call per step.
void opt_in_to_shared_memory(void (*kernel)(FusedArgs), int limit, const char* what) {
  static std::mutex mutex;
  static std::vector<std::pair<void (*)(FusedArgs), int>> done;
  int device = 0;
  check_cuda(cudaGetDevice(&device), what);
  std::lock_guard<std::mutex> lock(mutex);
  const std::pair<void (*)(FusedArgs), int> key(kernel, device);
  if (std::find(done.begin(), done.end(), key) != done.end()) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit),
             what);
  done.push_back(key);
}

void launch(void (*kernel)(FusedArgs), const FusedArgs& p, size_t bytes, cudaStream_t stream,
            const char* what) {
  const int limit = shared_memory_limit(what);
  FASTMLP_CHECK(bytes <= static_cast<size_t>(limit), "widths: ", what, " needs ", bytes,
                " bytes of shared memory per block for this net, the GPU allows ", limit,
                " (use the unfused layers)");
  if (bytes > 48 * 1024) opt_in_to_shared_memory(kernel, limit, what);
  const int64_t blocks = (p.n + kRows - 1) / kRows;
  FASTMLP_CHECK(blocks <= INT_MAX, "n: ", p.n, " rows exceed the grid limit of ", what);
  kernel<<<static_cast<unsigned>(blocks), kThreads, bytes, stream>>>(p);
  check_launch(what);
}

}  // namespace

bool fused_mlp_fits(const std::vector<int64_t>& widths, bool backward) {
  const int64_t layers = static_cast<int64_t>(widths.size()) - 1;
  if (layers < 1 || layers > kMaxLayers) return false;
  for (const int64_t d : widths) {
    if (d < 1 || d > kFusedMlpMaxWidth) return false;
  }
  const FusedArgs p = shape_of(widths);
  const size_t limit = static_cast<size_t>(shared_memory_limit("fused_mlp_fits"));
  return forward_bytes(p) <= limit && (!backward || backward_bytes(p) <= limit);
}

void fused_mlp_forward(float* logits, const std::vector<float*>& z, const std::vector<float*>& a,
                       const float* x, int64_t n, const FusedMlp& net, cudaStream_t stream) {
  FusedArgs p = describe(net, n, "fused_mlp_forward");
  const size_t hidden = static_cast<size_t>(p.layers - 1);
  FASTMLP_CHECK((z.empty() && a.empty()) || (z.size() == hidden && a.size() == hidden),
                "z: expected ", hidden, " z and a buffers (training) or none, got ", z.size(),
                " and ", a.size());
  if (n == 0) return;  // (empty outputs may have null pointers)
  for (size_t h = 0; h < z.size(); ++h) {
    FASTMLP_CHECK(z[h] != nullptr && a[h] != nullptr, "z: layer ", h + 1, " has no z or a buffer");
    p.z[h] = z[h];
    p.a[h] = a[h];
  }
  p.in = x;
  p.out = logits;
  launch(narrow(p) ? fused_mlp_forward_kernel<64> : fused_mlp_forward_kernel<128>, p,
         forward_bytes(p), stream, "fused_mlp_forward");
}

void fused_mlp_backward(const std::vector<float*>& dz, const float* dlogits,
                        const std::vector<const float*>& z, int64_t n, const FusedMlp& net,
                        cudaStream_t stream) {
  FusedArgs p = describe(net, n, "fused_mlp_backward");
  const size_t hidden = static_cast<size_t>(p.layers - 1);
  FASTMLP_CHECK(dz.size() == hidden && z.size() == hidden, "dz: expected ", hidden,
                " dz and z buffers (one per hidden layer), got ", dz.size(), " and ", z.size());
  if (n == 0 || hidden == 0) return;
  for (size_t h = 0; h < hidden; ++h) {
    FASTMLP_CHECK(dz[h] != nullptr && z[h] != nullptr, "dz: layer ", h + 1,
                  " has no dz or z buffer");
    p.dz[h] = dz[h];
    p.z_in[h] = z[h];
  }
  p.in = dlogits;
  launch(narrow(p) ? fused_mlp_backward_kernel<64> : fused_mlp_backward_kernel<128>, p,
         backward_bytes(p), stream, "fused_mlp_backward");
}

}  // namespace fastmlp::cuda
