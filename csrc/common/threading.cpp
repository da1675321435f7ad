#include "common/threading.h"

#include <atomic>
#include <stdexcept>

#include "common/errors.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace fastmlp {
namespace {
int initial_threads() {
#ifdef _OPENMP
  const int n = omp_get_max_threads();  // honours OMP_NUM_THREADS
  return n < kMaxThreads ? n : kMaxThreads;
#else
  return 1;
#endif
}
std::atomic<int> g_num_threads{initial_threads()};
// The calling thread's cap (ScopedThreadLimit); a large value when none is live.
thread_local int tl_thread_cap = 1 << 30;

// Set in a process forked from this one (pthread_atfork), where more than one thread is refused.
std::atomic<bool> g_forked_child{false};

#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
// A child forked after the parent ran a parallel region inherits libgomp's thread-pool records
// but not its threads: its first parallel region waited forever (multiprocessing's default "fork"
// start method on Linux, a pool using a model built in the parent). The child runs fastmlp on its
// calling thread, and set_num_threads refuses more: whether the parent has run a parallel region
// (its own, or PyTorch's through the same libgomp) cannot be known, and a wrong guess deadlocks.
void one_thread_in_child() {
  g_num_threads.store(1, std::memory_order_relaxed);
  g_forked_child.store(true, std::memory_order_relaxed);
}
const bool g_fork_handler_registered = pthread_atfork(nullptr, nullptr, one_thread_in_child) == 0;
#endif
}  // namespace

int num_threads() {
  const int n = g_num_threads.load(std::memory_order_relaxed);
  return n < tl_thread_cap ? n : tl_thread_cap;
}

ScopedThreadLimit::ScopedThreadLimit(int max_threads) : saved_(tl_thread_cap) {
  const int cap = max_threads < 1 ? 1 : max_threads;
  if (cap < tl_thread_cap) tl_thread_cap = cap;
}

ScopedThreadLimit::~ScopedThreadLimit() {
  tl_thread_cap = saved_;
}

void set_num_threads(int n) {
  FASTMLP_CHECK(n >= 1 && n <= kMaxThreads, "n: expected a thread count from 1 to ", kMaxThreads,
                ", got ", n);
  if (n > 1 && g_forked_child.load(std::memory_order_relaxed)) {
    throw std::runtime_error(detail::concat(
        "n: this process was forked from one that had loaded fastmlp, and OpenMP's threads do not "
        "survive a fork: ",
        n,
        " threads would wait for them forever. Start children that should run several threads "
        "with multiprocessing's 'spawn' or 'forkserver' method."));
  }
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
