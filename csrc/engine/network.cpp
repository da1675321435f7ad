// The CPU training engine. Shapes and buffer layouts: engine/network.h.
#include "engine/network.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <utility>

#include "common/errors.h"
#include "common/optim_math.h"
#include "common/threading.h"
#include "cpu/activations.h"
#include "cpu/dropout.h"
#include "cpu/gemm.h"
#include "cpu/gemm_config.h"
#include "cpu/losses.h"
#include "cpu/optim.h"

namespace fastmlp {

namespace {

// True when every |v[i]| is below the float whose bits are limit_bits. Compares the bits with an
// integer reduction, which vectorises (a float reduction would not without -ffast-math) and is
// exact: for non-negative floats the order of the bit patterns (bits & 0x7fffffff) is the order
// of the values, inf is 0x7f800000 and every NaN lies above it, so limit_bits = 0x7f800000
// (kInfBits) tests "finite". Blocks of 4096 floats (16 KiB, in L1) with an early exit keep a
// failing check short.
bool all_below(const float* v, int64_t n, uint32_t limit_bits) {
  constexpr int64_t kBlock = 4096;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t end = std::min(n, b + kBlock);
    uint32_t bad = 0;
    for (int64_t i = b; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, v + i, sizeof(bits));
      bad |= static_cast<uint32_t>((bits & 0x7fffffffu) >= limit_bits);
    }
    if (bad != 0) return false;
  }
  return true;
}

constexpr uint32_t kInfBits = 0x7f800000u;

bool all_finite(const float* v, int64_t n) {
  return all_below(v, n, kInfBits);
}

// Whether a step may go on with the n gradients at grads (params: the parameters at the same
// offsets): all finite, and when an update follows (optimizer), every g' the rule will form within
// kUpdateGradientLimit (common/optim_math.h). Without weight decay and L1 that bound is |g| < 2^64,
// tested on the bits as all_finite is.
bool gradients_usable(const float* grads, const float* params, int64_t n,
                      const OptimizerState* optimizer) {
  if (optimizer == nullptr) return all_finite(grads, n);
  const float weight_decay = optimizer->config().gradient_weight_decay();
  const float l1 = optimizer->config().gradient_l1();
  constexpr uint32_t kTwoTo64Bits = 0x5f800000u;
  if (weight_decay == 0.0f && l1 == 0.0f) return all_below(grads, n, kTwoTo64Bits);
  constexpr int64_t kBlock = 4096;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t end = std::min(n, b + kBlock);
    uint32_t bad = 0;
    for (int64_t i = b; i < end; ++i) {
      bad |= static_cast<uint32_t>(!gradient_updatable(grads[i], params[i], weight_decay, l1));
    }
    if (bad != 0) return false;
  }
  return true;
}

constexpr const char* kBadGradients =
    "gradients: NaN or infinite values (is the learning rate too large?); the parameters and the "
    "optimizer state were left unchanged";
constexpr const char* kBadUpdateGradients =
    "gradients: NaN, infinite, or 2^64 (1.8e19) or more in magnitude with weight decay and L1, "
    "where the optimizers' squared gradients overflow float32 (is the learning rate too large?); "
    "the parameters and the optimizer state were left unchanged";

}  // namespace

Network::Network(std::vector<int64_t> sizes, std::vector<Activation> activations,
                 std::vector<float> alphas, std::vector<float> dropouts, uint64_t seed)
    : sizes_(std::move(sizes)), seed_(seed) {
  const NetworkLayout layout(sizes_, activations, alphas, dropouts);
  layers_ = layout.layers;
  macs_per_row_ = layout.macs_per_row;
  has_prelu_ = layout.has_prelu;
  floats_per_row_ = layout.floats_per_row;
  scratch_row_[0] = layout.scratch_row[0];
  scratch_row_[1] = layout.scratch_row[1];
  params_.assign(static_cast<size_t>(layout.num_parameters), 0.0f);
  grads_.assign(static_cast<size_t>(layout.num_parameters), 0.0f);
  for (const Layer& layer : layers_) {
    if (layer.slope_offset >= 0) params_[layer.slope_offset] = layer.alpha;
  }
  int64_t packed_floats = 0;
  for (const Layer& layer : layers_) {
    packed_offsets_.push_back(packed_floats);  // whole NR-column panels: 64-byte aligned
    packed_floats += packed_b_floats(layer.in, layer.out);
  }
  packed_weights_.get(packed_floats);
}

