// Portable micro-kernel: the same MR x NR tile and operand layouts as the AVX2 one (contract in
// cpu/gemm_kernel.h), in plain C++ that the compiler vectorizes for the baseline ISA. Used on CPUs
// without AVX2/FMA and when FASTMLP_SIMD=generic.
#include "cpu/gemm_kernel.h"

namespace fastmlp {

using gemm_blocking::MR;
using gemm_blocking::NR;

void gemm_micro_kernel_generic(int64_t kc, const float* FASTMLP_RESTRICT a, int64_t a_row,
                               int64_t a_step, const float* FASTMLP_RESTRICT b,
                               const MicroTile& t) {
  // One row of the tile at a time: its 16 sums fit in 4 SSE registers and the j loop vectorizes
  // cleanly. (Accumulating all 6 x 16 at once made GCC 12 shuffle a spilled tile: 2 GF/s.)
  float ab[MR][NR];
  for (int i = 0; i < t.mr; ++i) {
    float acc[NR] = {};
    for (int64_t p = 0; p < kc; ++p) {
      const float ai = a[i * a_row + p * a_step];
      const float* bp = b + p * NR;
      for (int j = 0; j < NR; ++j) acc[j] += ai * bp[j];
    }
    for (int j = 0; j < NR; ++j) ab[i][j] = acc[j];
  }

  for (int i = 0; i < t.mr; ++i) {
    float* c = t.c + i * t.ldc;
    for (int j = 0; j < t.nr; ++j) {
      // beta == 0 must not read C (it may hold NaN), hence the branch instead of beta * c[j].
      float z = t.alpha * ab[i][j];
      if (t.beta != 0.0f) z += t.beta * c[j];
      if (t.epilogue) {
        if (t.bias != nullptr) z += t.bias[j];
        if (t.preactivation != nullptr) t.preactivation[i * t.ldc + j] = z;
        z = activation_forward(t.activation, z, t.activation_alpha);
      }
      c[j] = z;
    }
  }
}

}  // namespace fastmlp
