// The CUDA training engine. Shapes, layouts and guarantees: engine/network_cuda.h and
// engine/network.h, whose CPU passes this file follows step for step (same layer loop, same
// dropout offsets, same order of checks), with cuda/kernels.h in place of cpu/*.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common/errors.h"
#include "common/optim_math.h"
#include "cuda/check.h"
#include "cuda/kernels.h"
#include "engine/network_cuda.h"

namespace fastmlp::cuda {

namespace {

// The stream of every engine call (see network_cuda.h: the legacy default stream).
constexpr cudaStream_t kStream = 0;
constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(b, 1), 4096));
}

// flag[0] = 1 when some |v[i]| is at or above the float whose bits are limit_bits, NaN included
// (kInfBits: NaN or +-inf, as the CPU's all_below tests). Every writer stores the same value, so
// the result does not depend on order.
__global__ void nonfinite_kernel(int* flag, const float* v, int64_t n, uint32_t limit_bits) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    if ((__float_as_uint(v[i]) & 0x7fffffffu) >= limit_bits) flag[0] = 1;
  }
}

constexpr uint32_t kInfBits = 0x7f800000u;

// flag[0] = 1 when some g' an update would form from grads and params leaves
// kUpdateGradientLimit (gradient_updatable, common/optim_math.h, as the CPU engine tests it).
__global__ void unupdatable_kernel(int* flag, const float* grads, const float* params, int64_t n,
                                   float weight_decay, float l1) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    if (!gradient_updatable(grads[i], params[i], weight_decay, l1)) flag[0] = 1;
  }
}

// count[0] += predictions of `logits` that match the targets, as fastmlp::Network::count_correct:
// labels: the first maximum of each row equals the label; bce: (z > 0) == (target > 0.5) per
// element. Integer atomics: the sum is exact whatever the order.
__global__ void count_labels_kernel(unsigned long long* count, const float* logits,
                                    const int64_t* labels, int64_t n, int64_t c) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float* row = logits + i * c;
    int64_t best = 0;
    for (int64_t j = 1; j < c; ++j) {
      if (row[j] > row[best]) best = j;
    }
    if (best == labels[i]) atomicAdd(count, 1ull);
  }
}

__global__ void count_bce_kernel(unsigned long long* count, const float* logits,
                                 const float* targets, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    if ((logits[i] > 0.0f) == (targets[i] > 0.5f)) atomicAdd(count, 1ull);
  }
}

bool host_all_finite(const float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, v + i, sizeof(bits));
    if ((bits & 0x7f800000u) == 0x7f800000u) return false;
  }
  return true;
}

// Makes `device` current for its lifetime and restores the caller's current device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cuda: cudaGetDevice");
    if (previous_ != device) check_cuda(cudaSetDevice(device), "cuda: cudaSetDevice");
  }
  ~DeviceGuard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
    cudaGetLastError();  // a destructor cannot report; the next checked call will
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

void copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, const char* what) {
  if (bytes == 0) return;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, kind, kStream), what);
}

}  // namespace

// ---------------------------------------------------------------- OptimizerState

void OptimizerState::prepare(int64_t n) {
  check_step_room(step_);
  int device = 0;
  check_cuda(cudaGetDevice(&device), "optimizer: cudaGetDevice");
  if (size_ == n && device_ == device) return;
  FASTMLP_CHECK(size_ < 0, "optimizer: its state was built for a model with ", size_,
                " parameters on cuda:", device_, ", this one has ", n, " on cuda:", device);
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  for (int i = 0; i < 3; ++i) {
    if (!config_.uses_buffer(i)) continue;
    buffers_[i] =
        std::make_unique<DeviceBuffer>(bytes, std::string("optimizer ") + config_.buffer_name(i));
    check_cuda(cudaMemsetAsync(buffers_[i]->data(), 0, bytes, kStream), "optimizer: zeroing state");
  }
  size_ = n;
  device_ = device;
}

void OptimizerState::apply(float* params, const float* grads, int64_t n, cudaStream_t stream) {
  auto state = [&](int i) {
    return buffers_[i] ? static_cast<float*>(buffers_[i]->data()) : nullptr;
  };
  const int64_t step = step_ + 1;
  switch (config_.kind()) {
    case OptimizerKind::Sgd:
      sgd_step(params, state(0), grads, n, config_.sgd(), step, stream);
      break;
    case OptimizerKind::Adagrad:
      adagrad_step(params, state(0), grads, n, config_.adagrad(), step, stream);
      break;
    case OptimizerKind::Rmsprop:
      rmsprop_step(params, state(0), state(1), state(2), grads, n, config_.rmsprop(), step, stream);
      break;
    case OptimizerKind::Adam:
      adam_step(params, state(0), state(1), grads, n, config_.adam(), step, stream);
      break;
  }
  ++step_;
}