void Network::ensure_capacity(int64_t rows) {
  if (rows <= capacity_rows_) return;
  check_workspace_rows(rows, floats_per_row_);
  // A fresh buffer rather than resize(): the old contents are scratch and need no copy.
  std::vector<float> fresh;
  try {
    fresh.resize(static_cast<size_t>(rows * floats_per_row_));
  } catch (const std::bad_alloc&) {
    // pybind11 would raise a bare "MemoryError: std::bad_alloc", which names nothing.
    const int64_t mib = rows * floats_per_row_ / (int64_t{1} << 18);  // 4-byte floats
    throw OutOfMemory(detail::concat(
        "x: a batch of ", rows, " rows needs ", mib, " MiB of workspace for this network (",
        floats_per_row_, " floats per row), more than could be allocated; pass fewer rows"));
  }
  workspace_.swap(fresh);
  capacity_rows_ = rows;
}

uint64_t Network::rng_offset() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rng_offset_;
}

void Network::set_rng_offset(uint64_t offset) {
  std::lock_guard<std::mutex> lock(mutex_);
  rng_offset_ = offset;
}

void Network::set_parameters(const float* values, int64_t count) {
  FASTMLP_CHECK(count == num_parameters(), "weights: expected ", num_parameters(),
                " parameters, got ", count);
  FASTMLP_CHECK(all_finite(values, count), "weights: contain NaN or infinite values");
  std::lock_guard<std::mutex> lock(mutex_);
  std::copy(values, values + count, params_.begin());
  packed_stale_ = true;
}

void Network::get_parameters(float* out) const {
  snapshot(out);
}

uint64_t Network::snapshot(float* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::copy(params_.begin(), params_.end(), out);
  return rng_offset_;
}

void Network::get_gradients(float* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::copy(grads_.begin(), grads_.end(), out);
}

void Network::pack_weight_rows(int64_t l, int64_t r0, int64_t r1) {
  const Layer& layer = layers_[l];
  pack_b_rows(packed_weights_.data() + packed_offsets_[l], params_.data() + layer.w_offset,
              layer.out, layer.in, layer.out, r0, r1);
}

void Network::ensure_weights_packed() {
  if (!packed_stale_) return;
  for (int64_t l = 0; l < num_layers(); ++l) pack_weight_rows(l, 0, layers_[l].in);
  packed_stale_ = false;
}

const float* Network::layer_input(int64_t l, const float* x, bool training) {
  if (l == 0) return x;
  const Layer& prev = layers_[l - 1];
  return training && prev.h_row >= 0 ? ws(prev.h_row) : ws(prev.a_row);
}

// Rows [r0, r1) of the forward pass over a batch of n rows (x and out point at row 0 of the
// batch; the workspace rows are the batch rows): z_l = h_{l-1} @ W_l + b_l and a_l = f_l(z_l) in
// one GEMM (bias and activation in the epilogue, z_l stored only when store_z and the activation
// is not the identity), then h_l = dropout(a_l) in training mode, where element (i, j) of layer l
// draws at offset_l + i * D_l + j (offset_l as in network.h), so any split of the rows draws the
// same numbers. n <= capacity_rows_. The last layer writes into `out` when it is given. Returns
// rng_offset advanced by the draws of the whole batch.
uint64_t Network::forward_slice(float* out, const float* x, int64_t n, int64_t r0, int64_t r1,
                                bool training, bool store_z, uint64_t rng_offset) {
  const int64_t L = num_layers();
  const int64_t rows = r1 - r0;
  for (int64_t l = 0; l < L; ++l) {
    const Layer& layer = layers_[l];
    const int64_t row0 = r0 * layer.out;
    float* a = ((l + 1 == L && out != nullptr) ? out : ws(layer.a_row)) + row0;
    GemmEpilogue epilogue;
    epilogue.bias = params_.data() + layer.b_offset;
    epilogue.activation = layer.activation;
    epilogue.activation_alpha = layer_alpha(layer);
    epilogue.preactivation = store_z && layer.z_row >= 0 ? ws(layer.z_row) + row0 : nullptr;
    if (rows > 0) {
      gemm_packed_b(false, rows, layer.out, layer.in, 1.0f,
                    layer_input(l, x, training) + r0 * layer.in, layer.in, packed_weight(l), 0.0f,
                    a, layer.out, epilogue);
    }
    if (training && layer.h_row >= 0) {
      if (rows > 0) {
        dropout_forward(ws(layer.h_row) + row0, a, rows * layer.out, layer.dropout, seed_,
                        rng_offset + static_cast<uint64_t>(row0));
      }
      rng_offset += static_cast<uint64_t>(n * layer.out);
    }
  }
  return rng_offset;
}

