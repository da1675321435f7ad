// Thread count used by every OpenMP region of fastmlp. It is a process-wide setting (not OpenMP's
// per-thread ICV), so a kernel called from any Python thread uses the same count.
#pragma once

#include <cstdint>

namespace fastmlp {

int num_threads();              // current setting, >= 1
void set_num_threads(int n);    // n >= 1; ValueError otherwise
bool openmp_enabled();          // false when built without OpenMP (everything then runs on one thread)

// Threads worth using for `work` units of roughly `grain` units each: 1 for tiny problems, so an
// elementwise op over a few hundred floats never pays a parallel-region start-up (~1-5 us).
inline int threads_for(int64_t work, int64_t grain) {
  const int64_t useful = grain > 0 ? work / grain : work;
  const int n = num_threads();
  if (useful <= 1) return 1;
  return useful < n ? static_cast<int>(useful) : n;
}

}  // namespace fastmlp
