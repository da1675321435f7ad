// Run-time CPU feature detection: the AVX2/FMA kernels are compiled into every build and only
// called when the CPU running the code has those instructions.
#pragma once

namespace fastmlp {

bool cpu_has_avx2_fma();
bool cpu_has_avx512f();
// The SIMD level the kernels use on this CPU: "avx2+fma" or "generic".
const char* simd_level();

}  // namespace fastmlp
