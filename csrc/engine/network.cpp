// The CPU training engine. Shapes and buffer layouts: engine/network.h.
#include "engine/network.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "common/errors.h"
#include "cpu/activations.h"
#include "cpu/dropout.h"
#include "cpu/gemm.h"
#include "cpu/losses.h"

namespace fastmlp {

namespace {

// True when no element is NaN or +-inf. Tests the exponent bits with an integer OR-reduction,
// which vectorises (a float reduction would not without -ffast-math) and is exact.
bool all_finite(const float* v, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, v + i, sizeof(bits));
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

}  // namespace

bool loss_uses_labels(LossKind loss) {
  return loss == LossKind::CrossEntropy || loss == LossKind::Hinge;
}

Network::Network(std::vector<int64_t> sizes, std::vector<Activation> activations,
                 std::vector<float> alphas, std::vector<float> dropouts, uint64_t seed)
    : sizes_(std::move(sizes)), seed_(seed) {
  FASTMLP_CHECK(sizes_.size() >= 2, "layer_sizes: expected at least 2 sizes (in, out), got ",
                sizes_.size());
  for (size_t i = 0; i < sizes_.size(); ++i) {
    FASTMLP_CHECK(sizes_[i] >= 1, "layer_sizes: size ", i, " is ", sizes_[i], ", expected >= 1");
  }
  const size_t hidden = sizes_.size() - 2;
  FASTMLP_CHECK(activations.size() == hidden, "activation: expected ", hidden,
                " entries (one per hidden layer), got ", activations.size());
  FASTMLP_CHECK(alphas.size() == hidden, "activation_alpha: expected ", hidden,
                " entries (one per hidden layer), got ", alphas.size());
  FASTMLP_CHECK(dropouts.size() == hidden, "dropout: expected ", hidden,
                " entries (one per hidden layer), got ", dropouts.size());

  const int64_t L = num_layers();
  layers_.resize(static_cast<size_t>(L));
  int64_t p = 0;
  for (int64_t l = 0; l < L; ++l) {
    Layer& layer = layers_[l];
    layer.in = sizes_[l];
    layer.out = sizes_[l + 1];
    layer.w_offset = p;
    p += layer.in * layer.out;
    layer.b_offset = p;
    p += layer.out;
    if (l + 1 < L) {
      const int a = static_cast<int>(activations[l]);
      FASTMLP_CHECK(a >= 0 && a <= static_cast<int>(Activation::Tanh), "activation: unknown kind ",
                    a, " for hidden layer ", l);
      FASTMLP_CHECK(std::isfinite(alphas[l]), "activation_alpha: entry ", l, " is not finite");
      FASTMLP_CHECK(dropouts[l] >= 0.0f && dropouts[l] < 1.0f, "dropout: entry ", l, " is ",
                    dropouts[l], ", expected a probability in [0, 1)");
      layer.activation = activations[l];
      layer.alpha = alphas[l];
      layer.dropout = dropouts[l];
    }
  }
  // PReLU slopes go after every weight and bias so that [W_1, b_1, ...] keeps the plain layout.
  for (Layer& layer : layers_) {
    if (layer.activation == Activation::Prelu) layer.slope_offset = p++;
  }
  params_.assign(static_cast<size_t>(p), 0.0f);
  grads_.assign(static_cast<size_t>(p), 0.0f);
  for (const Layer& layer : layers_) {
    if (layer.slope_offset >= 0) params_[layer.slope_offset] = layer.alpha;
  }

  // Workspace row layout: per layer [z (when stored)] [a] [h (when dropout)], then two backward
  // scratch buffers as wide as the widest layer output.
  int64_t row = 0, max_width = 0;
  for (int64_t l = 0; l < L; ++l) {
    Layer& layer = layers_[l];
    const bool is_hidden = l + 1 < L;
    if (is_hidden && layer.activation != Activation::Identity) {
      layer.z_row = row;
      row += layer.out;
    }
    layer.a_row = row;
    row += layer.out;
    if (is_hidden && layer.dropout > 0.0f) {
      layer.h_row = row;
      row += layer.out;
    }
    max_width = std::max(max_width, layer.out);
  }
  scratch_row_[0] = row;
  scratch_row_[1] = row + max_width;
  floats_per_row_ = row + 2 * max_width;
}

void Network::ensure_capacity(int64_t rows) {
  if (rows <= capacity_rows_) return;
  // A fresh buffer rather than resize(): the old contents are scratch and need no copy.
  std::vector<float> fresh(static_cast<size_t>(rows * floats_per_row_));
  workspace_.swap(fresh);
  capacity_rows_ = rows;
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
}

const float* Network::layer_input(int64_t l, const float* x, bool training) {
  if (l == 0) return x;
  const Layer& prev = layers_[l - 1];
  return training && prev.h_row >= 0 ? ws(prev.h_row) : ws(prev.a_row);
}

// z_l = h_{l-1} @ W_l + b_l and a_l = f_l(z_l) in one GEMM (bias and activation in the epilogue,
// z_l stored only when store_z and the activation is not the identity), then h_l = dropout(a_l)
// in training mode. n <= capacity_rows_. The last layer writes into `out` when it is given.
uint64_t Network::forward_rows(float* out, const float* x, int64_t n, bool training, bool store_z,
                               uint64_t rng_offset) {
  const int64_t L = num_layers();
  for (int64_t l = 0; l < L; ++l) {
    const Layer& layer = layers_[l];
    float* a = (l + 1 == L && out != nullptr) ? out : ws(layer.a_row);
    GemmEpilogue epilogue;
    epilogue.bias = params_.data() + layer.b_offset;
    epilogue.activation = layer.activation;
    epilogue.activation_alpha = layer_alpha(layer);
    epilogue.preactivation = store_z && layer.z_row >= 0 ? ws(layer.z_row) : nullptr;
    gemm(false, false, n, layer.out, layer.in, 1.0f, layer_input(l, x, training), layer.in,
         params_.data() + layer.w_offset, layer.out, 0.0f, a, layer.out, epilogue);
    if (training && layer.h_row >= 0) {
      const int64_t count = n * layer.out;
      dropout_forward(ws(layer.h_row), a, count, layer.dropout, seed_, rng_offset);
      rng_offset += static_cast<uint64_t>(count);
    }
  }
  return rng_offset;
}

double Network::compute_loss(float* dlogits, const float* logits, const Targets& y, int64_t n,
                             LossKind loss, float label_smoothing) const {
  const int64_t c = out_features();
  switch (loss) {
    case LossKind::CrossEntropy:
      return softmax_cross_entropy(dlogits, logits, y.labels, n, c, label_smoothing);
    case LossKind::Mse:
      return mse_loss(dlogits, logits, y.values, n, c);
    case LossKind::Hinge:
      return multiclass_hinge_loss(dlogits, logits, y.labels, n, c, 1.0f);
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

double Network::gradients_locked(const float* x, const Targets& y, int64_t n, LossKind loss,
                                 float label_smoothing, bool training, uint64_t* next_offset) {
  FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
  ensure_capacity(n);
  const uint64_t end = forward_rows(nullptr, x, n, training, true, rng_offset_);
  const double value =
      compute_loss(ws(scratch_row_[0]), ws(layers_.back().a_row), y, n, loss, label_smoothing);
  if (!std::isfinite(value)) {
    throw NonFiniteError(detail::concat("loss: the loss is ", value,
                                        " (not finite; is the learning rate too large?); the "
                                        "parameters and the optimizer state were left unchanged"));
  }
  backward(x, n, training, end);
  if (!all_finite(grads_.data(), num_parameters())) {
    throw NonFiniteError(
        "gradients: NaN or infinite values (is the learning rate too large?); the parameters and "
        "the optimizer state were left unchanged");
  }
  *next_offset = end;
  return value;
}

void Network::forward(float* out, const float* x, int64_t n, bool training) {
  FASTMLP_CHECK(n >= 1, "x: empty batch (0 rows)");
  std::lock_guard<std::mutex> lock(mutex_);
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
                                   float label_smoothing, bool training) {
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t end = rng_offset_;
  const double value = gradients_locked(x, y, n, loss, label_smoothing, training, &end);
  rng_offset_ = end;
  return value;
}

double Network::train_step(const float* x, const Targets& y, int64_t n, LossKind loss,
                           float label_smoothing, bool training, OptimizerState& optimizer) {
  std::lock_guard<std::mutex> lock(mutex_);
  optimizer.prepare(num_parameters());  // may allocate or throw: before anything changes
  uint64_t end = rng_offset_;
  const double value = gradients_locked(x, y, n, loss, label_smoothing, training, &end);
  optimizer.apply(params_.data(), grads_.data(), num_parameters());
  rng_offset_ = end;
  return value;
}

EvalResult Network::evaluate(const float* x, const Targets& y, int64_t n, LossKind loss,
                             int64_t batch_rows) {
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
    forward_rows(nullptr, x + r0 * in_features(), rows, false, false, 0);
    const float* logits = ws(layers_.back().a_row);
    Targets part;
    if (y.labels) part.labels = y.labels + r0;
    if (y.values) part.values = y.values + r0 * c;
    // Every loss is a mean over rows (mse and bce over rows * c elements, the same weighting),
    // so the chunk means recombine exactly into the full mean.
    loss_sum += compute_loss(nullptr, logits, part, rows, loss, 0.0f) * static_cast<double>(rows);
    if (loss_uses_labels(loss)) {
      for (int64_t i = 0; i < rows; ++i) {
        const float* row = logits + i * c;
        // First maximum, as np.argmax.
        const int64_t best = std::max_element(row, row + c) - row;
        result.correct += best == part.labels[i];
      }
      result.total += rows;
    } else if (loss == LossKind::Bce) {
      // Predicted 1 iff sigmoid(z) > 0.5 iff z > 0; the target counts as 1 iff it is > 0.5.
      for (int64_t i = 0; i < rows * c; ++i) {
        result.correct += (logits[i] > 0.0f) == (part.values[i] > 0.5f);
      }
      result.total += rows * c;
    }
  }
  result.loss = loss_sum / static_cast<double>(n);
  return result;
}

}  // namespace fastmlp