std::vector<float> OptimizerState::buffer_copy(int i) const {
  std::vector<float> host;
  if (!buffers_[i]) return host;
  // On the state's device, whose stream orders the copy after the last update queued there.
  DeviceGuard on_device(device_);
  host.resize(static_cast<size_t>(size_));
  copy(host.data(), buffers_[i]->data(), host.size() * sizeof(float), cudaMemcpyDeviceToHost,
       "optimizer: copying its state to the host");
  check_cuda(cudaStreamSynchronize(kStream), "optimizer: copying its state to the host");
  return host;
}

void OptimizerState::restore(int64_t step, int64_t n, const std::array<const float*, 3>& buffers) {
  check_restored_state(config_, step, n, buffers);
  // A state already built stays on its model's device; a new one goes to the current device,
  // where prepare() checks it against the model's.
  int device = device_;
  if (size_ < 0) check_cuda(cudaGetDevice(&device), "optimizer: cudaGetDevice");
  DeviceGuard on_device(device);
  std::unique_ptr<DeviceBuffer> fresh[3];  // uploaded first: an error leaves the state as it was
  const size_t bytes = n > 0 ? static_cast<size_t>(n) * sizeof(float) : 0;
  for (int i = 0; i < 3; ++i) {
    if (buffers[i] == nullptr) continue;
    fresh[i] =
        std::make_unique<DeviceBuffer>(bytes, std::string("optimizer ") + config_.buffer_name(i));
    copy(fresh[i]->data(), buffers[i], bytes, cudaMemcpyHostToDevice,
         "optimizer: restoring its state");
  }
  check_cuda(cudaStreamSynchronize(kStream), "optimizer: restoring its state");
  for (int i = 0; i < 3; ++i) buffers_[i] = std::move(fresh[i]);
  step_ = step;
  size_ = n;
  device_ = n >= 0 ? device : -1;
}

// ---------------------------------------------------------------- Network: set-up

void* Network::Scratch::ensure(size_t bytes, const char* what) {
  if (!buffer_ || buffer_->nbytes() < bytes) {
    buffer_.reset();  // free first: the old contents are scratch, and memory may be tight
    buffer_ = std::make_unique<DeviceBuffer>(bytes, what);
  }
  return buffer_->data();
}

Network::Network(std::vector<int64_t> sizes, std::vector<Activation> activations,
                 std::vector<float> alphas, std::vector<float> dropouts, uint64_t seed)
    : sizes_(std::move(sizes)), seed_(seed) {
  const NetworkLayout layout(sizes_, activations, alphas, dropouts);
  layers_ = layout.layers;
  num_params_ = layout.num_parameters;
  floats_per_row_ = layout.floats_per_row;
  scratch_row_[0] = layout.scratch_row[0];
  scratch_row_[1] = layout.scratch_row[1];
  check_cuda(cudaGetDevice(&device_), "cuda: cudaGetDevice");

  const size_t pbytes = static_cast<size_t>(num_params_) * sizeof(float);
  params_.ensure(pbytes, "parameters");
  grads_.ensure(pbytes, "gradients");
  flags_.ensure(2 * sizeof(unsigned long long), "engine flags");
  check_cuda(cudaMemsetAsync(params_.as<float>(), 0, pbytes, kStream), "parameters: zeroing");
  check_cuda(cudaMemsetAsync(grads_.as<float>(), 0, pbytes, kStream), "gradients: zeroing");
  for (const Layer& layer : layers_) {
    if (layer.slope_offset >= 0) {
      copy(params_.as<float>() + layer.slope_offset, &layer.alpha, sizeof(float),
           cudaMemcpyHostToDevice, "parameters: PReLU slope");
    }
  }
  check_cuda(cudaStreamSynchronize(kStream), "cuda: network set-up");

  // The fused path's view of the net. Inference takes every activation (a PReLU slope is read
  // from the parameters on the device); training needs z stored for every hidden layer, which
  // the fused backward overwrites with dZ in place (the weight gradients read a, not z).
  float* params = params_.as<float>();
  fused_net_.widths = sizes_;
  bool trainable = true;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    fused_net_.weights.push_back(params + layer.w_offset);
    fused_net_.biases.push_back(params + layer.b_offset);
    if (l + 1 == layers_.size()) break;
    fused_net_.activations.push_back(layer.activation);
    fused_net_.alphas.push_back(layer.alpha);
    fused_net_.prelu_slopes.push_back(layer.slope_offset >= 0 ? params + layer.slope_offset
                                                              : nullptr);
    trainable = trainable && layer.z_row >= 0 && layer.slope_offset < 0;
    has_dropout_ = has_dropout_ || layer.dropout > 0.0f;
  }
  fits_inference_ = fused_mlp_fits(sizes_, false);
  fits_training_ = trainable && fused_mlp_fits(sizes_, true);
}

