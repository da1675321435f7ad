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
#include "cpu/cpu_features.h"

#define FASTMLP_OPTIM_ISA baseline
#include "cpu/optim_loops.h"

namespace fastmlp {
namespace {

// Calls chunk(begin, end) over a static split of [0, n) (inline for small n). Each chunk body is a
// plain loop the compiler vectorises; 16-aligned boundaries keep results bit-identical across
// thread counts even if a build contracts a*b+c into FMAs differently in body and remainder.
template <typename Chunk>
void for_each_chunk(int64_t n, const Chunk& chunk) {
  parallel_ranges(n, threads_for(n, kOptimizerGrain), chunk, /*align=*/16);
}

// The loops for this CPU: AVX where it has AVX2 (and FASTMLP_SIMD does not force the generic
// path), else the baseline copy. Both give the same bits (cpu/optim_loops.h).
const OptimLoops& loops() {
  static const OptimLoops baseline_loops = baseline::make_optim_loops();
  static const OptimLoops& chosen = cpu_has_avx2_fma() ? optim_loops_avx2() : baseline_loops;
  return chosen;
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

  // On the first step b = g' whatever the flavour; Nesterov still looks ahead.
  const auto loop = loops().sgd[use_momentum][use_momentum && config.nesterov][step == 1];
  for_each_chunk(
      n, [=](int64_t begin, int64_t end) { loop(param, momentum_buffer, grad, begin, end, s); });
}

// s += g'^2;  p -= clr * g' / (sqrt(s) + eps); see cpu/optim.h.
void adagrad_step(float* param, float* sum_sq, const float* grad, int64_t n,
                  const AdagradConfig& config, int64_t step) {
  const AdagradScalars c = adagrad_scalars(config, step);
  check_tensors(param, grad, n);
  check_buffer(sum_sq, n, "sum_sq", "(the sum of squared gradients)");
  const auto loop = loops().adagrad;
  for_each_chunk(n, [=](int64_t begin, int64_t end) { loop(param, sum_sq, grad, begin, end, c); });
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

  const auto loop = loops().rmsprop[config.centered][use_momentum];
  for_each_chunk(n, [=](int64_t begin, int64_t end) {
    loop(param, square_avg, momentum_buffer, grad_avg, grad, begin, end, c);
  });
}

// m, v moments with bias correction; AdamW decays p before the update; see cpu/optim.h.
void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
               const AdamConfig& config, int64_t step) {
  const AdamScalars c = adam_scalars(config, step);
  check_tensors(param, grad, n);
  check_buffer(exp_avg, n, "exp_avg", "(the first moment m)");
  check_buffer(exp_avg_sq, n, "exp_avg_sq", "(the second moment v)");
  const auto loop = loops().adam;
  for_each_chunk(n, [=](int64_t begin, int64_t end) {
    loop(param, exp_avg, exp_avg_sq, grad, begin, end, c);
  });
}

}  // namespace fastmlp