bool Network::batch_parallel(int64_t n, int nt) const {
  return openmp_enabled() && nt >= 2 && !has_prelu_ && n >= nt * kMinRowsPerThread;
}

namespace {
// [*begin, *end) of part t of `parts` over `count` items, cut at multiples of `align` (the GEMM's
// MR, so that every part but the last fills whole row panels); trailing parts may be empty.
void split_aligned(int64_t count, int64_t align, int t, int parts, int64_t* begin, int64_t* end) {
  const int64_t per = ((count + parts - 1) / parts + align - 1) / align * align;
  *begin = std::min(count, t * per);
  *end = std::min(count, *begin + per);
}

// The first exception thrown by any thread of a batch-parallel region, rethrown after it.
class FirstError {
 public:
  void capture() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
    failed_.store(true, std::memory_order_relaxed);
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};
}  // namespace

// Batch-parallel forward: one OpenMP region in which each thread runs the whole forward pass on
// its own rows with single-threaded kernels, instead of one region (and ~3 barriers per k-block)
// per GEMM. Every GEMM output element is computed with the same arithmetic whatever rows it is
// called on, so the result is bit-identical to the serial pass.
uint64_t Network::forward_parallel(float* out, const float* x, int64_t n, bool training,
                                   bool store_z, uint64_t rng_offset, int nt) {
  FirstError error;
#pragma omp parallel num_threads(nt)
  {
    const auto [t, team] = team_slot();
    ScopedThreadLimit one(1);
    int64_t r0, r1;
    split_aligned(n, gemm_blocking::MR, t, team, &r0, &r1);
    try {
      forward_slice(out, x, n, r0, r1, training, store_z, rng_offset);
    } catch (...) {
      error.capture();
    }
  }
  error.rethrow();
  uint64_t end = rng_offset;
  for (const Layer& layer : layers_) {
    if (training && layer.h_row >= 0) end += static_cast<uint64_t>(n * layer.out);
  }
  return end;
}

uint64_t Network::forward_rows(float* out, const float* x, int64_t n, bool training, bool store_z,
                               uint64_t rng_offset) {
  ensure_weights_packed();
  const int nt = num_threads();
  if (batch_parallel(n, nt)) {
    return forward_parallel(out, x, n, training, store_z, rng_offset, nt);
  }
  return forward_slice(out, x, n, 0, n, training, store_z, rng_offset);
}

std::pair<int64_t, int64_t> Network::take_train_counts() {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::pair<int64_t, int64_t> counts(train_correct_, train_total_);
  train_correct_ = 0;
  train_total_ = 0;
  return counts;
}

void Network::check_inputs_finite(const float* x, const Targets& y, int64_t n) const {
  FASTMLP_CHECK(all_finite(x, n * in_features()), "x: contains NaN or infinite values");
  if (y.values != nullptr) {
    FASTMLP_CHECK(all_finite(y.values, n * out_features()), "y: contains NaN or infinite values");
  }
}