void Network::set_fused(bool on) {
  std::lock_guard<std::mutex> lock(mutex_);
  fused_ = on;
}

bool Network::fused_pass(bool training, bool store_z) const {
  if (!fused_ || (training && has_dropout_)) return false;
  return store_z ? fits_training_ : fits_inference_;
}

void Network::ensure_capacity(int64_t rows) {
  if (rows <= capacity_rows_) return;
  check_workspace_rows(rows, floats_per_row_);
  // Scratch::ensure frees the old buffer before allocating: should the allocation fail, no
  // workspace is left, and a stale capacity would let the next smaller batch run its kernels on
  // a null workspace (an illegal address, which ends every later CUDA call of the process).
  capacity_rows_ = 0;
  workspace_.ensure(static_cast<size_t>(rows * floats_per_row_) * sizeof(float), "workspace");
  capacity_rows_ = rows;
}

void Network::set_rng_offset(uint64_t offset) {
  std::lock_guard<std::mutex> lock(mutex_);
  rng_offset_ = offset;
}

void Network::set_parameters(const float* values, int64_t count) {
  DeviceGuard on_device(device_);
  FASTMLP_CHECK(count == num_parameters(), "weights: expected ", num_parameters(),
                " parameters, got ", count);
  FASTMLP_CHECK(host_all_finite(values, count), "weights: contain NaN or infinite values");
  std::lock_guard<std::mutex> lock(mutex_);
  copy(params_.as<float>(), values, static_cast<size_t>(count) * sizeof(float),
       cudaMemcpyHostToDevice, "weights: copy to the device");
  check_cuda(cudaStreamSynchronize(kStream), "weights: copy to the device");
}

void Network::get_parameters(float* out) const {
  snapshot(out);
}

uint64_t Network::snapshot(float* out) const {
  DeviceGuard on_device(device_);
  std::lock_guard<std::mutex> lock(mutex_);
  copy(out, params_.as<float>(), static_cast<size_t>(num_params_) * sizeof(float),
       cudaMemcpyDeviceToHost, "weights: copy to the host");
  check_cuda(cudaStreamSynchronize(kStream), "weights: copy to the host");
  return rng_offset_;
}

void Network::get_gradients(float* out) const {
  DeviceGuard on_device(device_);
  std::lock_guard<std::mutex> lock(mutex_);
  copy_gradients_locked(out);
}

void Network::copy_gradients_locked(float* out) const {
  copy(out, grads_.as<float>(), static_cast<size_t>(num_params_) * sizeof(float),
       cudaMemcpyDeviceToHost, "gradients: copy to the host");
  check_cuda(cudaStreamSynchronize(kStream), "gradients: copy to the host");
}

uint64_t Network::rng_offset() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rng_offset_;
}

std::pair<int64_t, int64_t> Network::take_train_counts() {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::pair<int64_t, int64_t> counts(train_correct_, train_total_);
  train_correct_ = 0;
  train_total_ = 0;
  return counts;
}

// ---------------------------------------------------------------- Network: passes

const float* Network::layer_input(int64_t l, const float* x, bool training) const {
  if (l == 0) return x;
  const Layer& prev = layers_[l - 1];
  return training && prev.h_row >= 0 ? ws(prev.h_row) : ws(prev.a_row);
}

