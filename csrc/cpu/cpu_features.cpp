#include "cpu/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace fastmlp {
namespace {
// FASTMLP_SIMD=generic forces the portable path, so it can be tested on an AVX2 machine.
bool generic_forced() {
  const char* env = std::getenv("FASTMLP_SIMD");
  return env != nullptr && std::strcmp(env, "generic") == 0;
}
}  // namespace

bool cpu_has_avx2_fma() {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  static const bool has =
      !generic_forced() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

bool cpu_has_avx512f() {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  static const bool has = !generic_forced() && __builtin_cpu_supports("avx512f");
  return has;
#else
  return false;
#endif
}

const char* simd_level() {
  return cpu_has_avx2_fma() ? "avx2+fma" : "generic";
}

}  // namespace fastmlp
