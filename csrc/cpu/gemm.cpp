// CPU GEMM with fused epilogue (contract in cpu/gemm.h), organised as in BLIS:
//
//   C = act( alpha * op(A) @ op(B) + beta * C + bias ),  op(A) (m, k), op(B) (k, n), C (m, n),
//   all row-major with row strides lda, ldb, ldc; bias (n,); optional preactivation (m, n), ldc.
//
// Five loops around an MR x NR micro-kernel (block sizes in cpu/gemm_config.h):
//   5th loop  jc: NC-column blocks of C and op(B)
//   4th loop  pc: KC-deep slices of the k dimension; op(B)[pc:pc+kc, jc:jc+nc] is packed into
//             NR-column micro-panels (in the L3)
//   3rd loop  ic: MC-row blocks; op(A)[ic:ic+mc, pc:pc+kc] is packed into MR-row micro-panels
//             (in the L2), or read where it lies (read_a_in_place: narrow blocks of C, and a
//             column split, where the threads would wait on one shared packed copy)
//   2nd loop  jr: NR-column micro-panels of the packed B (one stays in the L1)
//   1st loop  ir: MR-row micro-panels of A; the micro-kernel updates one C tile
// Packing handles the four trans cases (only the strides differ) and zero-pads the edge panels, so
// the micro-kernel's loop never looks at the column edge; at the row edge the kernels issue the
// FMAs of the valid rows only, and read no other row of an A read in place (see panel_rows for
// how the last rows are cut).
// beta is applied once, on the first k-block (later blocks accumulate with beta = 1), and the
// epilogue (bias, preactivation store, activation) on the last one, while the tile is in registers.
//
// Threads (OpenMP, fastmlp::num_threads()): C is cut into one block per thread, along m (the ic
// loop is split) when m >= n and along n (the jc/jr loops are split) when m < n, as MLP batches
// of 32-128 rows need; each thread runs the five loops on its block (along n, the column panels
// that the threads do not divide evenly are cut by rows, a second block for each thread). The
// operand that every thread reads whole (op(B) for a row split, op(A) for a column split) is
// packed once, by all the threads together, in chunks each claims in turn (SharedPacking): there is
// no barrier, a thread only waits for the last chunks of the block it is about to use, and a thread
// that starts late (or loses its core) finds its share packed by the others; op(A) read in place
// needs no sharing. The other operand, each thread packs for its own block. Packing one copy per
// thread instead, as this file did before, cost 1-3% at 2 threads on the MLP products (paired runs,
// 128x256x784, 128x784x256, 784x256x128). Shared blocks are all kept for the call, so sharing stops
// above kSharedPackMax floats, where each thread packs its own copy again (~7/m of the time for
// op(B): 0.7% at m = 1024). Problems below kParallelMinWork run on the calling thread without a
// parallel region, and the packing buffers are thread-local and only grow, so repeated calls
// allocate nothing.
//
// gemm_packed_b takes op(B) packed ahead of time (pack_b_rows, layout in cpu/gemm.h): the blocks
// of op(B) are then read where they lie instead of being packed, and nothing else changes.
//
// Aliasing: C may not overlap A, B or bias. preactivation may alias C only with identity.
#include "cpu/gemm.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "common/aligned_buffer.h"
#include "common/errors.h"
#include "common/threading.h"
#include "cpu/cpu_features.h"
#include "cpu/gemm_config.h"
#include "cpu/gemm_kernel.h"

#if defined(__SSE__) || defined(_M_X64)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