// The forward pass of fastmlp::Network::forward_slice over all n rows. A PReLU layer's slope is
// a device value, so its GEMM writes z and prelu_forward makes a (the CPU fuses both into the
// GEMM epilogue with the slope read on the host).
uint64_t Network::forward_rows(float* out, const float* x, int64_t n, bool training, bool store_z,
                               uint64_t rng_offset) {
  const int64_t L = num_layers();
  if (fused_pass(training, store_z)) {  // no dropout in this pass: rng_offset does not move
    fused_forward(out != nullptr ? out : ws(layers_.back().a_row), x, n, store_z);
    return rng_offset;
  }
  float* params = params_.as<float>();
  for (int64_t l = 0; l < L; ++l) {
    const Layer& layer = layers_[l];
    float* a = (l + 1 == L && out != nullptr) ? out : ws(layer.a_row);
    GemmEpilogue epilogue;
    epilogue.bias = params + layer.b_offset;
    if (layer.slope_offset >= 0) {
      gemm(false, false, n, layer.out, layer.in, 1.0f, layer_input(l, x, training), layer.in,
           params + layer.w_offset, layer.out, 0.0f, ws(layer.z_row), layer.out, epilogue, kStream);
      prelu_forward(a, ws(layer.z_row), params + layer.slope_offset, n, layer.out, 1, kStream);
    } else {
      epilogue.activation = layer.activation;
      epilogue.activation_alpha = layer.alpha;
      epilogue.preactivation = store_z && layer.z_row >= 0 ? ws(layer.z_row) : nullptr;
      gemm(false, false, n, layer.out, layer.in, 1.0f, layer_input(l, x, training), layer.in,
           params + layer.w_offset, layer.out, 0.0f, a, layer.out, epilogue, kStream);
    }
    if (training && layer.h_row >= 0) {
      dropout_forward(ws(layer.h_row), a, n * layer.out, layer.dropout, seed_, rng_offset, kStream);
      rng_offset += static_cast<uint64_t>(n * layer.out);
    }
  }
  return rng_offset;
}

// The fused forward over all n rows: logits, and z and a of every hidden layer when store_z.
void Network::fused_forward(float* logits, const float* x, int64_t n, bool store_z) {
  fused_z_.clear();
  fused_a_.clear();
  if (store_z) {
    for (size_t h = 0; h + 1 < layers_.size(); ++h) {
      fused_z_.push_back(ws(layers_[h].z_row));
      fused_a_.push_back(ws(layers_[h].a_row));
    }
  }
  fused_mlp_forward(logits, fused_z_, fused_a_, x, n, fused_net_, kStream);
}

// The backward of a fused training pass: dZ of every hidden layer in one launch, written over
// its z, then each layer's weight and bias gradients as in backward().
void Network::fused_backward(const float* x, int64_t n) {
  fused_z_.clear();
  fused_z_in_.clear();
  for (size_t h = 0; h + 1 < layers_.size(); ++h) {
    fused_z_.push_back(ws(layers_[h].z_row));
    fused_z_in_.push_back(ws(layers_[h].z_row));
  }
  const float* dlogits = ws(scratch_row_[0]);
  fused_mlp_backward(fused_z_, dlogits, fused_z_in_, n, fused_net_, kStream);
  float* grads = grads_.as<float>();
  for (int64_t l = num_layers() - 1; l >= 0; --l) {
    const Layer& layer = layers_[l];
    const float* dz = l + 1 == num_layers() ? dlogits : ws(layer.z_row);
    gemm(true, false, layer.in, layer.out, n, 1.0f, layer_input(l, x, false), layer.in, dz,
         layer.out, 0.0f, grads + layer.w_offset, layer.out, GemmEpilogue{}, kStream);
    column_sum(grads + layer.b_offset, dz, n, layer.out, kStream);
  }
}

