// The CPU training engine: an MLP whose parameters, gradients and activations live in flat float32
// buffers, trained by one fused C++ call per step (forward, loss, backward, optimizer update).
//
// Shape legend (llm.c style):
//   L       number of linear layers = sizes.size() - 1; layer l = 1..L maps D_{l-1} -> D_l
//   D_l     layer widths: D_0 = in_features (the input), D_L = out_features (the logits)
//   B       batch rows of the current call (n)
//   x       (B, D_0) input, row-major
//   W_l     (D_{l-1}, D_l) row-major, so that z_l = h_{l-1} @ W_l + b_l;  b_l (D_l,)
//   z_l     (B, D_l) pre-activation, stored only when the activation's derivative needs it
//   a_l     (B, D_l) activation output f_l(z_l); for l = L the logits (f_L is the identity)
//   h_l     (B, D_l) the next layer's input: dropout(a_l) in training mode when p_l > 0, else a_l;
//           h_0 = x. Dropout and non-identity activations are on hidden layers (l < L) only.
//   P       total parameter count
//
// Flat parameter layout (the gradient buffer has the same one):
//   [W_1, b_1, W_2, b_2, ..., W_L, b_L, s_1, ..., s_K]
//   where s_k is the learned slope of the k-th PReLU hidden layer (one scalar per layer, in layer
//   order; PyTorch's nn.PReLU() default of one shared slope).
//
// Dropout randomness (reproducible, thread-count independent): every training-mode forward draws
// its masks from the counter RNG of cpu/dropout.h with key `seed` (the model's seed) and an
// element offset `rng_offset` that starts at 0 and advances by B * D_l after each dropout layer,
// in layer order. So layer l of a forward pass uses dropout_mask(B * D_l, p_l, seed, offset_l)
// with offset_l = rng_offset before that pass + sum of B * D_k over earlier dropout layers k < l.
// A step that fails (non-finite loss, any exception) leaves rng_offset where it was.
//
// Packed weights: every W_l is also kept in the packed layout of the forward GEMM
// (cpu/gemm.h, pack_b_rows), so that no forward pass packs the weights: the optimizer update
// repacks the rows it has just written, while they are in its cache, and set_parameters marks the
// copy stale (repacked in full by the next forward). Before, each forward product packed W_l
// itself, and a batch-parallel forward once per thread.
//
// Memory: the workspace (z, a, h per layer and two backward scratch buffers) is sized for the
// largest batch seen so far and never shrinks, so once a batch size has been seen no call
// allocates. Inference-only forwards process at most max(capacity, kForwardChunkRows) rows at a
// time so that predicting on a large data set does not grow the workspace to the data-set size.
//
// Non-finite inputs: forward and evaluate check x (and float targets) first and throw ValueError
// naming the argument. train_step and loss_and_gradients do not pay for that pass: a NaN or inf in
// x always reaches dW_1 = x^T @ dZ_1 (NaN * anything and inf * 0 are NaN, inf * finite != 0 is
// inf, and every x element is multiplied into a row of dW_1), and a non-finite target always makes
// the loss non-finite, so the existing loss and gradient checks see it; only when one of them fires
// are x and the targets examined, to raise ValueError ("x: contains NaN or infinite values") rather
// than NonFiniteError. Either way nothing has changed.
//
// Labels: the bindings check their range with the GIL held, but the engine reads the caller's
// array after the GIL is released, when another thread may have changed it. The loss kernels check
// each label as they read it (cpu/losses.h) and throw ValueError ("y: ...") for one out of range;
// the loss is computed before the backward pass and the update, so nothing has changed then
// either. Accuracy counting only compares labels, never indexes with them.
//
// Threads (batch-parallel passes): with T >= 2 threads, the forward pass runs in ONE OpenMP region
// in which each thread takes a contiguous block of batch rows through every layer with
// single-threaded kernels, and the backward pass in one region with one barrier per layer
// boundary (each thread computes a block of rows of every dW_l and its rows of every dH_l); in
// train_step the same region then checks the gradients and, all being finite, applies the
// optimizer, each thread to the gradient blocks it just computed (OptimizerState::apply_range).
// The GEMMs' own parallel regions would instead open one region per product with ~3 barriers per
// k-block; a barrier waits for the slowest thread, which on a shared machine can be descheduled
// for a whole time slice. Each output element is computed with the same arithmetic whatever rows
// a call covers, so the results are bit-identical to the serial passes and independent of T.
// PReLU networks (their slope gradient is a sum over all rows) and batches of fewer than
// kMinRowsPerThread rows per thread keep the serial passes, whose kernels use their own threading.
//
// Threads (small calls): when a call's work (batch rows times the multiply-adds of one row's
// forward pass) is below kSerialStepMacs, its forward, loss and backward run every kernel on the
// calling thread (ScopedThreadLimit), so that a small step opens no OpenMP region for them (see the
// constant for the measurement); the optimizer update keeps its own grain (cpu/optim.cpp).
//
// Thread safety: every public method takes the network's mutex; the bindings call them with the
// GIL released, so two Python threads sharing a model are serialised instead of racing.
#pragma once

