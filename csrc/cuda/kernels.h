// The CUDA kernels of fastmlp: one host launcher per CPU kernel, with the CPU signature (same
// argument order, outputs first, same formulas: csrc/cpu/*.h are the contracts) plus a trailing
// stream. All pointers are device pointers. Launchers queue work on `stream` and return; they
// throw CudaError / DeviceOutOfMemory (check.h) or fastmlp::ValueError, never abort. The losses
// return their value to the host and so synchronise `stream`.
//
// Implementations: gemm.cu (FP32 SIMT), gemm_tf32.cu (tensor cores), activations.cu, softmax.cu,
// losses.cu, dropout.cu, optim.cu; gather.cu (rows of a data set, for the device-resident Trainer);
// fused_mlp.cu (whole passes of narrow MLPs).
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
// Labels must lie in [0, classes). The kernels check each label as they read it (the caller's
// check may predate a change by another thread; cpu/losses.h) and throw ValueError, starting with
// labels_name, for one out of range: it is never used as an index.
double softmax_cross_entropy(float* dlogits, const float* logits, const int64_t* labels,
                             int64_t batch, int64_t classes, float label_smoothing,
                             const char* labels_name, cudaStream_t stream);
double mse_loss(float* dpred, const float* pred, const float* target, int64_t batch,
                int64_t features, cudaStream_t stream);
double multiclass_hinge_loss(float* dscores, const float* scores, const int64_t* labels,
                             int64_t batch, int64_t classes, float margin, const char* labels_name,
                             cudaStream_t stream);
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

// ---------------------------------------------------------------- fused narrow MLP (fused_mlp.cu)
// Whole forward / backward passes of an MLP whose every width is at most 128, one launch each (no
// CPU twin: the contract is the unfused chain below, whose bits they reproduce). Layers l = 1..L
// (L <= kFusedMlpMaxLayers), widths D_0..D_L in [1, kFusedMlpMaxWidth], n rows, all arrays
// row-major and contiguous (row stride = width):
//   forward   z_l = h_{l-1} @ W_l + b_l (h_0 = x), h_l = a_l = f_l(z_l) for l < L, logits = z_L
//             == per layer gemm(NN) with the bias/activation epilogue.
//   backward  dZ_{l-1} = (dZ_l @ W_l^T) * f'_{l-1}(z_{l-1}) for l = L..2, dZ_L = dlogits
//             == per layer gemm(NT) then activation_backward (y = f(z) recomputed from z).
// Not in the kernels: the weight gradients dW_l = h_{l-1}^T @ dZ_l and db_l = column sums of dZ_l.
// They reduce over all n rows, across every block: fused, that needs float atomics (results that
// change from run to run) or per-block partials of up to 64 KB per layer and a second pass. The
// caller runs gemm(TN) and column_sum on the stored h_l = a_l (x for l = 1) and dZ_l instead:
// deterministic, and at full GEMM speed. PReLU's slope gradient sum(dH * min(z, 0)) is not computed
// either: a caller that learns the slope recomputes dH_{l-1} = dZ_l @ W_l^T for that layer (gemm
// NT) and calls prelu_backward, which gives dZ_{l-1} (the same bits) and dslope.
// Refused with ValueError: more layers or wider layers than the limits, or a net whose per-block
// shared memory (about 100 KB at width 128; fused_mlp.cu) exceeds what the GPU allows.
constexpr int kFusedMlpMaxLayers = 8;
constexpr int64_t kFusedMlpMaxWidth = 128;

// The net, on the device: weights[l] is W_{l+1} (D_l, D_{l+1}); biases[l] is b_{l+1} or nullptr
// (no bias), or biases is empty (no biases at all). activations / alphas have one entry per hidden
// layer (L - 1): alphas is leaky_relu's slope, elu's alpha and PReLU's slope, unless prelu_slopes
// (empty, or L - 1 entries) gives a PReLU layer a device pointer to its one shared slope (read by
// the kernel, e.g. a learned parameter).
struct FusedMlp {
  std::vector<int64_t> widths;
  std::vector<const float*> weights;
  std::vector<const float*> biases;
  std::vector<Activation> activations;
  std::vector<float> alphas;
  std::vector<const float*> prelu_slopes;
};

// Whether the kernels take a net of these widths (D_0..D_L) on the current GPU: the layer and
// width limits above and the per-block shared memory of the forward kernel (and of the backward
// one when `backward`). The engine asks before it picks the fused path, so that a net they refuse
// runs unfused instead of failing.
bool fused_mlp_fits(const std::vector<int64_t>& widths, bool backward);

// logits (n, D_L) <- forward of x (n, D_0). Inference: z and a empty. Training: z[h] and a[h]
// (n, D_{h+1}) for each hidden layer h = 0..L-2 receive z and f(z), which the backward and the
// weight gradients need. Overwrites its outputs.
void fused_mlp_forward(float* logits, const std::vector<float*>& z, const std::vector<float*>& a,
                       const float* x, int64_t n, const FusedMlp& net, cudaStream_t stream);

// dz[h] (n, D_{h+1}) <- dZ of hidden layer h = 0..L-2, given dlogits (n, D_L) and the forward's
// z[h]. Overwrites dz; dz[h] may alias z[h] (each element is read before it is written). Biases
// are not used. With one layer there is nothing to compute.
void fused_mlp_backward(const std::vector<float*>& dz, const float* dlogits,
                        const std::vector<const float*>& z, int64_t n, const FusedMlp& net,
                        cudaStream_t stream);

}  // namespace fastmlp::cuda