// fastmlp::Network::backward, kernel for kernel.
void Network::backward(const float* x, int64_t n, bool training, uint64_t end_offset) {
  if (fused_pass(training, true)) {
    fused_backward(x, n);
    return;
  }
  float* params = params_.as<float>();
  float* grads = grads_.as<float>();
  float* dz = ws(scratch_row_[0]);
  int cur = 0;
  uint64_t offset = end_offset;
  for (int64_t l = num_layers() - 1; l >= 0; --l) {
    const Layer& layer = layers_[l];
    gemm(true, false, layer.in, layer.out, n, 1.0f, layer_input(l, x, training), layer.in, dz,
         layer.out, 0.0f, grads + layer.w_offset, layer.out, GemmEpilogue{}, kStream);
    column_sum(grads + layer.b_offset, dz, n, layer.out, kStream);
    if (l == 0) break;

    const Layer& prev = layers_[l - 1];
    float* dh = ws(scratch_row_[1 - cur]);
    gemm(false, true, n, layer.in, layer.out, 1.0f, dz, layer.out, params + layer.w_offset,
         layer.out, 0.0f, dh, layer.in, GemmEpilogue{}, kStream);
    const int64_t count = n * prev.out;
    if (training && prev.h_row >= 0) {
      offset -= static_cast<uint64_t>(count);
      dropout_backward(dh, dh, count, prev.dropout, seed_, offset, kStream);
    }
    if (prev.slope_offset >= 0) {
      prelu_backward(dh, grads + prev.slope_offset, ws(prev.z_row), params + prev.slope_offset, dh,
                     n, prev.out, 1, kStream);
    } else if (prev.activation != Activation::Identity) {
      activation_backward(dh, ws(prev.z_row), ws(prev.a_row), dh, count, prev.activation,
                          prev.alpha, kStream);
    }
    dz = dh;
    cur = 1 - cur;
  }
}

double Network::compute_loss(float* dlogits, const float* logits, const Targets& y, int64_t n,
                             LossKind loss, float label_smoothing) {
  const int64_t c = out_features();
  switch (loss) {
    case LossKind::CrossEntropy:
      return softmax_cross_entropy(dlogits, logits, y.labels, n, c, label_smoothing, "y", kStream);
    case LossKind::Mse:
      return mse_loss(dlogits, logits, y.values, n, c, kStream);
    case LossKind::Hinge:
      return multiclass_hinge_loss(dlogits, logits, y.labels, n, c, 1.0f, "y", kStream);
    case LossKind::Bce:
      return bce_with_logits(dlogits, logits, y.values, n, c, kStream);
  }
  throw ValueError("loss: unknown loss kind");
}

void Network::count_correct(const float* logits, const Targets& y, int64_t n, LossKind loss,
                            int64_t* correct, int64_t* total) {
  const int64_t c = out_features();
  if (!loss_uses_labels(loss) && loss != LossKind::Bce) return;  // mse: no accuracy
  auto* count = flags_.as<unsigned long long>() + 1;
  check_cuda(cudaMemsetAsync(count, 0, sizeof(*count), kStream), "accuracy: zeroing");
  int64_t counted = 0;
  if (loss_uses_labels(loss)) {
    count_labels_kernel<<<blocks_for(n), kThreads, 0, kStream>>>(count, logits, y.labels, n, c);
    counted = n;
  } else {
    count_bce_kernel<<<blocks_for(n * c), kThreads, 0, kStream>>>(count, logits, y.values, n * c);
    counted = n * c;
  }
  check_launch("accuracy count");
  unsigned long long hits = 0;
  copy(&hits, count, sizeof(hits), cudaMemcpyDeviceToHost, "accuracy: copy to the host");
  check_cuda(cudaStreamSynchronize(kStream), "accuracy count");
  *correct += static_cast<int64_t>(hits);
  *total += counted;
}

Targets Network::stage(const float** x, const Targets& y, int64_t n) {
  const size_t xbytes = static_cast<size_t>(n * in_features()) * sizeof(float);
  float* dx = static_cast<float*>(staged_x_.ensure(xbytes, "x (staging copy)"));
  copy(dx, *x, xbytes, cudaMemcpyHostToDevice, "x: copy to the device");
  *x = dx;
  Targets out;
  if (y.labels != nullptr) {
    const size_t bytes = static_cast<size_t>(n) * sizeof(int64_t);
    auto* d = static_cast<int64_t*>(staged_labels_.ensure(bytes, "y (staging copy)"));
    copy(d, y.labels, bytes, cudaMemcpyHostToDevice, "y: copy to the device");
    out.labels = d;
  }
  if (y.values != nullptr) {
    const size_t bytes = static_cast<size_t>(n * out_features()) * sizeof(float);
    auto* d = static_cast<float*>(staged_values_.ensure(bytes, "y (staging copy)"));
    copy(d, y.values, bytes, cudaMemcpyHostToDevice, "y: copy to the device");
    out.values = d;
  }
  return out;
}