void Network::count_correct(const float* logits, const Targets& y, int64_t n, LossKind loss,
                            int64_t* correct, int64_t* total) const {
  const int64_t c = out_features();
  if (loss_uses_labels(loss)) {
    int64_t hits = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float* row = logits + i * c;
      // First maximum, as np.argmax.
      hits += (std::max_element(row, row + c) - row) == y.labels[i];
    }
    *correct += hits;
    *total += n;
  } else if (loss == LossKind::Bce) {
    // Predicted 1 iff sigmoid(z) > 0.5 iff z > 0; the target counts as 1 iff it is > 0.5.
    int64_t hits = 0;
    for (int64_t i = 0; i < n * c; ++i) hits += (logits[i] > 0.0f) == (y.values[i] > 0.5f);
    *correct += hits;
    *total += n * c;
  }
}

void Network::throw_non_finite(const float* x, const Targets& y, int64_t n,
                               const char* what) const {
  check_inputs_finite(x, y, n);  // a bad input is the caller's error: ValueError naming it
  throw NonFiniteError(what);
}

double Network::compute_loss(float* dlogits, const float* logits, const Targets& y, int64_t n,
                             LossKind loss, float label_smoothing) const {
  const int64_t c = out_features();
  switch (loss) {
    case LossKind::CrossEntropy:
      return softmax_cross_entropy(dlogits, logits, y.labels, n, c, label_smoothing, "y");
    case LossKind::Mse:
      return mse_loss(dlogits, logits, y.values, n, c);
    case LossKind::Hinge:
      return multiclass_hinge_loss(dlogits, logits, y.labels, n, c, 1.0f, "y");
    case LossKind::Bce:
      return bce_with_logits(dlogits, logits, y.values, n, c);
  }
  throw ValueError("loss: unknown loss kind");
}

// Given dZ_L in scratch 0: for l = L..1, dW_l = h_{l-1}^T @ dZ_l (TN), db_l = column_sum(dZ_l),
// and for l > 1 dH_{l-1} = dZ_l @ W_l^T (NT), undone through dropout (same mask, regenerated from
// its offset) and the activation (dZ_{l-1} = dH_{l-1} * f'(z_{l-1}), in place). dZ ping-pongs
// between the two scratch buffers. Overwrites every gradient (nothing accumulates).
void Network::backward(const float* x, int64_t n, bool training, uint64_t end_offset) {
  float* dz = ws(scratch_row_[0]);
  int cur = 0;
  uint64_t offset = end_offset;  // walks back over the dropout draws of the forward pass
  for (int64_t l = num_layers() - 1; l >= 0; --l) {
    const Layer& layer = layers_[l];
    gemm(true, false, layer.in, layer.out, n, 1.0f, layer_input(l, x, training), layer.in, dz,
         layer.out, 0.0f, grads_.data() + layer.w_offset, layer.out);
    column_sum(grads_.data() + layer.b_offset, dz, n, layer.out);
    if (l == 0) break;

    const Layer& prev = layers_[l - 1];
    float* dh = ws(scratch_row_[1 - cur]);
    gemm(false, true, n, layer.in, layer.out, 1.0f, dz, layer.out, params_.data() + layer.w_offset,
         layer.out, 0.0f, dh, layer.in);
    const int64_t count = n * prev.out;
    if (training && prev.h_row >= 0) {
      offset -= static_cast<uint64_t>(count);
      dropout_backward(dh, dh, count, prev.dropout, seed_, offset);
    }
    if (prev.slope_offset >= 0) {
      prelu_backward(dh, grads_.data() + prev.slope_offset, ws(prev.z_row),
                     params_.data() + prev.slope_offset, dh, n, prev.out, 1);
    } else if (prev.activation != Activation::Identity) {
      activation_backward(dh, ws(prev.z_row), ws(prev.a_row), dh, count, prev.activation,
                          prev.alpha);
    }
    dz = dh;
    cur = 1 - cur;
  }
}

