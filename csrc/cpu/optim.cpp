// CPU optimizer steps: validate the config, turn it into the per-call scalars of
// common/optim_math.h (in double, as torch.optim does in Python), then apply the shared
// per-element rule over the n elements with OpenMP.
//
// Every step is elementwise over param (n floats, flat), grad (n) and the state buffers (n each):
// param and the state buffers are overwritten in place; grad is only read and may alias param
// (each element is read before it is written). State buffers must not alias each other or param.
// Each element is written by exactly one thread with the same arithmetic, so the result does not
// depend on the thread count.
#include "cpu/optim.h"

#include <algorithm>
#include <cmath>

#include "common/errors.h"
#include "common/optim_math.h"
#include "common/optim_scalars.h"
#include "common/threading.h"

namespace fastmlp {
namespace {

// Elements per thread below which another thread does not pay for itself. An update reads 2-4
// floats and writes 1-3 per element (memory-bound, well under 1 ns/element on one core once
// vectorised), so 32K elements is ~10-30 us of work against a few us to wake a thread; a
// 1M-parameter layer uses every thread.
constexpr int64_t kGrain = int64_t{1} << 15;

// Calls chunk(begin, end) over a static split of [0, n) (inline for small n). Each chunk body is a
// plain loop the compiler vectorises; 16-aligned boundaries keep results bit-identical across
// thread counts even if a build contracts a*b+c into FMAs differently in body and remainder.
template <typename Chunk>
void for_each_chunk(int64_t n, const Chunk& chunk) {
  parallel_ranges(n, threads_for(n, kGrain), chunk, /*align=*/16);
}

// The loops below take the *Scalars by value and fix the rule's flags as template arguments: the
// flags then fold away and no float store through param can alias a hyper-parameter, which is
// what lets the compiler vectorise the shared scalar rule.
template <bool kMomentum, bool kNesterov, bool kFirst>
void sgd_loop(float* param, float* buf, const float* grad, int64_t n, SgdScalars s) {
  s.use_momentum = kMomentum;
  s.nesterov = kNesterov;
  s.first_step = kFirst;
  for_each_chunk(n, [=](int64_t begin, int64_t end) {
    const SgdScalars c = s;
    if (kMomentum) {
      for (int64_t i = begin; i < end; ++i) sgd_update(param[i], buf[i], grad[i], c);
    } else {
      for (int64_t i = begin; i < end; ++i) {
        float unused = 0.0f;
        sgd_update(param[i], unused, grad[i], c);
      }
    }
  });
}

template <bool kCentered, bool kMomentum>
void rmsprop_loop(float* param, float* square_avg, float* buf, float* grad_avg, const float* grad,
                  int64_t n, RmspropScalars s) {
  s.centered = kCentered;
  s.use_momentum = kMomentum;
  for_each_chunk(n, [=](int64_t begin, int64_t end) {
    const RmspropScalars c = s;
    for (int64_t i = begin; i < end; ++i) {
      // Absent buffers are replaced by a dummy the rule never reads (its flag is off).
      float b_dummy = 0.0f, a_dummy = 0.0f;
      float& b = kMomentum ? buf[i] : b_dummy;
      float& a = kCentered ? grad_avg[i] : a_dummy;
      rmsprop_update(param[i], square_avg[i], b, a, grad[i], c);
    }
  });
}

// ---------------------------------------------------------------- buffer checks
// (config checks: common/optim_scalars.h, shared with CUDA)
void check_tensors(const float* param, const float* grad, int64_t n) {
  FASTMLP_CHECK(n >= 0, "n: expected >= 0, got ", n);
  FASTMLP_CHECK(n == 0 || param != nullptr, "param: null pointer");
  FASTMLP_CHECK(n == 0 || grad != nullptr, "grad: null pointer");
}
void check_buffer(const float* buf, int64_t n, const char* name, const char* when) {
  FASTMLP_CHECK(n == 0 || buf != nullptr, name, ": required ", when);
}

}  // namespace

// p -= lr * d with d from the (optionally Nesterov) momentum buffer; see cpu/optim.h.
void sgd_step(float* param, float* momentum_buffer, const float* grad, int64_t n,
              const SgdConfig& config, int64_t step) {
  const SgdScalars s = sgd_scalars(config, step);
  check_tensors(param, grad, n);
  const bool use_momentum = s.use_momentum;
  if (use_momentum) check_buffer(momentum_buffer, n, "momentum_buffer", "when momentum != 0");

  if (!use_momentum) {
    sgd_loop<false, false, false>(param, nullptr, grad, n, s);
  } else if (step == 1) {
    // On the first step b = g' whatever the flavour; Nesterov still looks ahead.
    if (config.nesterov) {
      sgd_loop<true, true, true>(param, momentum_buffer, grad, n, s);
    } else {
      sgd_loop<true, false, true>(param, momentum_buffer, grad, n, s);
    }
  } else if (config.nesterov) {
    sgd_loop<true, true, false>(param, momentum_buffer, grad, n, s);
  } else {
    sgd_loop<true, false, false>(param, momentum_buffer, grad, n, s);
  }
}

// s += g'^2;  p -= clr * g' / (sqrt(s) + eps); see cpu/optim.h.
void adagrad_step(float* param, float* sum_sq, const float* grad, int64_t n,
                  const AdagradConfig& config, int64_t step) {
  const AdagradScalars c = adagrad_scalars(config, step);
  check_tensors(param, grad, n);
  check_buffer(sum_sq, n, "sum_sq", "(the sum of squared gradients)");
  for_each_chunk(n, [=](int64_t begin, int64_t end) {
    const AdagradScalars cc = c;
    for (int64_t i = begin; i < end; ++i) adagrad_update(param[i], sum_sq[i], grad[i], cc);
  });
}

// v = alpha v + (1 - alpha) g'^2, optional centring and momentum; see cpu/optim.h.
void rmsprop_step(float* param, float* square_avg, float* momentum_buffer, float* grad_avg,
                  const float* grad, int64_t n, const RmspropConfig& config, int64_t step) {
  const RmspropScalars c = rmsprop_scalars(config, step);
  check_tensors(param, grad, n);
  check_buffer(square_avg, n, "square_avg", "(the running mean of squared gradients)");
  const bool use_momentum = c.use_momentum;
  if (use_momentum) check_buffer(momentum_buffer, n, "momentum_buffer", "when momentum != 0");
  if (config.centered) check_buffer(grad_avg, n, "grad_avg", "when centered");

  if (config.centered) {
    if (use_momentum) {
      rmsprop_loop<true, true>(param, square_avg, momentum_buffer, grad_avg, grad, n, c);
    } else {
      rmsprop_loop<true, false>(param, square_avg, nullptr, grad_avg, grad, n, c);
    }
  } else if (use_momentum) {
    rmsprop_loop<false, true>(param, square_avg, momentum_buffer, nullptr, grad, n, c);
  } else {
    rmsprop_loop<false, false>(param, square_avg, nullptr, nullptr, grad, n, c);
  }
}

// m, v moments with bias correction; AdamW decays p before the update; see cpu/optim.h.
void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
               const AdamConfig& config, int64_t step) {
  const AdamScalars c = adam_scalars(config, step);
  check_tensors(param, grad, n);
  check_buffer(exp_avg, n, "exp_avg", "(the first moment m)");
  check_buffer(exp_avg_sq, n, "exp_avg_sq", "(the second moment v)");
  for_each_chunk(n, [=](int64_t begin, int64_t end) {
    const AdamScalars cc = c;
    for (int64_t i = begin; i < end; ++i)
      adam_update(param[i], exp_avg[i], exp_avg_sq[i], grad[i], cc);
  });
}

}  // namespace fastmlp