void Network::throw_non_finite(const float* x, const Targets& y, int64_t n, bool on_host,
                               const char* what) {
  // x and y as the caller gave them: host arrays are checked on the host; device ones with the
  // finiteness kernel.
  auto finite = [&](const float* v, int64_t count) {
    if (on_host) return host_all_finite(v, count);
    int* flag = flags_.as<int>();
    check_cuda(cudaMemsetAsync(flag, 0, sizeof(int), kStream), "finiteness check");
    nonfinite_kernel<<<blocks_for(count), kThreads, 0, kStream>>>(flag, v, count, kInfBits);
    check_launch("finiteness check");
    int bad = 0;
    copy(&bad, flag, sizeof(int), cudaMemcpyDeviceToHost, "finiteness check");
    check_cuda(cudaStreamSynchronize(kStream), "finiteness check");
    return bad == 0;
  };
  FASTMLP_CHECK(finite(x, n * in_features()), "x: contains NaN or infinite values");
  if (y.values != nullptr) {
    FASTMLP_CHECK(finite(y.values, n * out_features()), "y: contains NaN or infinite values");
  }
  throw NonFiniteError(what);
}

// Forward, loss and backward on device x / y; the host_* arguments are what the caller passed
// (host or device memory, per input_on_host), for the diagnosis of a non-finite loss.
double Network::gradients_locked(const float* x, const Targets& y, int64_t n, LossKind loss,
                                 float label_smoothing, bool training, bool input_on_host,
                                 const float* host_x, const Targets& host_y, uint64_t* next_offset,
                                 const OptimizerState* optimizer) {
  const uint64_t end = forward_rows(nullptr, x, n, training, true, rng_offset_);
  const double value =
      compute_loss(ws(scratch_row_[0]), ws(layers_.back().a_row), y, n, loss, label_smoothing);
  if (!std::isfinite(value)) {
    const std::string what = detail::concat(
        "loss: the loss is ", value,
        " (not finite; is the learning rate too large?); the parameters and the optimizer state "
        "were left unchanged");
    throw_non_finite(host_x, host_y, n, input_on_host, what.c_str());
  }
  backward(x, n, training, end);
  int* flag = flags_.as<int>();
  check_cuda(cudaMemsetAsync(flag, 0, sizeof(int), kStream), "gradients: finiteness check");
  if (optimizer != nullptr) {
    unupdatable_kernel<<<blocks_for(num_params_), kThreads, 0, kStream>>>(
        flag, grads_.as<float>(), params_.as<float>(), num_params_,
        optimizer->config().gradient_weight_decay(), optimizer->config().gradient_l1());
  } else {
    nonfinite_kernel<<<blocks_for(num_params_), kThreads, 0, kStream>>>(flag, grads_.as<float>(),
                                                                        num_params_, kInfBits);
  }
  check_launch("gradients: finiteness check");
  int bad = 0;
  copy(&bad, flag, sizeof(int), cudaMemcpyDeviceToHost, "gradients: finiteness check");
  check_cuda(cudaStreamSynchronize(kStream), "backward pass");
  if (bad != 0) {
    throw_non_finite(host_x, host_y, n, input_on_host,
                     optimizer != nullptr
                         ? "gradients: NaN, infinite, or 2^64 (1.8e19) or more in magnitude with "
                           "weight decay and L1, where the optimizers' squared gradients overflow "
                           "float32 (is the learning rate too large?); the parameters and the "
                           "optimizer state were left unchanged"
                         : "gradients: NaN or infinite values (is the learning rate too large?); "
                           "the parameters and the optimizer state were left unchanged");
  }
  *next_offset = end;
  return value;
}

double Network::step_locked(const float* x, const Targets& y, int64_t n, LossKind loss,
                            float label_smoothing, bool training, OptimizerState& optimizer,
                            bool input_on_host, const float* host_x, const Targets& host_y) {
  const auto optimizer_lock = optimizer.lock();  // always after the network's: no deadlock
  optimizer.prepare(num_parameters());           // may allocate or throw: before anything changes
  uint64_t end = rng_offset_;
  const double value = gradients_locked(x, y, n, loss, label_smoothing, training, input_on_host,
                                        host_x, host_y, &end, &optimizer);
  int64_t correct = 0, total = 0;
  count_correct(ws(layers_.back().a_row), y, n, loss, &correct, &total);
  optimizer.apply(params_.as<float>(), grads_.as<float>(), num_parameters(), kStream);
  rng_offset_ = end;
  train_correct_ += correct;
  train_total_ += total;
  return value;
}