// The backward pass of backward() in one OpenMP region: for each layer every thread computes
// its share of the rows of dW_l (TN over its slice of D_{l-1}), of the columns of db_l, and of
// dH_{l-1} (NT over its batch rows, then dropout and activation backward on those rows); one
// barrier per layer boundary, since dW_{l-1} reads every row of dZ_{l-1} and dH_{l-2} overwrites
// the buffer dW_l reads. Bit-identical to backward() (same per-element arithmetic). Returns
// whether every gradient is finite (each thread checks the blocks it wrote; with no PReLU slope
// in this path, the dW and db blocks are all of the gradient buffer). A thread that throws skips
// the rest of its work but still reaches every barrier; the error is rethrown after. With an
// optimizer, and only when every gradient is finite and no thread failed, the update runs in the
// same region (see OptimizerState::apply_range); the caller then only counts the step.
bool Network::backward_parallel(const float* x, int64_t n, bool training, uint64_t end_offset,
                                int nt, OptimizerState* optimizer) {
  FirstError error;
  std::atomic<bool> finite{true};
#pragma omp parallel num_threads(nt)
  {
    const auto [t, team] = team_slot();
    ScopedThreadLimit one(1);
    int64_t r0, r1;  // this thread's batch rows
    split_aligned(n, gemm_blocking::MR, t, team, &r0, &r1);
    float* dz = ws(scratch_row_[0]);
    int cur = 0;
    uint64_t offset = end_offset;  // walks back over the dropout draws, as in backward()
    for (int64_t l = num_layers() - 1; l >= 0; --l) {
      const Layer& layer = layers_[l];
      float* dh = ws(scratch_row_[1 - cur]);
      const Layer* prev = l > 0 ? &layers_[l - 1] : nullptr;
      if (prev != nullptr && training && prev->h_row >= 0) {
        offset -= static_cast<uint64_t>(n * prev->out);
      }
      if (!error.failed()) {
        try {
          int64_t i0, i1;
          split_aligned(layer.in, gemm_blocking::MR, t, team, &i0, &i1);
          if (i0 < i1) {
            float* dw = grads_.data() + layer.w_offset + i0 * layer.out;
            gemm(true, false, i1 - i0, layer.out, n, 1.0f, layer_input(l, x, training) + i0,
                 layer.in, dz, layer.out, 0.0f, dw, layer.out);
            // Checked while the block is still in this core's cache, instead of a serial pass
            // over all P gradients afterwards.
            const float* w = params_.data() + layer.w_offset + i0 * layer.out;
            if (!gradients_usable(dw, w, (i1 - i0) * layer.out, optimizer)) finite.store(false);
          }
          // db_l by slices of columns, so that no thread carries it alone (it was ~100 us of
          // a 6.3 ms batch-1024 step, on the last thread only, waited for at the barrier).
          int64_t j0, j1;
          split_aligned(layer.out, 8, t, team, &j0, &j1);
          if (j0 < j1) {
            float* db = grads_.data() + layer.b_offset + j0;
            column_sum(db, dz + j0, n, j1 - j0, layer.out);
            const float* bias = params_.data() + layer.b_offset + j0;
            if (!gradients_usable(db, bias, j1 - j0, optimizer)) finite.store(false);
          }
          if (prev != nullptr && r0 < r1) {
            const int64_t d = prev->out, rows = r1 - r0;
            float* dh_rows = dh + r0 * d;
            gemm(false, true, rows, layer.in, layer.out, 1.0f, dz + r0 * layer.out, layer.out,
                 params_.data() + layer.w_offset, layer.out, 0.0f, dh_rows, layer.in);
            if (training && prev->h_row >= 0) {
              dropout_backward(dh_rows, dh_rows, rows * d, prev->dropout, seed_,
                               offset + static_cast<uint64_t>(r0 * d));
            }
            if (prev->activation != Activation::Identity) {
              activation_backward(dh_rows, ws(prev->z_row) + r0 * d, ws(prev->a_row) + r0 * d,
                                  dh_rows, rows * d, prev->activation, prev->alpha);
            }
          }
        } catch (...) {
          error.capture();
        }
      }
      if (prev == nullptr) break;
      dz = dh;
      cur = 1 - cur;
#pragma omp barrier
    }
    if (optimizer != nullptr) {
      // Every gradient is known (and checked) only after this barrier. Each thread then updates
      // the dW rows it computed (still in its cache), the last thread the biases.
#pragma omp barrier
      if (!error.failed() && finite.load()) update_part(*optimizer, t, team);
    }
  }
  error.rethrow();
  return finite.load();
}

