// The CUDA training engine: the network of engine/network.h (same shapes, same flat parameter
// layout [W_1, b_1, ..., W_L, b_L, PReLU slopes], same dropout offsets, same failure guarantees)
// with its parameters, gradients, workspace and optimizer state in device memory. Built into the
// _cuda module only; the kernels are the launchers of cuda/kernels.h, so every op computes the
// same function as its CPU twin (GEMM sums in another order: results agree to float32 rounding,
// not bit for bit).
//
// Memory: host-pointer calls (the NumPy path) copy x and the targets into staging buffers that,
// like the workspace, grow to the largest batch seen and never shrink; device-pointer calls
// (*_device, for data already on this GPU) copy nothing. Once a batch size has been seen, the
// engine allocates nothing with cudaMalloc; the loss and column-sum kernels take small scratch
// buffers from the stream-ordered pool (cuda/check.h StreamBuffer), which recycles them.
//
// Device: the engine lives on the GPU that was current when it was built; every public call makes
// that GPU current for its duration (and restores the caller's), so another library switching
// devices cannot send its kernels to memory on another GPU.
//
// Streams and synchronisation: everything runs on the legacy default stream, in order with
// fastmlp.cuda's DeviceArray operations and PyTorch/CuPy default streams. This first version
// synchronises where the host needs a value, up to four times per step: the labels' range check
// (device-memory steps only), the loss (returned to the caller), the finiteness flag of the
// gradients (the update must not run when it is set) and the count of correct predictions. A
// step captured in a CUDA graph, with these kept on the device, is the next version.
//
// Fused narrow nets: when every width is at most 128 (cuda/kernels.h, "fused narrow MLP"), the
// forward pass runs as one fused_mlp_forward launch and, in training, the backward pass's dZ
// chain as one fused_mlp_backward launch (weight gradients stay on the GEMM; see kernels.h). The
// kernels reproduce the unfused chain, so the choice changes speed, not results. Inference passes
// take any such net; training passes also need every hidden activation to store z (not
// identity), no PReLU (its slope gradient needs dH, which the fused backward does not keep) and
// no dropout in the pass. set_fused(false) turns the fused path off.
//
// Failure guarantees (as engine/network.h): a step whose loss or gradients are not finite throws
// NonFiniteError (ValueError naming x or y when the input is the cause) before the optimizer runs,
// so parameters, optimizer state, its step count and rng_offset are unchanged. A CUDA error
// (CudaError, DeviceOutOfMemory) can leave the device in an unknown state and is reported as such.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "common/activation_math.h"
#include "cuda/kernels.h"
#include "cuda/memory.h"
#include "engine/layout.h"
#include "engine/optimizer_config.h"
#include "engine/targets.h"

namespace fastmlp::cuda {

// One optimizer's state on the device, laid out like the network's parameters: the CPU's
// engine/optimizer_state.h with device buffers, the same OptimizerConfig and cuda/kernels.h's
// update kernels.
class OptimizerState {
 public:
  template <typename Config>
  explicit OptimizerState(const Config& config) : config_(config) {}

  OptimizerKind kind() const { return config_.kind(); }
  int64_t step() const { return step_; }
  double lr() const { return config_.lr(); }
  const OptimizerConfig& config() const { return config_; }
  void set_lr(double lr) { config_.set_lr(lr); }
  // Held as engine/optimizer_state.h says: by the engine for a whole step, by the bindings around
  // every other use from Python.
  std::unique_lock<std::mutex> lock() const { return std::unique_lock<std::mutex>(mutex_); }

  // Allocates (zeroed) device state for n parameters on the current device, once; ValueError if
  // it was built for another n or another device, or if the step count has no room for one more.
  void prepare(int64_t n);
  // One update of n parameters on `stream` with step = step() + 1, then counts the step.
  void apply(float* params, const float* grads, int64_t n, cudaStream_t stream);

  // Saving and restoring, as engine/optimizer_state.h: buffer_copy copies buffer i to the host;
  // restore uploads the saved buffers to the current device (ValueError if they do not fit, and
  // then nothing changes).
  int64_t size() const { return size_; }
  std::vector<float> buffer_copy(int i) const;
  void restore(int64_t step, int64_t n, const std::array<const float*, 3>& buffers);

 private:
  mutable std::mutex mutex_;
  OptimizerConfig config_;
  int64_t step_ = 0;
  int64_t size_ = -1;
  int device_ = -1;
  std::unique_ptr<DeviceBuffer> buffers_[3];  // as engine/optimizer_state.h; null when unused
};

class Network {
 public:
  Network(std::vector<int64_t> sizes, std::vector<Activation> activations,
          std::vector<float> alphas, std::vector<float> dropouts, uint64_t seed);
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // Host-memory API, the semantics of fastmlp::Network's methods of the same names.
  void forward(float* out, const float* x, int64_t n, bool training);
  double loss_and_gradients(const float* x, const Targets& y, int64_t n, LossKind loss,
                            float label_smoothing, bool training, float* gradients_out = nullptr);
  double train_step(const float* x, const Targets& y, int64_t n, LossKind loss,
                    float label_smoothing, bool training, OptimizerState& optimizer);
  EvalResult evaluate(const float* x, const Targets& y, int64_t n, LossKind loss,
                      int64_t batch_rows);