namespace fastmlp {
namespace {

using gemm_blocking::KC;
using gemm_blocking::MC;
using gemm_blocking::MR;
using gemm_blocking::NC;
using gemm_blocking::NR;

using MicroKernel = void (*)(int64_t, const float*, int64_t, int64_t, const float*,
                             const MicroTile&);

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Depth of the k-blocks: k is cut into equal blocks of at most KC (k = 784 runs as 3 x 262 rather
// than 2 x 384 + 16), so no block is a thin remainder that pays the C write-back for little work.
// It depends on k only, so every element of C sees the same summation order whatever the thread
// count, and a B packed ahead of time (pack_b_rows) has the blocks every call uses.
int64_t k_block_step(int64_t k) {
  return k > 0 ? ceil_div(k, ceil_div(k, KC)) : 0;
}

// Columns of a packed op(B) block, its NR-column panels padded with zero columns.
int64_t padded_columns(int64_t n) {
  return ceil_div(n, NR) * NR;
}

// Kept thread-local so that repeated calls reuse them (no allocation per call) and concurrent
// calls from several threads do not share.
thread_local AlignedFloats tl_pack_a;  // nthreads MC x KC blocks of A (threads of one call)
thread_local AlignedFloats tl_pack_b;  // nthreads KC x (at most NC) blocks of B

#if defined(__SSE__) || defined(_M_X64)
// The depth steps [0, kc / 4 * 4) of pack_panel for lanes contiguous along the depth, as 4 x 4
// transposes; returns the first step left to do. Edge: a panel of lanes < W lanes, whose missing
// lanes are zero vectors (the 4 + 4 row cut of panel_rows made the two 4-row panels of m = 128 go
// through the scalar loop, 19% of pack_panel<6>'s samples in a 128x256x784 NN product); the
// whole panels keep a loop with no lane test.
template <int W, bool Edge>
int64_t transpose_steps(float* FASTMLP_RESTRICT dst, const float* FASTMLP_RESTRICT src,
                        int64_t lane_stride, int64_t kc, int lanes) {
  const auto load = [&](const float* s, int l) {
    return !Edge || l < lanes ? _mm_loadu_ps(s + l * lane_stride) : _mm_setzero_ps();
  };
  int64_t p = 0;
  for (; p + 4 <= kc; p += 4) {
    const float* s = src + p;
    float* d = dst + p * W;
    int l = 0;
    for (; l + 4 <= W; l += 4) {
      __m128 r0 = load(s, l + 0);
      __m128 r1 = load(s, l + 1);
      __m128 r2 = load(s, l + 2);
      __m128 r3 = load(s, l + 3);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      _mm_storeu_ps(d + 0 * W + l, r0);
      _mm_storeu_ps(d + 1 * W + l, r1);
      _mm_storeu_ps(d + 2 * W + l, r2);
      _mm_storeu_ps(d + 3 * W + l, r3);
    }
    if (l + 2 == W) {  // W = 6: the last two lanes, interleaved pairwise
      const __m128 r0 = load(s, l + 0);
      const __m128 r1 = load(s, l + 1);
      const __m128 lo = _mm_unpacklo_ps(r0, r1);
      const __m128 hi = _mm_unpackhi_ps(r0, r1);
      _mm_storel_pi(reinterpret_cast<__m64*>(d + 0 * W + l), lo);
      _mm_storeh_pi(reinterpret_cast<__m64*>(d + 1 * W + l), lo);
      _mm_storel_pi(reinterpret_cast<__m64*>(d + 2 * W + l), hi);
      _mm_storeh_pi(reinterpret_cast<__m64*>(d + 3 * W + l), hi);
    }
  }
  return p;
}
#endif

// Packs one micro-panel of W lanes: dst[p*W + l] = src[l*lane_stride + p*depth_stride] for
// l < lanes, p < kc, and 0 for lanes <= l < W (the zero padding of edge panels).
// For A the lanes are rows of op(A); for B they are columns of op(B).
template <int W>
void pack_panel(float* FASTMLP_RESTRICT dst, const float* FASTMLP_RESTRICT src, int64_t lane_stride,
                int64_t depth_stride, int lanes, int64_t kc) {
  if (lanes == W && lane_stride == 1) {
    // Each depth step is W contiguous floats (A transposed, B not): a straight copy.
    for (int64_t p = 0; p < kc; ++p) {
      const float* s = src + p * depth_stride;
      for (int l = 0; l < W; ++l) dst[p * W + l] = s[l];
    }
    return;
  }
  int64_t p = 0;
#if defined(__SSE__) || defined(_M_X64)
  if (depth_stride == 1) {
    // Each lane is contiguous along p (A not transposed, B transposed): a transpose, done in 4x4
    // blocks with SSE (baseline x86-64). It halves the packing time of the scalar gather below
    // (perf, 128x784x256 NT: packing B went from 12.5% to 6.6% of the samples).
    p = lanes == W ? transpose_steps<W, false>(dst, src, lane_stride, kc, lanes)
                   : transpose_steps<W, true>(dst, src, lane_stride, kc, lanes);
  }
  static_assert(W % 4 == 0 || W % 4 == 2, "the SSE transpose handles W = 4q or 4q + 2");
#endif
  if (lanes == W) {
    for (; p < kc; ++p)
      for (int l = 0; l < W; ++l) dst[p * W + l] = src[l * lane_stride + p * depth_stride];
    return;
  }
  // Edge panel: every lane written in one fixed-length loop (a variable-length copy plus a
  // variable-length zero fill became a memmove and a memset call per depth step, which dominated
  // the small products of narrow layers).
  for (; p < kc; ++p)
    for (int l = 0; l < W; ++l)
      dst[p * W + l] = l < lanes ? src[l * lane_stride + p * depth_stride] : 0.0f;
}

struct Problem {
  int64_t m, n, k;
  float alpha, beta;
  const float* a;
  int64_t a_row, a_col;  // op(A)(i, p) = a[i*a_row + p*a_col]
  const float* b;
  int64_t b_row, b_col;   // op(B)(p, j) = b[p*b_row + j*b_col]
  const float* packed_b;  // all of op(B) already packed (pack_b_rows), or null: b is packed here
  bool a_in_place;        // the micro-kernel reads op(A) where it lies; else it is packed
  float* c;
  int64_t ldc;
  const GemmEpilogue* epilogue;
  MicroKernel kernel;
};

// Rows of the row panel that starts `done` rows into a block of mc rows. Whole MR = 6 panels
// until the end, where a remainder of 2 rows becomes 4 + 4 instead of 6 + 2: the micro-kernel
// runs a 4-row panel at the full FMA rate (8 FMAs per step, two per cycle) in 2/3 of the time of
// a 6-row one, while a 2-row panel is bound by the FMA latency (4 FMAs per step on four chains)
// and takes as long as 4 rows. For m = 128 (MLP batches) that removes the 3% of the work that
// 22 six-row panels (132 rows) spent on padding.
int panel_rows(int64_t mc, int64_t done) {
  const int64_t left = mc - done;
  if (left == MR + 2) return 4;
  return static_cast<int>(std::min<int64_t>(MR, left));
}

// Where the whole-MR panels of a block of mc rows end (panel_rows' short panels start).
int64_t full_row_panels_end(int64_t mc) {
  return mc % MR == 2 && mc > MR ? mc - MR - 2 : mc / MR * MR;
}

// Row panels of a block of mc rows (the 4 + 4 cut keeps the count of MR-row panels).
int64_t row_panels(int64_t mc) {
  return ceil_div(mc, MR);
}

// First row of row panel q of a block of mc rows; mc for q = row_panels(mc).
int64_t panel_first_row(int64_t mc, int64_t q) {
  const int64_t whole = full_row_panels_end(mc) / MR;
  if (q <= whole) return q * MR;
  if (q >= row_panels(mc)) return mc;
  return whole * MR + 4;  // between the two 4-row panels of panel_rows' 4 + 4 cut
}

// Rows of the blocks of A that a thread owning `rows` rows packs: the rows are cut into equal
// blocks of at most MC (rounded up to MR), so no block is a thin remainder that pays the C
// write-back for little work.
int64_t row_block_step(int64_t rows) {
  return ceil_div(ceil_div(rows, ceil_div(rows, MC)), MR) * MR;
}

// Packs `lanes` lanes of depth kc into W-lane micro-panels (panel q at dst + q*W*kc, zero-padded
// past its last lane): lane l, depth p at src[l*lane_stride + p*depth_stride]. Every panel holds W
// lanes except the ones from lane `tail` on, whose sizes panel_lanes(lanes, l) gives.
template <int W, typename PanelLanes>
void pack_block(float* FASTMLP_RESTRICT dst, const float* FASTMLP_RESTRICT src, int64_t lane_stride,
                int64_t depth_stride, int64_t lanes, int64_t tail, int64_t kc,
                PanelLanes panel_lanes) {
  if (lane_stride == 1 && lanes * kc >= gemm_blocking::kRowOrderPackMin) {
    // Lanes contiguous (op(B) = B, op(A) = A^T) and the source larger than the L1: each depth
    // step of the source is read whole, in address order, and scattered over the panels. Going
    // panel by panel reads W floats per source row at a stride of a row, which the prefetchers
    // follow badly: packing B (1024 x 1024) that way made 128x1024x1024 NN 0.83x OpenBLAS, this
    // way 0.97x (paired runs). Small sources are in the L1 anyway and pack faster panel by panel.
    for (int64_t p = 0; p < kc; ++p) {
      const float* s = src + p * depth_stride;
      float* d = dst + p * W;
      int64_t l = 0;
      for (; l < tail; l += W, d += W * kc)
        for (int i = 0; i < W; ++i) d[i] = s[l + i];
      while (l < lanes) {
        const int n = panel_lanes(lanes, l);
        for (int i = 0; i < W; ++i) d[i] = i < n ? s[l + i] : 0.0f;
        l += n;
        d += W * kc;
      }
    }
    return;
  }
  for (int64_t l = 0; l < lanes; dst += W * kc) {
    const int n = l < tail ? W : panel_lanes(lanes, l);
    pack_panel<W>(dst, src + l * lane_stride, lane_stride, depth_stride, n, kc);
    l += n;
  }
}

// Packs op(A)[ic:ic+mc, pc:pc+kc] into MR-row micro-panels of panel_rows() rows.
void pack_a(const Problem& P, float* dst, int64_t ic, int64_t mc, int64_t pc, int64_t kc) {
  pack_block<MR>(dst, P.a + ic * P.a_row + pc * P.a_col, P.a_row, P.a_col, mc,
                 full_row_panels_end(mc), kc, panel_rows);
}

// Packs row panels [q0, q1) of that block to dst (where panel q0 goes): a chunk of shared A.
// pack_a does not go through it: finding the chunk's rows made the tiny products of narrow
// layers 7-9% slower on one thread (paired runs, 32x16x2, 2x16x32).
void pack_a_panels(const Problem& P, float* dst, int64_t ic, int64_t mc, int64_t pc, int64_t kc,
                   int64_t q0, int64_t q1) {
  const int64_t r0 = panel_first_row(mc, q0), rows = panel_first_row(mc, q1) - r0;
  const int64_t whole_end = std::clamp<int64_t>(full_row_panels_end(mc) - r0, 0, rows);
  pack_block<MR>(dst, P.a + (ic + r0) * P.a_row + pc * P.a_col, P.a_row, P.a_col, rows, whole_end,
                 kc, [mc, r0](int64_t, int64_t done) { return panel_rows(mc, r0 + done); });
}

int panel_cols(int64_t cols, int64_t done) {
  return static_cast<int>(std::min<int64_t>(NR, cols - done));
}

// Packs op(B)[pc:pc+kc, jc:jc+nc] into NR-column micro-panels.
void pack_b(const Problem& P, float* dst, int64_t jc, int64_t nc, int64_t pc, int64_t kc) {
  pack_block<NR>(dst, P.b + pc * P.b_row + jc * P.b_col, P.b_col, P.b_row, nc, nc / NR * NR, kc,
                 panel_cols);
}

// Packs column panels [q0, q1) of that block to dst (where panel q0 goes): a chunk of shared B.
void pack_b_panels(const Problem& P, float* dst, int64_t jc, int64_t nc, int64_t pc, int64_t kc,
                   int64_t q0, int64_t q1) {
  pack_b(P, dst, jc + q0 * NR, std::min(q1 * NR, nc) - q0 * NR, pc, kc);
}

void cpu_relax() {
#if defined(__SSE2__) || defined(_M_X64)
  _mm_pause();
#endif
}

// Waits until counter >= target: spinning first (the threads of one call run at the same time,
// so what they wait for is a few microseconds of packing away), then yielding the core, so that
// a thread whose partner lost its core lets the scheduler run it.
void wait_until_reaches(const std::atomic<int64_t>& counter, int64_t target) {
  constexpr int kSpinsBeforeYield = 1024;  // ~27 us: PAUSE takes ~26 ns on this Zen 3
  int spins = 0;
  while (counter.load(std::memory_order_acquire) < target) {
    if (spins < kSpinsBeforeYield) {
      ++spins;
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

// The packed blocks of the operand that every thread of a call reads whole: op(A) when the
// threads split C's columns (MLP batches against wide layers) and it is packed (not read in
// place, see read_a_in_place), op(B) when they split its rows.
// Instead of each thread packing its own copy, the threads pack it once together: every block is
// cut into chunks of a few panels that the threads claim in turn, so a thread that starts late
// (a sleeping OpenMP worker takes 5-11 us to wake) finds its share already packed by the others
// instead of holding them up. Every block of the call is kept (no buffer is reused within it),
// so the only wait is for the chunks of the block a thread is about to use.
class SharedPacking {
 public:
  // Where a thread is in the sequence of blocks, which every thread visits in the same order.
  struct Cursor {
    int64_t first_ticket = 0;  // tickets (chunks) of the earlier blocks
    int64_t offset = 0;        // floats of the earlier blocks
  };

  explicit SharedPacking(float* data) : data_(data) {}

  // The cursor's block of `panels` panels of `panel_floats` floats, packed: this thread packs
  // the chunks no thread has claimed yet (pack(dst, q0, q1) packs panels [q0, q1) to dst), then
  // waits for the rest. Advances the cursor to the next block.
  template <typename PackPanels>
  const float* next_block(Cursor* cursor, int64_t panels, int64_t panel_floats,
                          const PackPanels& pack) {
    const int64_t chunk = std::max<int64_t>(1, kChunkFloats / panel_floats);
    const int64_t first = cursor->first_ticket;
    const int64_t end = first + ceil_div(panels, chunk);
    float* block = data_ + cursor->offset;
    // Tickets are claimed in block order and a thread moves on only once its block is packed,
    // so the next free ticket is never below this block's first.
    int64_t ticket = next_ticket_.load(std::memory_order_relaxed);
    while (ticket < end) {
      if (!next_ticket_.compare_exchange_weak(ticket, ticket + 1, std::memory_order_relaxed)) {
        continue;  // ticket now holds the current value
      }
      const int64_t q0 = (ticket - first) * chunk, q1 = std::min(panels, q0 + chunk);
      pack(block + q0 * panel_floats, q0, q1);
      packed_.fetch_add(1, std::memory_order_release);
      ticket = next_ticket_.load(std::memory_order_relaxed);
    }
    wait_until_reaches(packed_, end);
    cursor->first_ticket = end;
    cursor->offset += panels * panel_floats;
    return block;
  }

 private:
  // A chunk of ~24 KiB: packing it takes a few microseconds, so the last chunk of a block keeps
  // its waiters little, and a block has enough chunks to share (128 x 262 of A: 8 chunks).
  static constexpr int64_t kChunkFloats = 6144;

  float* data_;
  alignas(64) std::atomic<int64_t> next_ticket_{0};
  alignas(64) std::atomic<int64_t> packed_{0};
};

// Where the micro-kernels find the block op(A)[ic:ic+mc, pc:pc+kc]: packed into row panels MR * kc
// floats apart, or in A itself (Problem::a_in_place).
struct BlockA {
  const float* data;
  bool packed;
};

// The 2nd and 1st loops: every MR x NR tile of the mc x nc block of C at (ic, jc).
void macro_kernel(const Problem& P, BlockA a_block, const float* packed_b, int64_t ic, int64_t mc,
                  int64_t jc, int64_t nc, int64_t kc, bool first, bool last) {
  const GemmEpilogue& epi = *P.epilogue;
  MicroTile t;
  t.ldc = P.ldc;
  t.alpha = P.alpha;
  t.beta = first ? P.beta : 1.0f;
  t.epilogue = last;
  t.activation = epi.activation;
  t.activation_alpha = epi.activation_alpha;
  const int64_t a_row = a_block.packed ? 1 : P.a_row;
  const int64_t a_step = a_block.packed ? MR : P.a_col;
  // 2nd loop around the micro-kernel: NR-column micro-panels of packed B (one stays in the L1
  // while the 1st loop walks down all of the block of A).
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t j = jc + jr;
    t.nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
    t.bias = epi.bias != nullptr ? epi.bias + j : nullptr;
    // 1st loop around the micro-kernel: MR-row micro-panels of A.
    const float* a_panel = a_block.data;
    for (int64_t ir = 0; ir < mc; ir += t.mr) {
      const int64_t i = ic + ir;
      t.mr = panel_rows(mc, ir);
      t.c = P.c + i * P.ldc + j;
      t.preactivation = epi.preactivation != nullptr ? epi.preactivation + i * P.ldc + j : nullptr;
      P.kernel(kc, a_panel, a_row, a_step, packed_b + jr * kc, t);
      a_panel += a_block.packed ? MR * kc : t.mr * a_row;
    }
  }
}

// The shared blocks op(A)[ic:ic+mc, pc:pc+kc] and op(B)[pc:pc+kc, jc:jc+nc], packed. Kept out of
// line: inlined, they made gemm_block's one-thread path 2-4% slower on the tiny products of
// narrow layers (paired runs, 32x16x2).
FASTMLP_NOINLINE const float* shared_a_block(const Problem& P, SharedPacking* shared,
                                             SharedPacking::Cursor* cursor, int64_t ic, int64_t mc,
                                             int64_t pc, int64_t kc) {
  return shared->next_block(
      cursor, row_panels(mc), MR * kc,
      [&](float* dst, int64_t q0, int64_t q1) { pack_a_panels(P, dst, ic, mc, pc, kc, q0, q1); });
}

FASTMLP_NOINLINE const float* shared_b_block(const Problem& P, SharedPacking* shared,
                                             SharedPacking::Cursor* cursor, int64_t jc, int64_t nc,
                                             int64_t pc, int64_t kc) {
  return shared->next_block(
      cursor, ceil_div(nc, NR), NR * kc,
      [&](float* dst, int64_t q0, int64_t q1) { pack_b_panels(P, dst, jc, nc, pc, kc, q0, q1); });
}

// The five loops on the block C[i0:i1, j0:j1]. op(A) is read in place (P.a_in_place), packed into
// packed_a, or taken from shared_a when given (all threads own every row); op(B) is packed into
// packed_b or taken from shared_b when given (all threads own every column).
void gemm_block(const Problem& P, int64_t i0, int64_t i1, int64_t j0, int64_t j1, float* packed_a,
                float* packed_b, SharedPacking* shared_a, SharedPacking* shared_b) {
  if (i0 >= i1 || j0 >= j1) return;
  // alpha == 0 reads neither A nor B (as BLAS), so inf/NaN there cannot leak into C.
  const int64_t k = P.alpha == 0.0f ? 0 : P.k;
  const int64_t kc_step = k_block_step(k);
  const int64_t mc_step = row_block_step(i1 - i0);

  SharedPacking::Cursor b_cursor;  // blocks of op(B), one per (jc, pc)
  // 5th loop around the micro-kernel: NC-column blocks of C.
  for (int64_t jc = j0; jc < j1; jc += NC) {
    const int64_t nc = std::min(NC, j1 - jc);
    // Blocks of op(A), one per (pc, ic): they do not depend on jc, so each column block walks
    // the same shared ones again.
    SharedPacking::Cursor a_cursor;
    // 4th loop around the micro-kernel: KC-deep slices of k, each packing op(B)[pc:pc+kc,
    // jc:jc+nc]. It runs once when k == 0, with kc = 0, so that beta and the epilogue still apply.
    int64_t pc = 0;
    do {
      const int64_t kc = std::min(kc_step, k - pc);
      const bool first = pc == 0;
      const bool last = pc + kc >= k;
      const float* b_block = packed_b;
      if (P.packed_b != nullptr) {
        // k-block pc starts at pc * padded_columns(n); column jc (a multiple of NR) is panel
        // jc / NR of it, NR * kc floats per panel.
        b_block = P.packed_b + pc * padded_columns(P.n) + jc * kc;
      } else if (shared_b != nullptr) {
        b_block = shared_b_block(P, shared_b, &b_cursor, jc, nc, pc, kc);
      } else {
        pack_b(P, packed_b, jc, nc, pc, kc);
      }
      // 3rd loop around the micro-kernel: MC-row blocks of op(A)[ic:ic+mc, pc:pc+kc], each
      // packed unless A is read in place.
      for (int64_t ic = i0; ic < i1; ic += mc_step) {
        const int64_t mc = std::min(mc_step, i1 - ic);
        BlockA a_block{packed_a, true};
        if (P.a_in_place) {
          a_block = {P.a + ic * P.a_row + pc * P.a_col, false};
        } else if (shared_a != nullptr) {
          a_block.data = shared_a_block(P, shared_a, &a_cursor, ic, mc, pc, kc);
        } else {
          pack_a(P, packed_a, ic, mc, pc, kc);
        }
        macro_kernel(P, a_block, b_block, ic, mc, jc, nc, kc, first, last);
      }
      pc += kc;
    } while (pc < k);
  }
}

// How the threads tile C: `rows` x `cols` blocks, one per thread, cut at whole MR / NR panels.
struct ThreadGrid {
  int rows = 1;
  int cols = 1;
};

// The grid of at most nt threads: without shared packing every block packs its own rows of op(A)
// and columns of op(B), so a rows x cols grid packs op(A) cols times and op(B) rows times, i.e.
// cost ~ cols * m + rows * n, which this minimises. For 2 threads that splits the rows when
// m >= n (large batches, the dW = X^T dZ product) and the columns when m < n (MLP batches of
// 32-128 rows against wide layers). With shared packing (gemm_parallel) both 2-thread grids pack
// (m + n) k floats, and the choice was measured instead: the other split gave 0.97-1.00x on the
// three MLP products (benchmarks/RESULTS.md). (A column split now mostly reads op(A) in place and
// packs only op(B), which favours it further for MLP batches.)
ThreadGrid choose_grid(int64_t m, int64_t n, int nt) {
  const int64_t m_panels = ceil_div(m, MR), n_panels = ceil_div(n, NR);
  // No grid has more blocks than C has tiles.
  for (int t = static_cast<int>(std::min<int64_t>(nt, m_panels * n_panels)); t > 1; --t) {
    ThreadGrid best;
    double best_cost = 0.0;
    for (int r = 1; r <= t; ++r) {
      if (t % r != 0 || r > m_panels || t / r > n_panels) continue;
      const double cost = static_cast<double>(t / r) * m + static_cast<double>(r) * n;
      if (best_cost == 0.0 || cost < best_cost) {
        best = {r, t / r};
        best_cost = cost;
      }
    }
    if (best_cost > 0.0) return best;
  }
  return {};
}

// [begin, end) of block `index` of `count` along a dimension of `size` cut at multiples of `panel`.
void block_range(int64_t size, int64_t panel, int index, int count, int64_t* begin, int64_t* end) {
  const int64_t panels = ceil_div(size, panel);
  *begin = std::min(panels * index / count * panel, size);
  *end = std::min(panels * (index + 1) / count * panel, size);
}

// Called by the calling thread when its own blocks are done: waits a little for the workers, so
// that it arrives last at the region's closing barrier. Under the passive wait policy a thread
// that arrives there first sleeps and takes 5-10 us to be woken, which is on the caller's path
// only if the caller is the sleeper. The spin lasts at most half the time the caller has spent in
// the region (and 25 us): long enough for a worker that started a few microseconds late, short
// enough to cost little when a worker has lost its core to another process. Paired runs against
// the code before it (no spin, no shared packing), 2 threads, 128x64x64 NT / 64^3 TN: 1.08x / 1.06x
// on the quiet machine and 0.95x / 0.96x with one busy process beside; a fixed 27 us spin
// gave 1.25x / 1.06x and 0.85x / 0.78x, a spin as long as the caller's own time 1.09x / 1.08x and
// 0.89x / 0.88x. 128x256x784: +1%.
void wait_for_workers(const std::atomic<int>& workers_done, int workers,
                      std::chrono::steady_clock::time_point start) {
  using std::chrono::steady_clock;
  if (workers_done.load(std::memory_order_acquire) >= workers) return;
  const auto now = steady_clock::now();
  const auto deadline =
      now + std::min<steady_clock::duration>((now - start) / 2, std::chrono::microseconds(25));
  while (workers_done.load(std::memory_order_acquire) < workers) {
    for (int i = 0; i < 16; ++i) cpu_relax();  // ~0.4 us between clock reads
    if (steady_clock::now() >= deadline) return;
  }
}

// gemm() on a grid of more than one thread: per thread one MC x KC block of A (none when A is read
// in place) and one KC x (its columns, at most NC) block of B, except for an operand that the
// threads share.
void gemm_parallel(const Problem& P, ThreadGrid grid) {
  const int64_t m = P.m, n = P.n, k = P.k;
  const int nt = grid.rows * grid.cols;
  const int64_t kc_max = std::max<int64_t>(1, std::min(KC, k));
  // The operand that every thread reads whole is packed once, by all of them (SharedPacking):
  // op(A) when the threads split the columns (unless it is read in place), op(B) when they split
  // the rows. All its blocks are kept, which takes its whole packed size; above kSharedPackMax
  // floats (products far from MLP sizes, whose packing is a small part of the time) each thread
  // packs its own copy instead.
  const int64_t k_packed = P.alpha == 0.0f ? 0 : k;  // gemm_block reads no A or B when alpha == 0
  int64_t shared_a_size = 0, shared_b_size = 0;
  if (k_packed > 0 && grid.rows == 1 && !P.a_in_place) {
    const int64_t step = row_block_step(m);
    for (int64_t ic = 0; ic < m; ic += step)
      shared_a_size += row_panels(std::min(step, m - ic)) * MR * k_packed;
  } else if (k_packed > 0 && grid.cols == 1 && P.packed_b == nullptr) {
    shared_b_size = padded_columns(n) * k_packed;
  }
  if (std::max(shared_a_size, shared_b_size) > gemm_blocking::kSharedPackMax)
    shared_a_size = shared_b_size = 0;
  // A column split hands out whole NR-column panels, so a panel count that the threads do not
  // divide leaves one thread a panel more (2 threads: n = 784 is 49 panels, 25 + 24; n = 200 is
  // 13, 7 + 6). The panels left over after an even share are cut by rows instead, one row block
  // per thread. Paired runs, 2 threads: 128x784x256 NT 1.017x, 128x200x784 NN 1.073x. Only with
  // op(A) read in place: every other operand a thread reads it packs itself, so no shared
  // packing sees the extra block.
  const int64_t n_panels = ceil_div(n, NR);
  const int64_t panels_each = n_panels / nt;
  const bool split_leftover =
      grid.rows == 1 && P.a_in_place && n_panels % nt != 0 && ceil_div(m, MR) >= nt;
  // Column panels of the widest block of C a thread packs op(B) for.
  const int64_t b_panels = split_leftover ? std::max(panels_each, n_panels - nt * panels_each)
                                          : ceil_div(n_panels, grid.cols);
  const int64_t a_size = shared_a_size > 0 || P.a_in_place ? 0 : MC * kc_max;
  const int64_t b_size =
      shared_b_size > 0 || P.packed_b != nullptr ? 0 : kc_max * std::min(NC, b_panels * NR);
  float* packed_a = tl_pack_a.get(std::max(shared_a_size, nt * a_size));
  float* packed_b = tl_pack_b.get(std::max(shared_b_size, nt * b_size));

  SharedPacking shared_a(packed_a), shared_b(packed_b);
  SharedPacking* use_shared_a = shared_a_size > 0 ? &shared_a : nullptr;
  SharedPacking* use_shared_b = shared_b_size > 0 ? &shared_b : nullptr;
  std::atomic<int> workers_done{0};
  const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(nt)
  {
    const auto [tid, team] = team_slot();
    // One block per thread; the loop only matters if OpenMP gave a smaller team than asked for.
    for (int blk = tid; blk < nt; blk += team) {
      float* own_a = packed_a + blk * a_size;
      float* own_b = packed_b + blk * b_size;
      int64_t i0, i1, j0, j1;
      if (split_leftover) {
        j0 = blk * panels_each * NR;
        gemm_block(P, 0, m, j0, j0 + panels_each * NR, own_a, own_b, nullptr, nullptr);
        block_range(m, MR, blk, nt, &i0, &i1);
        gemm_block(P, i0, i1, nt * panels_each * NR, n, own_a, own_b, nullptr, nullptr);
        continue;
      }
      block_range(m, MR, blk / grid.cols, grid.rows, &i0, &i1);
      block_range(n, NR, blk % grid.cols, grid.cols, &j0, &j1);
      gemm_block(P, i0, i1, j0, j1, own_a, own_b, use_shared_a, use_shared_b);
    }
    if (tid != 0) {
      workers_done.fetch_add(1, std::memory_order_release);
    } else {
      wait_for_workers(workers_done, team - 1, start);
    }
  }
}

// Whether the micro-kernels read op(A) where it lies rather than from a packed copy. Packing costs
// a pass over A, which pays off only when many column panels read the packed copy: every NR
// columns of a thread's block of C read its whole block of A once. When the threads split C's
// columns, they would all wait on one shared packed copy, which in place they do not.
// The stride between the floats a micro-kernel reads in turn (A^T) or side by side (A) must not
// be a multiple of 2 KiB: the L1 (32 KiB, 8 ways of 64 sets of 64-byte lines) would hold those
// floats in at most 2 of its sets. Measured (bench_gemm.py and paired one-thread timings,
// benchmarks/RESULTS.md): in place, 512x10x128 NN 1.29x and 128x16x784 NN 1.35x faster; 64 to
// 192 columns 1.03-1.16x; 256 columns even; 1024x64x128 TN (stride 4 KiB) 0.57x; and the
// 2-thread 128x256x784 NN, whose threads share A, 1.06x.
bool read_a_in_place(const Problem& P, ThreadGrid grid) {
  const int64_t stride = P.a_col == 1 ? P.a_row : P.a_col;
  if (stride % gemm_blocking::kInPlaceAliasFloats == 0) return false;
  const bool a_shared = grid.rows == 1 && grid.cols > 1;
  const int64_t panels = ceil_div(ceil_div(P.n, grid.cols), NR);
  return a_shared || panels <= gemm_blocking::kInPlaceMaxPanels;
}

// Runs P (sizes, operands and kernel set) on the thread grid its size calls for.
void run(Problem P) {
  const double work =
      static_cast<double>(P.m) * static_cast<double>(P.n) * static_cast<double>(P.k);
  const ThreadGrid grid = work < static_cast<double>(gemm_blocking::kParallelMinWork)
                              ? ThreadGrid{}
                              : choose_grid(P.m, P.n, num_threads());
  P.a_in_place = read_a_in_place(P, grid);

  // Every buffer is allocated before any parallel region, so that a bad_alloc reaches the caller
  // as an exception.
  if (grid.rows * grid.cols == 1) {
    const int64_t kc_max = std::max<int64_t>(1, std::min(KC, P.k));
    float* packed_a = P.a_in_place ? nullptr : tl_pack_a.get(MC * kc_max);
    float* packed_b =
        P.packed_b != nullptr ? nullptr : tl_pack_b.get(kc_max * std::min(NC, padded_columns(P.n)));
    gemm_block(P, 0, P.m, 0, P.n, packed_a, packed_b, nullptr, nullptr);
    return;
  }
  gemm_parallel(P, grid);
}

// The checks gemm and gemm_packed_b share (op(B)'s stride is gemm's alone); false when C is
// empty, which has nothing to compute and whose strides are not checked.
bool check_problem(bool trans_a, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldc) {
  FASTMLP_CHECK(m >= 0 && n >= 0 && k >= 0, "gemm: negative size m=", m, " n=", n, " k=", k);
  if (m == 0 || n == 0) return false;
  FASTMLP_CHECK(lda >= (trans_a ? m : k), "lda: expected >= ", trans_a ? m : k, ", got ", lda);
  FASTMLP_CHECK(ldc >= n, "ldc: expected >= ", n, ", got ", ldc);
  return true;
}

// P with op(A) set from the BLAS-style arguments; op(B) is left to the caller.
Problem make_problem(bool trans_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                     int64_t lda, float beta, float* c, int64_t ldc, const GemmEpilogue& epilogue) {
  Problem P{};
  P.m = m;
  P.n = n;
  P.k = k;
  P.alpha = alpha;
  P.beta = beta;
  P.a = a;
  P.a_row = trans_a ? 1 : lda;
  P.a_col = trans_a ? lda : 1;
  P.c = c;
  P.ldc = ldc;
  P.epilogue = &epilogue;
  P.kernel = cpu_has_avx2_fma() ? gemm_micro_kernel_avx2 : gemm_micro_kernel_generic;
  return P;
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
          const GemmEpilogue& epilogue) {
  if (!check_problem(trans_a, m, n, k, lda, ldc)) return;
  FASTMLP_CHECK(ldb >= (trans_b ? k : n), "ldb: expected >= ", trans_b ? k : n, ", got ", ldb);
  Problem P = make_problem(trans_a, m, n, k, alpha, a, lda, beta, c, ldc, epilogue);
  P.b = b;
  P.b_row = trans_b ? 1 : ldb;
  P.b_col = trans_b ? ldb : 1;
  run(P);
}

int64_t packed_b_floats(int64_t k, int64_t n) {
  return k * padded_columns(n);
}

void pack_b_rows(float* packed, const float* b, int64_t ldb, int64_t k, int64_t n,
                 int64_t row_begin, int64_t row_end) {
  if (row_begin >= row_end) return;  // also k == 0, which has no k-blocks
  const int64_t kc_step = k_block_step(k), n_padded = padded_columns(n);
  for (int64_t pc = row_begin / kc_step * kc_step; pc < row_end; pc += kc_step) {
    const int64_t kc = std::min(kc_step, k - pc);
    const int64_t p0 = std::max(pc, row_begin), p1 = std::min(pc + kc, row_end);
    // Panel by panel, so that the writes run through the destination in address order (the
    // prefetchers follow that; row by row they jump a panel, NR * kc floats, every NR floats):
    // the packed copy is not in the cache when the engine repacks, and its writes, not the reads
    // of the rows just updated, are what this costs.
    for (int64_t j = 0; j < n; j += NR) {
      const int lanes = static_cast<int>(std::min<int64_t>(NR, n - j));
      const float* src = b + p0 * ldb + j;
      float* dst = packed + pc * n_padded + j * kc + (p0 - pc) * NR;
      for (int64_t p = p0; p < p1; ++p, src += ldb, dst += NR) {
        if (lanes == NR) {
          std::memcpy(dst, src, NR * sizeof(float));
        } else {
          for (int l = 0; l < NR; ++l) dst[l] = l < lanes ? src[l] : 0.0f;
        }
      }
    }
  }
}

void gemm_packed_b(bool trans_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                   int64_t lda, const float* packed_b, float beta, float* c, int64_t ldc,
                   const GemmEpilogue& epilogue) {
  if (!check_problem(trans_a, m, n, k, lda, ldc)) return;
  Problem P = make_problem(trans_a, m, n, k, alpha, a, lda, beta, c, ldc, epilogue);
  P.packed_b = packed_b;
  run(P);
}

}  // namespace fastmlp
