// CUDA optimizer updates (contracts: cpu/optim.h), one multi-tensor launch per step: every tensor
// of a model is updated by one kernel (a launch per 32 tensors), instead of a launch per tensor.
//
// The per-element rules are the FASTMLP_HD functions of common/optim_math.h, which the CPU loops
// call too, and the per-call scalars (bias corrections, decayed rates) are computed on the host in
// double exactly as cpu/optim.cpp does. Bit parity with the CPU: this file is compiled with
// --fmad=false (CMakeLists.txt), so nvcc does not contract a * b + c into an FMA; the CPU build
// targets baseline x86-64, which has no FMA, so both sides round every product and sum separately.
// Division and sqrtf are IEEE round-to-nearest on both (nvcc's defaults -prec-div=true,
// -prec-sqrt=true, no --use_fast_math). The same (param, grad, state, config, step) therefore
// gives the same float32 bits on both devices. (A CPU build that contracts, e.g. on aarch64,
// would differ in the last bits.)
//
// Layout: each tensor is n contiguous floats; param and its state buffers are updated in place;
// grad is read only and may alias param (each element is read before it is written, by the same
// thread); state buffers must not alias each other or param. Blocks own kChunk consecutive
// elements of one tensor; a block finds its tensor in the table's chunk prefix sums.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/errors.h"
#include "common/optim_math.h"
#include "common/optim_scalars.h"
#include "cuda/check.h"
#include "cuda/kernels.h"

namespace fastmlp::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // elements per block: 16 per thread
constexpr int kMaxTensors = 32;   // per launch: keeps the table (~1.8 KB) in the kernel parameters

struct TensorTable {
  float* param[kMaxTensors];
  const float* grad[kMaxTensors];
  float* s0[kMaxTensors];
  float* s1[kMaxTensors];
  float* s2[kMaxTensors];
  int64_t n[kMaxTensors];
  int64_t first_chunk[kMaxTensors + 1];  // prefix sums of ceil(n / kChunk)
  int count;
};

// Each rule reads every input of element i before it writes any output of it.
struct SgdRule {
  SgdScalars s;
  __device__ void operator()(const TensorTable& t, int ti, int64_t i) const {
    float p = t.param[ti][i];
    const float g = t.grad[ti][i];
    float b = s.use_momentum ? t.s0[ti][i] : 0.0f;
    sgd_update(p, b, g, s);
    t.param[ti][i] = p;
    if (s.use_momentum) t.s0[ti][i] = b;
  }
};

struct AdagradRule {
  AdagradScalars s;
  __device__ void operator()(const TensorTable& t, int ti, int64_t i) const {
    float p = t.param[ti][i];
    const float g = t.grad[ti][i];
    float acc = t.s0[ti][i];
    adagrad_update(p, acc, g, s);
    t.param[ti][i] = p;
    t.s0[ti][i] = acc;
  }
};

struct RmspropRule {
  RmspropScalars s;
  __device__ void operator()(const TensorTable& t, int ti, int64_t i) const {
    float p = t.param[ti][i];
    const float g = t.grad[ti][i];
    float v = t.s0[ti][i];
    float b = s.use_momentum ? t.s1[ti][i] : 0.0f;
    float a = s.centered ? t.s2[ti][i] : 0.0f;
    rmsprop_update(p, v, b, a, g, s);
    t.param[ti][i] = p;
    t.s0[ti][i] = v;
    if (s.use_momentum) t.s1[ti][i] = b;
    if (s.centered) t.s2[ti][i] = a;
  }
};

struct AdamRule {
  AdamScalars s;
  __device__ void operator()(const TensorTable& t, int ti, int64_t i) const {
    float p = t.param[ti][i];
    const float g = t.grad[ti][i];
    float m = t.s0[ti][i];
    float v = t.s1[ti][i];
    adam_update(p, m, v, g, s);
    t.param[ti][i] = p;
    t.s0[ti][i] = m;
    t.s1[ti][i] = v;
  }
};

template <typename Rule>
__global__ void __launch_bounds__(kThreads)
    multi_tensor_kernel(const TensorTable t, const Rule rule) {
  const int64_t chunk = blockIdx.x;
  int ti = 0;
  while (ti + 1 < t.count && t.first_chunk[ti + 1] <= chunk) ++ti;  // <= 32 steps, uniform
  const int64_t begin = (chunk - t.first_chunk[ti]) * kChunk;
  const int64_t end = begin + kChunk < t.n[ti] ? begin + kChunk : t.n[ti];
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) rule(t, ti, i);
}

