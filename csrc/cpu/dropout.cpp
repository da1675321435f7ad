// CPU inverted dropout: out[i] = in[i] * factor(i), factor(i) = 1 / (1 - p) if
// uniform(seed, offset + i) >= p else 0, with the Philox4x32-10 element-to-counter mapping of
// common/random.h. x, y, dy, dx, mask are flat arrays of n floats; y/dx are overwritten and may be
// the same memory as x/dy (each element is read once, then written). Backward regenerates the
// mask from (seed, offset), so forward stores nothing.
//
// Work is split by Philox block (4 consecutive global indices share one call): each block is
// generated once and owned by one thread, so the output does not depend on the thread count.
#include "cpu/dropout.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/errors.h"
#include "common/random.h"
#include "common/threading.h"

namespace fastmlp {
namespace {

// Philox blocks (4 elements each) per thread below which another thread does not pay for itself:
// one block costs ~10-20 ns (10 rounds of two 32x32->64 multiplies), so 4096 blocks are ~50 us of
// work against a few us to wake a thread.
constexpr int64_t kBlockGrain = 4096;

// Global indices wrap modulo 2^64, so their counters (index / 4) wrap modulo 2^62.
constexpr uint64_t kCounterMask = (uint64_t{1} << 62) - 1;

void check_args(int64_t n, float p, const void* out, const void* in, const char* out_name,
                const char* in_name) {
  FASTMLP_CHECK(n >= 0, "n: expected >= 0, got ", n);
  FASTMLP_CHECK(p >= 0.0f && p < 1.0f, "p: expected a drop probability in [0, 1), got ", p);
  FASTMLP_CHECK(n == 0 || out != nullptr, out_name, ": null pointer");
  FASTMLP_CHECK(n == 0 || in != nullptr, in_name, ": null pointer");
}

// out[i] = in[i] * factor(i) (kMask: out[i] = factor(i)) for i in [0, n). Element i has global
// index offset + i (mod 2^64); with offset = 4q + r, local block b covers local indices
// [4b - r, 4b - r + 4) and uses Philox counter (q + b) mod 2^62. Only the first and last blocks
// can be partial; the others take the unchecked path.
template <bool kMask>
void apply_mask(float* out, const float* in, int64_t n, float p, uint64_t seed, uint64_t offset) {
  const float scale = 1.0f / (1.0f - p);
  const uint64_t q = offset >> 2;
  const int64_t r = static_cast<int64_t>(offset & 3u);
  const int64_t blocks = (n + r + 3) / 4;
  // Kept: out = in * scale (or scale); dropped: +0.0 exactly, even where in is NaN or inf. The
  // select is done on the bits so that it compiles without a (50% mispredicted) branch.
  const auto element = [&](int64_t i, uint32_t word) {
    const uint32_t keep_bits = 0u - static_cast<uint32_t>(uniform_from_bits(word) >= p);
    const float v = kMask ? scale : in[i] * scale;
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    bits &= keep_bits;
    std::memcpy(&out[i], &bits, sizeof bits);
  };
  const auto checked_block = [&](int64_t b) {
    const Philox4x32Block words = philox_block(seed, (q + static_cast<uint64_t>(b)) & kCounterMask);
    const int64_t first = 4 * b - r;
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = first + lane;
      if (i >= 0 && i < n) element(i, words.x[lane]);
    }
  };
  const auto run = [&](int64_t b_begin, int64_t b_end) {
    int64_t b = b_begin;
    if (b < b_end && 4 * b - r < 0) checked_block(b++);  // partial first block (r > 0)
    for (; b < b_end && 4 * (b + 1) - r <= n; ++b) {     // whole blocks: no bounds checks
      const Philox4x32Block words =
          philox_block(seed, (q + static_cast<uint64_t>(b)) & kCounterMask);
      const int64_t first = 4 * b - r;
      for (int lane = 0; lane < 4; ++lane) element(first + lane, words.x[lane]);
    }
    for (; b < b_end; ++b) checked_block(b);  // the rest; the last block may be partial
  };
  parallel_ranges(blocks, threads_for(blocks, kBlockGrain), run);
}

}  // namespace

// y = x * mask(seed, offset) / (1 - p); p == 0 copies x.
void dropout_forward(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t offset) {
  check_args(n, p, y, x, "y", "x");
  if (p == 0.0f) {
    if (y != x && n > 0) std::memmove(y, x, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  apply_mask<false>(y, x, n, p, seed, offset);
}

// dx = dy * mask(seed, offset) / (1 - p): the same factors forward used (not accumulated).
void dropout_backward(float* dx, const float* dy, int64_t n, float p, uint64_t seed,
                      uint64_t offset) {
  check_args(n, p, dx, dy, "dx", "dy");
  if (p == 0.0f) {
    if (dx != dy && n > 0) std::memmove(dx, dy, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  apply_mask<false>(dx, dy, n, p, seed, offset);
}

// mask[i] = 1 / (1 - p) if kept, else 0 (all ones when p == 0).
void dropout_mask(float* mask, int64_t n, float p, uint64_t seed, uint64_t offset) {
  FASTMLP_CHECK(n >= 0, "n: expected >= 0, got ", n);
  FASTMLP_CHECK(p >= 0.0f && p < 1.0f, "p: expected a drop probability in [0, 1), got ", p);
  FASTMLP_CHECK(n == 0 || mask != nullptr, "mask: null pointer");
  apply_mask<true>(mask, nullptr, n, p, seed, offset);
}

}  // namespace fastmlp