  // Device-memory step: x (n, D_0) and the targets already on this network's device (labels
  // int64 (n,), values float32 (n, D_L)). Labels are checked on the device (one small reduction).
  // targets_checked: the caller validated the targets already (the Trainer does, once per fit),
  // which saves the per-step range check and its synchronisation.
  double train_step_device(const float* x, const Targets& y, int64_t n, LossKind loss,
                           float label_smoothing, bool training, OptimizerState& optimizer,
                           bool targets_checked = false);

  // Host copies of the parameters / gradients (P floats); set_parameters checks finiteness.
  void set_parameters(const float* values, int64_t count);
  void get_parameters(float* out) const;
  void get_gradients(float* out) const;
  uint64_t snapshot(float* out) const;  // as fastmlp::Network::snapshot

  std::pair<int64_t, int64_t> take_train_counts();

  // The fused path (see the header comment): on by default. uses_fused(true): whether a
  // train_step / loss_and_gradients in training mode runs it now; uses_fused(false): whether an
  // inference pass (forward in eval mode, evaluate) does.
  void set_fused(bool on);
  bool fused() const { return fused_; }
  bool uses_fused(bool training) const { return fused_pass(training, training); }

  int64_t num_layers() const { return static_cast<int64_t>(sizes_.size()) - 1; }
  int64_t in_features() const { return sizes_.front(); }
  int64_t out_features() const { return sizes_.back(); }
  int64_t num_parameters() const { return num_params_; }
  const std::vector<int64_t>& sizes() const { return sizes_; }
  uint64_t seed() const { return seed_; }
  uint64_t rng_offset() const;
  void set_rng_offset(uint64_t offset);
  int64_t workspace_capacity_rows() const { return capacity_rows_; }
  int device() const { return device_; }
  float* device_parameters() { return params_.as<float>(); }
  float* device_gradients() { return grads_.as<float>(); }

 private:
  // A device buffer that only grows (workspace, staging); contents are scratch.
  class Scratch {
   public:
    void* ensure(size_t bytes, const char* what);
    template <typename T>
    T* as() const {
      return buffer_ ? static_cast<T*>(buffer_->data()) : nullptr;
    }

   private:
    std::unique_ptr<DeviceBuffer> buffer_;
  };

  void ensure_capacity(int64_t rows);
  float* ws(int64_t row_offset) const {
    return workspace_.as<float>() + row_offset * capacity_rows_;
  }
  const float* layer_input(int64_t l, const float* x, bool training) const;
  // Whether a pass in this mode runs the fused kernels; store_z: a forward whose backward follows.
  bool fused_pass(bool training, bool store_z) const;
  void fused_forward(float* logits, const float* x, int64_t n, bool store_z);
  void fused_backward(const float* x, int64_t n);
  uint64_t forward_rows(float* out, const float* x, int64_t n, bool training, bool store_z,
                        uint64_t rng_offset);
  void backward(const float* x, int64_t n, bool training, uint64_t end_offset);
  double compute_loss(float* dlogits, const float* logits, const Targets& y, int64_t n,
                      LossKind loss, float label_smoothing);
  // Uploads x and the targets of a host call into the staging buffers; returns device targets.
  Targets stage(const float** x, const Targets& y, int64_t n);
  // The gradients to host memory (P floats); the caller holds the mutex.
  void copy_gradients_locked(float* out) const;
  double gradients_locked(const float* x, const Targets& y, int64_t n, LossKind loss,
                          float label_smoothing, bool training, bool input_on_host,
                          const float* host_x, const Targets& host_y, uint64_t* next_offset,
                          const OptimizerState* optimizer);
  double step_locked(const float* x, const Targets& y, int64_t n, LossKind loss,
                     float label_smoothing, bool training, OptimizerState& optimizer,
                     bool input_on_host, const float* host_x, const Targets& host_y);
  void count_correct(const float* logits, const Targets& y, int64_t n, LossKind loss,
                     int64_t* correct, int64_t* total);
  // Throws ValueError naming x or y if either holds NaN/inf, else NonFiniteError(what).
  [[noreturn]] void throw_non_finite(const float* x, const Targets& y, int64_t n, bool on_host,
                                     const char* what);

  std::vector<int64_t> sizes_;
  std::vector<Layer> layers_;
  int64_t num_params_ = 0;
  uint64_t seed_ = 0;
  uint64_t rng_offset_ = 0;
  int device_ = 0;
  Scratch params_, grads_;
  Scratch workspace_;
  int64_t capacity_rows_ = 0;
  int64_t floats_per_row_ = 0;
  int64_t scratch_row_[2] = {0, 0};
  Scratch staged_x_, staged_labels_, staged_values_;
  Scratch flags_;  // small device scratch: finiteness flag and correct-prediction count
  int64_t train_correct_ = 0, train_total_ = 0;
  // Fused path: the net as the kernels see it (pointers into params_, which never moves), what
  // it fits, and per-call pointer lists kept to reuse their storage.
  std::atomic<bool> fused_{true};  // read without the mutex by fused() / uses_fused()
  bool fits_inference_ = false, fits_training_ = false, has_dropout_ = false;
  FusedMlp fused_net_;
  std::vector<float*> fused_z_, fused_a_;
  std::vector<const float*> fused_z_in_;
  mutable std::mutex mutex_;
};

}  // namespace fastmlp::cuda
