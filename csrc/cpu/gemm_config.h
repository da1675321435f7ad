// Block sizes of the CPU GEMM (csrc/cpu/gemm.cpp), BLIS notation.
//
//   MR x NR   register tile of the micro-kernel: 6 x 16 floats = 12 ymm accumulators, plus 2 ymm
//             for a row of the B panel and 1 for a broadcast of A (15 of the 16 ymm registers).
//             It is the tile BLIS and OpenBLAS use for SGEMM on Haswell and Zen; the generic
//             kernel uses the same tile so that one packing format serves both.
//   KC        depth of one rank-KC update: a KC x NR micro-panel of B (384*16*4 = 24 KiB) stays in
//             the 32 KiB L1d while the micro-kernel walks down the MR-row panels of A.
//   MC        rows of the packed A block: MC x KC (144*384*4 = 216 KiB) stays in the 512 KiB L2,
//             leaving room for the B micro-panels streaming through. Multiple of MR.
//   NC        columns of the packed B block: KC x NC (384*4080*4 ~ 6 MiB) lives in the 32 MiB L3
//             shared by the cores. Multiple of NR.
//
// Machine: AMD EPYC (Zen 3), 2 cores, L1d 32 KiB, L2 512 KiB/core, L3 32 MiB. MR, NR, MC and NC
// are BLIS's Zen values, derived from those cache sizes as above. KC was BLIS's 256 and is 384 by
// measurement (2026-11-24, quiet machine, one thread, the products of a batch-1024 step): 384
// made the dW products 1.04-1.07x faster (fewer k-blocks, so fewer passes over C), 1024^3
// 0.97 -> 1.00x OpenBLAS, a 784-256-128-10 step at batch 1024 1.02x; 512 was slower than 256 on
// the dW products (0.94x). gemm.cpp evens out the k and row blocks (k = 1024 runs as 3 x 342).
#pragma once

#include <cstdint>

namespace fastmlp::gemm_blocking {

constexpr int MR = 6;
constexpr int NR = 16;
constexpr int64_t MC = 144;
constexpr int64_t KC = 384;
constexpr int64_t NC = 4080;

static_assert(MC % MR == 0, "MC must be a multiple of MR");
static_assert(NC % NR == 0, "NC must be a multiple of NR");

// Below this many multiply-adds (m*n*k) a call runs on the calling thread with no parallel region:
// 64^3 multiply-adds take ~6-9 us on one core (measured), the same order as an OpenMP fork/join
// plus the three barriers between packing and compute (a few us when the cores are idle, far more
// when they are shared), so smaller problems cannot gain from a second thread. An estimate, not a
// measured crossover: the machine it was written on was too loaded to time 2-thread runs cleanly.
constexpr int64_t kParallelMinWork = int64_t{64} * 64 * 64;

// Packing reads the source in address order, a whole depth step at a time, when its lanes are
// contiguous and it holds at least this many floats (32 KiB, the L1d): below that the source sits
// in the L1 and packing panel by panel is faster (paired runs: 2x16x32 TN 0.6x, 32x64x64 NN 0.95x
// in address order); above it the panel-by-panel walk strides a whole row per NR floats and
// 128x1024x1024 NN ran at 0.83x OpenBLAS.
constexpr int64_t kRowOrderPackMin = 8192;

// op(A) is read in place by the micro-kernels, not packed, when a thread's block of C has at most
// this many NR-column panels, or when the threads split C's columns (gemm.cpp, read_a_in_place):
// one-thread paired timings gave in place 1.03-1.35x faster up to 192 columns, even at 256.
constexpr int64_t kInPlaceMaxPanels = 12;

// ... unless the stride between the floats a micro-kernel call reads (A's row stride, or A^T's
// step) is a multiple of this many floats, 2 KiB, which maps them to at most 2 of the L1's 64 sets.
constexpr int64_t kInPlaceAliasFloats = 512;

// Largest operand, in floats, that the threads of a call pack together (gemm.cpp, SharedPacking):
// it covers the MLP products (784-1024-1024-10 at batch 256: 256 x 1024 of A) and 512^3.
constexpr int64_t kSharedPackMax = int64_t{1} << 20;

}  // namespace fastmlp::gemm_blocking
