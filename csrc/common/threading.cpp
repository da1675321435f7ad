#include "common/threading.h"

#include <atomic>

#include "common/errors.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastmlp {
namespace {
int initial_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();  // honours OMP_NUM_THREADS
#else
  return 1;
#endif
}
std::atomic<int> g_num_threads{initial_threads()};
}  // namespace

int num_threads() { return g_num_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  FASTMLP_CHECK(n >= 1, "n: expected a thread count >= 1, got ", n);
  g_num_threads.store(n, std::memory_order_relaxed);
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace fastmlp
