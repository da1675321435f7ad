// Portability macros shared by the CPU (.cpp) and CUDA (.cu) translation units.
#pragma once

// FASTMLP_HD marks scalar math that both backends call: __host__ __device__ under nvcc,
// plain inline in a host compiler, so the two backends compute the same function.
#if defined(__CUDACC__)
#define FASTMLP_HD __host__ __device__ __forceinline__
#else
#define FASTMLP_HD inline
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