void Network::update_part(OptimizerState& optimizer, int t, int team) {
  // Update and packing go in pieces of about this many floats (the L1d: 32 KiB), so that the
  // packing reads rows that the update has just left there.
  constexpr int64_t kPieceFloats = 8192;
  float* params = params_.data();
  const float* grads = grads_.data();
  const int64_t count = num_parameters();
  if (team == 1 && count <= kPieceFloats) {
    // A network that fits in the L1 in one optimizer call, the cheapest for tiny networks.
    optimizer.apply_range(params, grads, 0, count);
    for (int64_t l = 0; l < num_layers(); ++l) pack_weight_rows(l, 0, layers_[l].in);
    return;
  }
  for (int64_t l = 0; l < num_layers(); ++l) {
    const Layer& layer = layers_[l];
    int64_t i0, i1;
    split_aligned(layer.in, gemm_blocking::MR, t, team, &i0, &i1);
    const int64_t piece_rows = std::max<int64_t>(1, kPieceFloats / layer.out);
    for (int64_t r0 = i0; r0 < i1; r0 += piece_rows) {
      const int64_t r1 = std::min(i1, r0 + piece_rows);
      optimizer.apply_range(params, grads, layer.w_offset + r0 * layer.out,
                            layer.w_offset + r1 * layer.out);
      pack_weight_rows(l, r0, r1);
    }
    if (t == team - 1) {
      optimizer.apply_range(params, grads, layer.b_offset, layer.b_offset + layer.out);
    }
  }
  const int64_t slopes = layers_.back().b_offset + layers_.back().out;  // PReLU slopes, if any
  if (t == team - 1 && slopes < count) optimizer.apply_range(params, grads, slopes, count);
}

void Network::update_parameters(OptimizerState& optimizer) {
  // Threaded as the optimizer kernels are (kOptimizerGrain elements per thread), so that a small
  // network's update opens no parallel region.
  const int nt = threads_for(num_parameters(), kOptimizerGrain);
  if (nt <= 1) {
    update_part(optimizer, 0, 1);
  } else {
#pragma omp parallel num_threads(nt)
    {
      const auto [t, team] = team_slot();
      ScopedThreadLimit one(1);
      update_part(optimizer, t, team);
    }
  }
  optimizer.finish_step();
  packed_stale_ = false;  // every row was repacked after its update
}

double Network::gradients_locked(const float* x, const Targets& y, int64_t n, LossKind loss,
                                 float label_smoothing, bool training, uint64_t* next_offset,
                                 OptimizerState* optimizer, bool* updated) {
  FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
  ensure_capacity(n);
  const uint64_t end = forward_rows(nullptr, x, n, training, true, rng_offset_);
  const double value =
      compute_loss(ws(scratch_row_[0]), ws(layers_.back().a_row), y, n, loss, label_smoothing);
  if (!std::isfinite(value)) {
    const std::string what = detail::concat(
        "loss: the loss is ", value,
        " (not finite; is the learning rate too large?); the parameters and the optimizer state "
        "were left unchanged");
    throw_non_finite(x, y, n, what.c_str());
  }
  const int nt = num_threads();
  bool finite = true;
  if (batch_parallel(n, nt)) {
    // Checks each gradient block as it is made, and applies the optimizer when all are finite.
    finite = backward_parallel(x, n, training, end, nt, optimizer);
    if (updated != nullptr) *updated = finite && optimizer != nullptr;
  } else {
    backward(x, n, training, end);
    finite = gradients_usable(grads_.data(), params_.data(), num_parameters(), optimizer);
  }
  if (!finite)
    throw_non_finite(x, y, n, optimizer != nullptr ? kBadUpdateGradients : kBadGradients);
  *next_offset = end;
  return value;
}