// Launches `rule` over every non-empty tensor, 32 tensors per launch.
template <typename Rule>
void run_multi(const std::vector<OptimTensor>& tensors, const Rule& rule, const char* what,
               cudaStream_t stream) {
  size_t next = 0;
  while (next < tensors.size()) {
    TensorTable t{};
    int64_t chunks = 0;
    for (; next < tensors.size() && t.count < kMaxTensors; ++next) {
      const OptimTensor& x = tensors[next];
      if (x.n == 0) continue;
      t.param[t.count] = x.param;
      t.grad[t.count] = x.grad;
      t.s0[t.count] = x.state0;
      t.s1[t.count] = x.state1;
      t.s2[t.count] = x.state2;
      t.n[t.count] = x.n;
      t.first_chunk[t.count] = chunks;
      chunks += (x.n + kChunk - 1) / kChunk;
      ++t.count;
    }
    if (t.count == 0) break;
    t.first_chunk[t.count] = chunks;
    FASTMLP_CHECK(chunks < (int64_t{1} << 31), "param: too many elements for one launch (",
                  chunks * kChunk, ")");
    multi_tensor_kernel<Rule><<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(t, rule);
    check_launch(what);
  }
}

// ---------------------------------------------------------------- buffer checks
// (config checks: common/optim_scalars.h, shared with the CPU)
void check_tensors(const std::vector<OptimTensor>& tensors) {
  for (const OptimTensor& t : tensors) {
    FASTMLP_CHECK(t.n >= 0, "n: expected >= 0, got ", t.n);
    FASTMLP_CHECK(t.n == 0 || t.param != nullptr, "param: null pointer");
    FASTMLP_CHECK(t.n == 0 || t.grad != nullptr, "grad: null pointer");
  }
}
void check_state(const std::vector<OptimTensor>& tensors, float* OptimTensor::* member,
                 const char* name, const char* when) {
  for (const OptimTensor& t : tensors) {
    FASTMLP_CHECK(t.n == 0 || t.*member != nullptr, name, ": required ", when);
  }
}

}  // namespace

void sgd_step_multi(const std::vector<OptimTensor>& tensors, const SgdConfig& config, int64_t step,
                    cudaStream_t stream) {
  SgdRule rule{};
  rule.s = sgd_scalars(config, step);
  check_tensors(tensors);
  if (rule.s.use_momentum) {
    check_state(tensors, &OptimTensor::state0, "momentum_buffer", "when momentum != 0");
  }
  run_multi(tensors, rule, "sgd_step", stream);
}

void adagrad_step_multi(const std::vector<OptimTensor>& tensors, const AdagradConfig& config,
                        int64_t step, cudaStream_t stream) {
  AdagradRule rule{};
  rule.s = adagrad_scalars(config, step);
  check_tensors(tensors);
  check_state(tensors, &OptimTensor::state0, "sum_sq", "(the sum of squared gradients)");
  run_multi(tensors, rule, "adagrad_step", stream);
}

void rmsprop_step_multi(const std::vector<OptimTensor>& tensors, const RmspropConfig& config,
                        int64_t step, cudaStream_t stream) {
  RmspropRule rule{};
  rule.s = rmsprop_scalars(config, step);
  check_tensors(tensors);
  check_state(tensors, &OptimTensor::state0, "square_avg",
              "(the running mean of squared gradients)");
  if (rule.s.use_momentum) {
    check_state(tensors, &OptimTensor::state1, "momentum_buffer", "when momentum != 0");
  }
  if (config.centered) check_state(tensors, &OptimTensor::state2, "grad_avg", "when centered");
  run_multi(tensors, rule, "rmsprop_step", stream);
}

void adam_step_multi(const std::vector<OptimTensor>& tensors, const AdamConfig& config,
                     int64_t step, cudaStream_t stream) {
  AdamRule rule{};
  rule.s = adam_scalars(config, step);
  check_tensors(tensors);
  check_state(tensors, &OptimTensor::state0, "exp_avg", "(the first moment m)");
  check_state(tensors, &OptimTensor::state1, "exp_avg_sq", "(the second moment v)");
  run_multi(tensors, rule, "adam_step", stream);
}

// ---------------------------------------------------------------- single-tensor forms
void sgd_step(float* param, float* momentum_buffer, const float* grad, int64_t n,
              const SgdConfig& config, int64_t step, cudaStream_t stream) {
  sgd_step_multi({OptimTensor{param, grad, momentum_buffer, nullptr, nullptr, n}}, config, step,
                 stream);
}

void adagrad_step(float* param, float* sum_sq, const float* grad, int64_t n,
                  const AdagradConfig& config, int64_t step, cudaStream_t stream) {
  adagrad_step_multi({OptimTensor{param, grad, sum_sq, nullptr, nullptr, n}}, config, step, stream);
}

void rmsprop_step(float* param, float* square_avg, float* momentum_buffer, float* grad_avg,
                  const float* grad, int64_t n, const RmspropConfig& config, int64_t step,
                  cudaStream_t stream) {
  rmsprop_step_multi({OptimTensor{param, grad, square_avg, momentum_buffer, grad_avg, n}}, config,
                     step, stream);
}

void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
               const AdamConfig& config, int64_t step, cudaStream_t stream) {
  adam_step_multi({OptimTensor{param, grad, exp_avg, exp_avg_sq, nullptr, n}}, config, step,
                  stream);
}

}  // namespace fastmlp::cuda
