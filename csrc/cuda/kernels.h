// The CUDA kernels of fastmlp: one host launcher per CPU kernel, with the CPU signature (same
// argument order, outputs first, same formulas: csrc/cpu/*.h are the contracts) plus a trailing
// stream. All pointers are device pointers. Launchers queue work on `stream` and return; they
// throw CudaError / DeviceOutOfMemory (check.h) or fastmlp::ValueError, never abort. The losses
// return their value to the host and so synchronise `stream`.
//
// Implementations: gemm.cu (FP32 SIMT), gemm_tf32.cu (tensor cores), activations.cu, softmax.cu,
// losses.cu, dropout.cu, optim.cu; gather.cu (rows of a data set, for the device-resident Trainer).
// Shared scalar math: common/activation_math.h, optim_math.h, random.h (the same FASTMLP_HD
// functions the CPU calls).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "cpu/gemm.h"   // GemmEpilogue
#include "cpu/optim.h"  // SgdConfig, AdagradConfig, RmspropConfig, AdamConfig

namespace fastmlp::cuda {

// ---------------------------------------------------------------- GEMM (cpu/gemm.h)
// C = act(alpha * op(A) @ op(B) + beta * C + bias), row-major, FP32 FMA on the CUDA cores.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
          const GemmEpilogue& epilogue, cudaStream_t stream);

// The same contract on the tensor cores in TF32 (inputs rounded to 10 mantissa bits, products
// accumulated in FP32): relative error ~1e-3 of |A||B| instead of ~1e-6. Opt-in only.
void gemm_tf32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
               int64_t ldc, const GemmEpilogue& epilogue, cudaStream_t stream);

// ---------------------------------------------------------------- activations (cpu/activations.h)
void activation_forward(float* y, const float* x, int64_t n, Activation kind, float alpha,
                        cudaStream_t stream);
void activation_backward(float* dx, const float* x, const float* y, const float* dy, int64_t n,
                         Activation kind, float alpha, cudaStream_t stream);
void prelu_forward(float* y, const float* x, const float* slope, int64_t rows, int64_t cols,
                   int64_t n_slope, cudaStream_t stream);
void prelu_backward(float* dx, float* dslope, const float* x, const float* slope, const float* dy,
                    int64_t rows, int64_t cols, int64_t n_slope, cudaStream_t stream);
void column_sum(float* out, const float* x, int64_t rows, int64_t cols, cudaStream_t stream);

// ---------------------------------------------------------------- softmax (cpu/softmax.h)
void softmax_forward(float* y, const float* x, int64_t rows, int64_t cols, cudaStream_t stream);
void log_softmax_forward(float* y, const float* x, int64_t rows, int64_t cols, cudaStream_t stream);
void softmax_backward(float* dx, const float* y, const float* dy, int64_t rows, int64_t cols,
                      cudaStream_t stream);
void log_softmax_backward(float* dx, const float* y, const float* dy, int64_t rows, int64_t cols,
                          cudaStream_t stream);

// ---------------------------------------------------------------- losses (cpu/losses.h)
// Labels must lie in [0, classes): the caller checks them (the kernels clamp nothing).
double softmax_cross_entropy(float* dlogits, const float* logits, const int64_t* labels,
                             int64_t batch, int64_t classes, float label_smoothing,
                             cudaStream_t stream);
double mse_loss(float* dpred, const float* pred, const float* target, int64_t batch,
                int64_t features, cudaStream_t stream);
double multiclass_hinge_loss(float* dscores, const float* scores, const int64_t* labels,
                             int64_t batch, int64_t classes, float margin, cudaStream_t stream);
double bce_with_logits(float* dlogits, const float* logits, const float* targets, int64_t batch,
                       int64_t features, cudaStream_t stream);
// Whether any label lies outside [0, classes) (one small reduction; synchronises the stream).
bool labels_out_of_range(const int64_t* labels, int64_t n, int64_t classes, cudaStream_t stream);
// Whether any target lies outside [0, 1] or is NaN (bce_with_logits' precondition).
bool targets_out_of_unit_interval(const float* targets, int64_t n, cudaStream_t stream);

// ---------------------------------------------------------------- dropout (cpu/dropout.h)
void dropout_forward(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t offset,
                     cudaStream_t stream);
void dropout_backward(float* dx, const float* dy, int64_t n, float p, uint64_t seed,
                      uint64_t offset, cudaStream_t stream);
void dropout_mask(float* mask, int64_t n, float p, uint64_t seed, uint64_t offset,
                  cudaStream_t stream);

// ---------------------------------------------------------------- optimizers (cpu/optim.h)
// One tensor of a multi-tensor update: param and its state buffers (nullptr where the rule does not
// use one: SGD without momentum, RMSprop without momentum / centring), n elements each.
struct OptimTensor {
  float* param = nullptr;
  const float* grad = nullptr;
  float* state0 = nullptr;  // sgd: momentum_buffer; adagrad: sum_sq; rmsprop: square_avg; adam: m
  float* state1 = nullptr;  // rmsprop: momentum_buffer; adam: v
  float* state2 = nullptr;  // rmsprop: grad_avg
  int64_t n = 0;
};

// Every tensor of `tensors` updated by one rule in as few launches as possible (one per 32
// tensors). Same validation and per-element arithmetic as the CPU steps (bit-identical: see
// optim.cu).
void sgd_step_multi(const std::vector<OptimTensor>& tensors, const SgdConfig& config, int64_t step,
                    cudaStream_t stream);
void adagrad_step_multi(const std::vector<OptimTensor>& tensors, const AdagradConfig& config,
                        int64_t step, cudaStream_t stream);
void rmsprop_step_multi(const std::vector<OptimTensor>& tensors, const RmspropConfig& config,
                        int64_t step, cudaStream_t stream);
void adam_step_multi(const std::vector<OptimTensor>& tensors, const AdamConfig& config,
                     int64_t step, cudaStream_t stream);

// The single-tensor forms, with the CPU signatures (each is a one-element multi-tensor call).
void sgd_step(float* param, float* momentum_buffer, const float* grad, int64_t n,
              const SgdConfig& config, int64_t step, cudaStream_t stream);
void adagrad_step(float* param, float* sum_sq, const float* grad, int64_t n,
                  const AdagradConfig& config, int64_t step, cudaStream_t stream);
void rmsprop_step(float* param, float* square_avg, float* momentum_buffer, float* grad_avg,
                  const float* grad, int64_t n, const RmspropConfig& config, int64_t step,
                  cudaStream_t stream);
void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
               const AdamConfig& config, int64_t step, cudaStream_t stream);

// ---------------------------------------------------------------- data movement (gather.cu)
// dst row r = src row index[r] for r < rows, rows of row_bytes bytes (a multiple of 4), both
// row-major and contiguous. Every index must lie in [0, rows of src): the caller's permutation.
void gather_rows(void* dst, const void* src, const int64_t* index, int64_t rows, int64_t row_bytes,
                 cudaStream_t stream);

}  // namespace fastmlp::cuda