void Network::forward(float* out, const float* x, int64_t n, bool training) {
  FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
  // Checked before anything runs: an activation such as relu can turn a NaN into a finite output.
  FASTMLP_CHECK(all_finite(x, n * in_features()), "x: contains NaN or infinite values");
  std::lock_guard<std::mutex> lock(mutex_);
  ScopedThreadLimit serial(forward_macs(n) < kSerialStepMacs ? 1 : num_threads());
  if (training) {
    ensure_capacity(n);
    rng_offset_ = forward_rows(out, x, n, true, false, rng_offset_);
    return;
  }
  const int64_t chunk = std::min(n, std::max(capacity_rows_, kForwardChunkRows));
  ensure_capacity(chunk);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    forward_rows(out + r0 * out_features(), x + r0 * in_features(), rows, false, false, 0);
  }
}

double Network::loss_and_gradients(const float* x, const Targets& y, int64_t n, LossKind loss,
                                   float label_smoothing, bool training, float* gradients_out) {
  std::lock_guard<std::mutex> lock(mutex_);
  ScopedThreadLimit serial(forward_macs(n) < kSerialStepMacs ? 1 : num_threads());
  uint64_t end = rng_offset_;
  const double value = gradients_locked(x, y, n, loss, label_smoothing, training, &end);
  rng_offset_ = end;
  if (gradients_out != nullptr) std::copy(grads_.begin(), grads_.end(), gradients_out);
  return value;
}

double Network::train_step(const float* x, const Targets& y, int64_t n, LossKind loss,
                           float label_smoothing, bool training, OptimizerState& optimizer) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto optimizer_lock = optimizer.lock();  // always after the network's: no deadlock
  optimizer.prepare(num_parameters());           // may allocate or throw: before anything changes
  uint64_t end = rng_offset_;
  double value = 0.0;
  bool updated = false;  // by the batch-parallel backward pass, in its own region
  {
    ScopedThreadLimit serial(forward_macs(n) < kSerialStepMacs ? 1 : num_threads());
    value = gradients_locked(x, y, n, loss, label_smoothing, training, &end, &optimizer, &updated);
  }
  // The logits of this step's forward pass are still in a_L (the loss wrote its gradient into
  // the scratch buffer): counting them costs one pass over n * D_L floats.
  int64_t correct = 0, total = 0;
  count_correct(ws(layers_.back().a_row), y, n, loss, &correct, &total);
  if (updated) {
    optimizer.finish_step();
  } else {
    update_parameters(optimizer);
  }
  rng_offset_ = end;
  train_correct_ += correct;
  train_total_ += total;
  return value;
}

EvalResult Network::evaluate(const float* x, const Targets& y, int64_t n, LossKind loss,
                             int64_t batch_rows) {
  FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
  FASTMLP_CHECK(batch_rows >= 1, "batch_size: expected >= 1, got ", batch_rows);
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t c = out_features();
  const int64_t chunk = std::min(n, batch_rows);
  ScopedThreadLimit serial(forward_macs(chunk) < kSerialStepMacs ? 1 : num_threads());
  ensure_capacity(chunk);
  EvalResult result;
  double loss_sum = 0.0;
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    Targets part;
    if (y.labels) part.labels = y.labels + r0;
    if (y.values) part.values = y.values + r0 * c;
    // Per chunk, just before its forward reads it (from the cache): a NaN could otherwise be
    // hidden by an activation and give a finite, wrong measurement.
    check_inputs_finite(x + r0 * in_features(), part, rows);
    forward_rows(nullptr, x + r0 * in_features(), rows, false, false, 0);
    const float* logits = ws(layers_.back().a_row);
    // Every loss is a mean over rows (mse and bce over rows * c elements, the same weighting),
    // so the chunk means recombine exactly into the full mean.
    loss_sum += compute_loss(nullptr, logits, part, rows, loss, 0.0f) * static_cast<double>(rows);
    count_correct(logits, part, rows, loss, &result.correct, &result.total);
  }
  result.loss = loss_sum / static_cast<double>(n);
  return result;
}

}  // namespace fastmlp