#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "common/activation_math.h"
#include "common/aligned_buffer.h"
#include "common/threading.h"
#include "engine/layout.h"
#include "engine/optimizer_state.h"
#include "engine/targets.h"

namespace fastmlp {

class Network {
 public:
  // Rows an inference forward processes at a time when the workspace is smaller (see above).
  static constexpr int64_t kForwardChunkRows = 1024;

  // Below this many forward multiply-adds (rows * sum_l D_{l-1} D_l) the forward, loss and
  // backward of a call run on the calling thread (the optimizer update keeps its own grain, since
  // its work is the parameter count, not the batch). Measured with benchmarks/bench_step.py
  // (Adam, medians of 7 rounds, OMP_WAIT_POLICY=passive as fastmlp/__init__.py sets it, load
  // average ~2.3 on the 2-core EPYC), 1 thread vs 2 with no cap: 64-256-10 at batch 32 (0.59M)
  // 95 vs 127 us, so one thread wins; 784-256-128-10 at batch 8 (1.9M) 605-645 vs 545 us and at
  // batch 32 (7.5M) 880 vs 730 us, so two threads win. The cap sits between: 1M.
  static constexpr int64_t kSerialStepMacs = int64_t{1} << 20;

  // Fewest batch rows per thread for the batch-parallel passes. Each thread packed the whole
  // weight matrix of every layer for its own rows, so with few rows the duplicated packing
  // outweighed the barriers saved. Measured in one process, alternating the two paths (Adam, 2
  // threads, passive wait policy, load average ~4): 784-256-128-10 at batch 32 (16 rows each)
  // 2.7x slower batch-parallel; at batch 128 (64 rows each) 0.94x, at 1024 0.91x and
  // 784-1024-1024-10 at 256 0.90x of the time of the GEMM-parallel passes. Since the forward
  // products read the shared packed weights (the backward ones still pack W_l^T per thread), 6
  // rows instead of 48 gave 1.05x / 1.01x / 1.00x at batch 16 / 32 / 64 and 0.98x for
  // 784-1024-1024-10 at 32 (paired process runs, benchmarks/RESULTS.md): no reason to move it.
  static constexpr int64_t kMinRowsPerThread = 48;

  // sizes: D_0..D_L (L >= 1, all >= 1). activations, alphas, dropouts: one per hidden layer
  // (L - 1 entries). alpha is the leaky_relu slope / elu alpha, and the initial slope of a PReLU
  // layer. Parameters start at zero: the caller initialises them with set_parameters.
  Network(std::vector<int64_t> sizes, std::vector<Activation> activations,
          std::vector<float> alphas, std::vector<float> dropouts, uint64_t seed);

  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // out (n, D_L) = the logits. training: apply dropout (and advance rng_offset).
  void forward(float* out, const float* x, int64_t n, bool training);

  // Mean loss over the batch; the gradients of that loss are kept (get_gradients) and, when
  // gradients_out is given, copied there (P floats) before the call lets go of the network, so
  // that they are this call's even if another thread steps the model next. training: dropout.
  // Throws NonFiniteError when the loss or any gradient is NaN/inf (parameters untouched).
  double loss_and_gradients(const float* x, const Targets& y, int64_t n, LossKind loss,
                            float label_smoothing, bool training, float* gradients_out = nullptr);

  // loss_and_gradients, then one optimizer update of every parameter; NonFiniteError also for a
  // finite gradient that reaches 2^64 with weight decay and L1 (kUpdateGradientLimit,
  // common/optim_math.h), whose square the adaptive optimizers cannot hold. On any exception
  // (NonFiniteError included) parameters, optimizer state, its step count and rng_offset are as
  // they were before the call.
  double train_step(const float* x, const Targets& y, int64_t n, LossKind loss,
                    float label_smoothing, bool training, OptimizerState& optimizer);

  // Eval-mode loss (no label smoothing, no gradients) and accuracy over n rows, batch_rows at a
  // time. Non-finite losses are returned, not thrown: this is a measurement.
  EvalResult evaluate(const float* x, const Targets& y, int64_t n, LossKind loss,
                      int64_t batch_rows);

  // Copies P floats into the parameter buffer.
  void set_parameters(const float* values, int64_t count);

  // Predictions the training steps got right since the last call, and how many were counted:
  // each successful train_step adds the (correct, total) of its own forward pass (training mode,
  // before its update), counted as evaluate() counts; (0, 0) for mse. Resets both to 0.
  std::pair<int64_t, int64_t> take_train_counts();

