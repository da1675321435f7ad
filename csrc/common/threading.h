// Thread count used by every OpenMP region of fastmlp. It is a process-wide setting (not OpenMP's
// per-thread ICV), so a kernel called from any Python thread uses the same count.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastmlp {

// The most threads fastmlp uses, whatever is asked (set_num_threads, OMP_NUM_THREADS): more than
// the largest machines have cores for. Far above it, the GEMM's grid search took O(n^2) with the
// GIL released (2^31 - 1 threads: a 64 x 64 product never returned) and OpenMP started thousands
// of threads for one product, which a process limit turns into an abort.
constexpr int kMaxThreads = 1024;

int num_threads();            // threads a kernel may use now: the setting, capped on this thread
                              // by a live ScopedThreadLimit; 1..kMaxThreads
void set_num_threads(int n);  // 1 <= n <= kMaxThreads; ValueError otherwise
bool openmp_enabled();  // false when built without OpenMP (everything then runs on one thread)

// Caps num_threads() on the calling thread while it lives (nesting keeps the smallest cap). The
// engine uses it to run a whole small training step on one thread, GEMMs included, so that no
// kernel of that step opens a parallel region: on a loaded machine a region's barriers can wait a
// whole scheduler time slice for a descheduled worker, which costs far more than a small step.
class ScopedThreadLimit {
 public:
  explicit ScopedThreadLimit(int max_threads);
  ~ScopedThreadLimit();
  ScopedThreadLimit(const ScopedThreadLimit&) = delete;
  ScopedThreadLimit& operator=(const ScopedThreadLimit&) = delete;

 private:
  int saved_;
};

// Threads worth using for `work` units of roughly `grain` units each: 1 for tiny problems, so an
// elementwise op over a few hundred floats never pays a parallel-region start-up (~1-5 us).
inline int threads_for(int64_t work, int64_t grain) {
  const int64_t useful = grain > 0 ? work / grain : work;
  const int n = num_threads();
  if (useful <= 1) return 1;
  return useful < n ? static_cast<int>(useful) : n;
}

// Runs body(begin, end) on nt contiguous, disjoint pieces of [0, n), one per OpenMP thread; inline
// on the calling thread when nt == 1, so small problems never open a parallel region. Piece
// boundaries are multiples of `align`, which keeps each element in the same position of a
// vectorised loop (main body or remainder) whatever the thread count: bit-identical results.
// Inside an OpenMP parallel region: this thread's index and the team's size ({0, 1} in a build
// without OpenMP, where the region runs on the calling thread alone).
struct TeamSlot {
  int thread;
  int team;
};
inline TeamSlot team_slot() {
#ifdef _OPENMP
  return {omp_get_thread_num(), omp_get_num_threads()};
#else
  return {0, 1};
#endif
}

template <typename Body>
void parallel_ranges(int64_t n, int nt, const Body& body, int64_t align = 1) {
  if (nt <= 1 || n <= 1) {
    body(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const TeamSlot slot = team_slot();
    const int64_t t = slot.thread, team = slot.team;
    const int64_t per = ((n + team - 1) / team + align - 1) / align * align;
    const int64_t begin = std::min(n, t * per);
    body(begin, std::min(n, begin + per));
  }
}

}  // namespace fastmlp