// ---------------------------------------------------------------- Network: public calls

void Network::forward(float* out, const float* x, int64_t n, bool training) {
  DeviceGuard on_device(device_);
  FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
  FASTMLP_CHECK(host_all_finite(x, n * in_features()), "x: contains NaN or infinite values");
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t chunk = training ? n : std::min(n, std::max(capacity_rows_, int64_t{1024}));
  ensure_capacity(chunk);
  const int64_t c = out_features();
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    const float* dx = x + r0 * in_features();
    stage(&dx, Targets{}, rows);
    const uint64_t end =
        forward_rows(nullptr, dx, rows, training, false, training ? rng_offset_ : 0);
    copy(out + r0 * c, ws(layers_.back().a_row), static_cast<size_t>(rows * c) * sizeof(float),
         cudaMemcpyDeviceToHost, "forward: copy to the host");
    check_cuda(cudaStreamSynchronize(kStream), "forward pass");
    if (training) rng_offset_ = end;
  }
}

double Network::loss_and_gradients(const float* x, const Targets& y, int64_t n, LossKind loss,
                                   float label_smoothing, bool training, float* gradients_out) {
  DeviceGuard on_device(device_);
  FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
  std::lock_guard<std::mutex> lock(mutex_);
  ensure_capacity(n);
  const float* dx = x;
  const Targets dy = stage(&dx, y, n);
  uint64_t end = rng_offset_;
  const double value =
      gradients_locked(dx, dy, n, loss, label_smoothing, training, true, x, y, &end, nullptr);
  rng_offset_ = end;
  if (gradients_out != nullptr) copy_gradients_locked(gradients_out);
  return value;
}

double Network::train_step(const float* x, const Targets& y, int64_t n, LossKind loss,
                           float label_smoothing, bool training, OptimizerState& optimizer) {
  DeviceGuard on_device(device_);
  FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
  std::lock_guard<std::mutex> lock(mutex_);
  ensure_capacity(n);
  const float* dx = x;
  const Targets dy = stage(&dx, y, n);
  return step_locked(dx, dy, n, loss, label_smoothing, training, optimizer, true, x, y);
}

double Network::train_step_device(const float* x, const Targets& y, int64_t n, LossKind loss,
                                  float label_smoothing, bool training, OptimizerState& optimizer,
                                  bool targets_checked) {
  DeviceGuard on_device(device_);
  FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
  if (y.labels != nullptr && !targets_checked) {
    FASTMLP_CHECK(!labels_out_of_range(y.labels, n, out_features(), kStream),
                  "y: a label is out of range [0, ", out_features(), ")");
  }
  if (loss == LossKind::Bce && !targets_checked) {
    FASTMLP_CHECK(!targets_out_of_unit_interval(y.values, n * out_features(), kStream),
                  "y: bce targets must lie in [0, 1]");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  ensure_capacity(n);
  return step_locked(x, y, n, loss, label_smoothing, training, optimizer, false, x, y);
}

EvalResult Network::evaluate(const float* x, const Targets& y, int64_t n, LossKind loss,
                             int64_t batch_rows) {
  DeviceGuard on_device(device_);
  FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
  FASTMLP_CHECK(batch_rows >= 1, "batch_size: expected >= 1, got ", batch_rows);
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t c = out_features();
  const int64_t chunk = std::min(n, batch_rows);
  ensure_capacity(chunk);
  EvalResult result;
  double loss_sum = 0.0;
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    Targets part;
    if (y.labels) part.labels = y.labels + r0;
    if (y.values) part.values = y.values + r0 * c;
    const float* px = x + r0 * in_features();
    FASTMLP_CHECK(host_all_finite(px, rows * in_features()), "x: contains NaN or infinite values");
    if (part.values != nullptr) {
      FASTMLP_CHECK(host_all_finite(part.values, rows * c), "y: contains NaN or infinite values");
    }
    const float* dx = px;
    const Targets dpart = stage(&dx, part, rows);
    forward_rows(nullptr, dx, rows, false, false, 0);
    const float* logits = ws(layers_.back().a_row);
    loss_sum += compute_loss(nullptr, logits, dpart, rows, loss, 0.0f) * static_cast<double>(rows);
    count_correct(logits, dpart, rows, loss, &result.correct, &result.total);
  }
  result.loss = loss_sum / static_cast<double>(n);
  return result;
}

}  // namespace fastmlp::cuda
