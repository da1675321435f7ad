// Grow-only per-thread scratch memory for kernels that need a temporary (per-row or per-chunk
// partial sums kept for a deterministic reduction). Reusing it means a training step allocates
// nothing once its sizes have been seen. One live use per thread at a time: a kernel takes it,
// uses it and returns before anything else on that thread asks for it.
#pragma once

#include <cstddef>
#include <vector>

namespace fastmlp {

inline double* thread_scratch_doubles(size_t n) {
  thread_local std::vector<double> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

}  // namespace fastmlp
