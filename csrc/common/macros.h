// Portability macros shared by the CPU (.cpp) and CUDA (.cu) translation units.
#pragma once

// FASTMLP_HD marks scalar math that both backends call: __host__ __device__ under nvcc,
// inline in a host compiler, so the two backends compute the same function. On the host the
// functions are static (one copy per translation unit): the AVX2 files (-mavx2 -mfma) call them
// too, and with external linkage the linker could keep their AVX2 copy for the whole library,
// which a CPU without AVX2 cannot run.
#if defined(__CUDACC__)
#define FASTMLP_HD __host__ __device__ __forceinline__
#else
#define FASTMLP_HD static inline
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FASTMLP_RESTRICT __restrict__
#define FASTMLP_ALWAYS_INLINE inline __attribute__((always_inline))
#define FASTMLP_NOINLINE __attribute__((noinline))
#else
#define FASTMLP_RESTRICT
#define FASTMLP_ALWAYS_INLINE inline
#define FASTMLP_NOINLINE
#endif