  int64_t num_layers() const { return static_cast<int64_t>(sizes_.size()) - 1; }
  int64_t in_features() const { return sizes_.front(); }
  int64_t out_features() const { return sizes_.back(); }
  int64_t num_parameters() const { return static_cast<int64_t>(params_.size()); }
  const std::vector<int64_t>& sizes() const { return sizes_; }
  // Copies (P floats) of the parameters / the gradients of the last loss_and_gradients or
  // train_step, taken under the mutex: a step running on another thread cannot tear them.
  void get_parameters(float* out) const;
  void get_gradients(float* out) const;
  // get_parameters and rng_offset() in one locked call (returns the offset): what pickle and save
  // keep, from between two steps.
  uint64_t snapshot(float* out) const;
  uint64_t seed() const { return seed_; }
  uint64_t rng_offset() const;
  void set_rng_offset(uint64_t offset);
  int64_t workspace_capacity_rows() const { return capacity_rows_; }
  // Whether a training step on n rows would now take the batch-parallel passes (for tests).
  bool step_is_batch_parallel(int64_t n) const {
    return forward_macs(n) >= kSerialStepMacs && batch_parallel(n, num_threads());
  }
  int64_t workspace_bytes() const {
    return static_cast<int64_t>(workspace_.capacity() * sizeof(float));
  }

 private:
  void ensure_capacity(int64_t rows);
  float* ws(int64_t row_offset) { return workspace_.data() + row_offset * capacity_rows_; }
  float layer_alpha(const Layer& layer) const {
    return layer.slope_offset >= 0 ? params_[layer.slope_offset] : layer.alpha;
  }
  // Forward through all layers into the workspace (logits in a_L), or into `out` when given.
  // store_z: keep pre-activations for a backward pass. Returns the advanced rng offset.
  uint64_t forward_rows(float* out, const float* x, int64_t n, bool training, bool store_z,
                        uint64_t rng_offset);
  // The batch-parallel pieces (see "Threads" above) and when they are used.
  bool batch_parallel(int64_t n, int nt) const;
  uint64_t forward_slice(float* out, const float* x, int64_t n, int64_t r0, int64_t r1,
                         bool training, bool store_z, uint64_t rng_offset);
  uint64_t forward_parallel(float* out, const float* x, int64_t n, bool training, bool store_z,
                            uint64_t rng_offset, int nt);
  bool backward_parallel(const float* x, int64_t n, bool training, uint64_t end_offset, int nt,
                         OptimizerState* optimizer);
  const float* layer_input(int64_t l, const float* x, bool training);
  int64_t forward_macs(int64_t rows) const { return rows * macs_per_row_; }
  // Throws ValueError naming x or y when either holds NaN or inf (float targets only).
  void check_inputs_finite(const float* x, const Targets& y, int64_t n) const;
  // Adds to *correct and *total the predictions of `logits` (n rows) that match y (see EvalResult).
  void count_correct(const float* logits, const Targets& y, int64_t n, LossKind loss,
                     int64_t* correct, int64_t* total) const;
  double compute_loss(float* dlogits, const float* logits, const Targets& y, int64_t n,
                      LossKind loss, float label_smoothing) const;
  void backward(const float* x, int64_t n, bool training, uint64_t rng_offset);
  // The packed copy of W_l (see "Packed weights" above): rows [r0, r1) repacked from params_;
  // all of them when the copy is stale.
  void pack_weight_rows(int64_t l, int64_t r0, int64_t r1);
  void ensure_weights_packed();
  const float* packed_weight(int64_t l) const {
    return packed_weights_.data() + packed_offsets_[l];
  }
  // Part t of `team` of one optimizer update (step() + 1, not counted): the rows of every W_l that
  // split_aligned gives thread t (the rows of dW_l the batch-parallel backward computed on it),
  // repacked after their update; the last part also the biases and PReLU slopes.
  void update_part(OptimizerState& optimizer, int t, int team);
  // One whole optimizer update (counted), threaded by the parameter count.
  void update_parameters(OptimizerState& optimizer);
  // The loss and gradients; with an optimizer, the batch-parallel pass may also apply the update
  // (then *updated is set and only finish_step() is left to the caller).
  double gradients_locked(const float* x, const Targets& y, int64_t n, LossKind loss,
                          float label_smoothing, bool training, uint64_t* next_offset,
                          OptimizerState* optimizer = nullptr, bool* updated = nullptr);
  [[noreturn]] void throw_non_finite(const float* x, const Targets& y, int64_t n,
                                     const char* what) const;

  std::vector<int64_t> sizes_;
  std::vector<Layer> layers_;
  std::vector<float> params_, grads_;
  AlignedFloats packed_weights_;
  std::vector<int64_t> packed_offsets_;  // per layer, floats into packed_weights_
  bool packed_stale_ = true;             // params_ changed other than by update_part
  uint64_t seed_ = 0;
  uint64_t rng_offset_ = 0;
  int64_t macs_per_row_ = 0;  // sum_l D_{l-1} * D_l
  bool has_prelu_ = false;    // PReLU's slope gradient sums over all rows: no batch split
  int64_t train_correct_ = 0, train_total_ = 0;  // see take_train_counts()

  std::vector<float> workspace_;
  int64_t capacity_rows_ = 0;
  int64_t floats_per_row_ = 0;       // workspace floats per batch row
  int64_t scratch_row_[2] = {0, 0};  // backward ping-pong buffers, max_width floats per row each

  mutable std::mutex mutex_;
};

}  // namespace fastmlp
