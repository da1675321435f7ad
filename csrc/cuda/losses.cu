// CUDA losses with their gradients (contracts and formulas: cpu/losses.h, cpu/losses.cpp).
//
// Shape legend: B = batch (rows), C = classes, F = features; inputs (B, C) or (B, F) row-major
// float32, labels (B,) int64 in [0, C), targets (B, F).
// Labels are checked by the row kernels as they read them, as on the CPU (cpu/losses.h): the
// callers' checks (labels_out_of_range, or the host check before the engine copies host labels to
// the device with the GIL released) come before the copy or kernel that uses them, and another
// thread can change the labels in between. A row whose label is out of range is skipped and sets
// a flag that the host reads with the loss; the call then throws ValueError.
// One pass per row, one warp per row (8 rows per 256-thread block): the warp computes the row's
// loss term in double, writes it to per-row slot partial[i], and writes the row's gradient (when
// the gradient pointer is not null). A second kernel adds the B slots in a fixed tree order in one
// block, and the host reads the double total: no atomics, so the loss has the same bits on every
// run (it matches the CPU's row-order sum to ~1e-15 relative, not bit for bit). The gradient may
// alias the input it is taken with respect to: the values a row needs from other lanes' columns
// (the label's logit) are read before a __syncwarp that precedes any write, and every lane
// otherwise rewrites only the columns it read itself.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/errors.h"
#include "common/exp_math.h"
#include "cuda/check.h"
#include "cuda/device_util.cuh"
#include "cuda/kernels.h"

namespace fastmlp::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

// The label of `row`, read once (by lane 0) and broadcast, so that every lane of the warp checks
// and uses the same value even if the memory changes meanwhile; -1 when it lies outside
// [0, classes), after lane 0 has set *bad and zeroed the row's slot. The result is warp-uniform,
// so a warp that skips its row does so as a whole (the warp reductions below need every lane).
__device__ __forceinline__ int64_t row_label(double* partial, double* bad, const int64_t* labels,
                                             int64_t row, int64_t classes, int lane) {
  long long y = 0;
  if (lane == 0) y = *static_cast<const volatile int64_t*>(labels + row);
  y = __shfl_sync(kFullMask, y, 0);
  if (y >= 0 && y < classes) return y;
  if (lane == 0) {
    partial[row] = 0.0;
    *bad = 1.0;  // every writer stores the same value: no atomic needed
  }
  return -1;
}

// Softmax cross-entropy with label smoothing (cpu/losses.cpp spells out the algebra):
//   loss_i = (1 - eps)(log s + m - z_y) + eps (log s + mean_j (m - z_j)),
//   d_ij = exp(z_j - m) / (s B) - q_j / B  with q_other = eps / (C B), q_label = (1 - eps + eps /
//   C) / B.
__global__ void __launch_bounds__(kThreads)
    softmax_ce_kernel(double* partial, double* bad, float* dlogits, const float* logits,
                      const int64_t* labels, int64_t batch, int64_t classes, double eps,
                      double inv_batch, float q_other, float q_label) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= batch) return;
  const float* z = logits + row * classes;
  const int64_t y = row_label(partial, bad, labels, row, classes, lane);
  if (y < 0) return;
  const float z_y = z[y];
  float m = -INFINITY;
  double sum_gap = 0.0;
  for (int64_t j = lane; j < classes; j += kWarp) m = fmaxf(m, z[j]);
  m = warp_max(m);
  for (int64_t j = lane; j < classes; j += kWarp) sum_gap += static_cast<double>(m) - z[j];
  sum_gap = warp_sum(sum_gap);
  __syncwarp();  // every lane has read z_y before any lane overwrites z (dlogits may alias logits)
  double s = 0.0;
  float* d = dlogits != nullptr ? dlogits + row * classes : nullptr;
  for (int64_t j = lane; j < classes; j += kWarp) {
    const float e = expmath::exp(z[j] - m);  // the CPU's exp (common/exp_math.h)
    if (d != nullptr) d[j] = e;
    s += e;
  }
  s = warp_sum(s);
  if (d != nullptr) {
    const float scale = static_cast<float>(inv_batch / s);
    for (int64_t j = lane; j < classes; j += kWarp)
      d[j] = d[j] * scale - (j == y ? q_label : q_other);
  }
  if (lane == 0) {
    const double log_s = log(s);
    const double ce_label = log_s + (static_cast<double>(m) - z_y);
    partial[row] = eps == 0.0 ? ce_label
                              : (1.0 - eps) * ce_label +
                                    eps * (log_s + sum_gap / static_cast<double>(classes));
  }
}

// loss_i = sum_j (p - t)^2 (in double);  d = 2 (p - t) / (B F).
__global__ void __launch_bounds__(kThreads)
    mse_kernel(double* partial, float* dpred, const float* pred, const float* target, int64_t batch,
               int64_t features, double grad_scale) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= batch) return;
  const float* p = pred + row * features;
  const float* t = target + row * features;
  float* d = dpred != nullptr ? dpred + row * features : nullptr;
  double acc = 0.0;
  for (int64_t j = lane; j < features; j += kWarp) {
    const double diff = static_cast<double>(p[j]) - t[j];
    acc += diff * diff;
    if (d != nullptr) d[j] = static_cast<float>(diff * grad_scale);  // one rounding, as the CPU
  }
  acc = warp_sum(acc);
  if (lane == 0) partial[row] = acc;
}

// Weston-Watkins hinge: margin_j = (s_j - s_y) + delta in double (as the CPU and the reference),
// loss_i = sum_{j != y} max(0, margin_j); d_j = [margin_j > 0] / B, d_y = -(count) / B.
__global__ void __launch_bounds__(kThreads)
    hinge_kernel(double* partial, double* bad, float* dscores, const float* scores,
                 const int64_t* labels, int64_t batch, int64_t classes, double delta,
                 double inv_batch) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= batch) return;
  const float* s = scores + row * classes;
  const int64_t y = row_label(partial, bad, labels, row, classes, lane);
  if (y < 0) return;
  const double s_y = s[y];
  __syncwarp();  // s_y read by every lane before any lane overwrites s (dscores may alias scores)
  const float g = static_cast<float>(inv_batch);
  float* d = dscores != nullptr ? dscores + row * classes : nullptr;
  double acc = 0.0;
  long long violated = 0;
  for (int64_t j = lane; j < classes; j += kWarp) {
    const double m = (static_cast<double>(s[j]) - s_y) + delta;
    const bool on = j != y && m > 0.0;
    if (j != y && !(m <= 0.0)) acc += m;  // a NaN margin makes the loss NaN, as on the CPU
    violated += on;
    if (d != nullptr) d[j] = on ? g : 0.0f;
  }
  acc = warp_sum(acc);
  violated = warp_sum(violated);
  if (d != nullptr && y % kWarp == lane) {  // the lane that owns column y wrote d[y] = 0 above
    d[y] = static_cast<float>(-static_cast<double>(violated) * inv_batch);
  }
  if (lane == 0) partial[row] = acc;
}

// loss_i = sum_j (max(z, 0) - z t) + log1p(exp(-|z|)) (the first part in double);
// d = (sigmoid(z) - t) / (B F) with sigmoid from the same e = exp(-|z|). Every term is the CPU's
// (common/exp_math.h's exp and log1p, explicit roundings so that nvcc fuses nothing); only the
// order of the row sum differs.
__global__ void __launch_bounds__(kThreads)
    bce_kernel(double* partial, float* dlogits, const float* logits, const float* targets,
               int64_t batch, int64_t features, float grad_scale) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= batch) return;
  const float* z = logits + row * features;
  const float* t = targets + row * features;
  float* d = dlogits != nullptr ? dlogits + row * features : nullptr;
  double acc = 0.0;
  for (int64_t j = lane; j < features; j += kWarp) {
    const float zj = z[j];
    const float tj = t[j];
    const double zd = zj;
    const float e = expmath::exp(-fabsf(zj));
    const double linear = __dsub_rn(zd < 0.0 ? 0.0 : zd, __dmul_rn(zd, static_cast<double>(tj)));
    acc += linear + static_cast<double>(expmath::log1p_unit(e));
    if (d != nullptr) {
      const float sig = expmath::div_rn(zj >= 0.0f ? 1.0f : e, expmath::add_rn(1.0f, e));
      d[j] = expmath::mul_rn(expmath::add_rn(sig, -tj), grad_scale);
    }
  }
  acc = warp_sum(acc);
  if (lane == 0) partial[row] = acc;
}

// total[0] = sum_i partial[i], fixed order, one block.
__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(double* total, const double* partial, int64_t n) {
  __shared__ double scratch[kThreads / kWarp];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += partial[i];
  const double t = block_sum<kThreads>(acc, scratch);
  if (threadIdx.x == 0) total[0] = t;
}

__global__ void labels_check_kernel(int* bad, const int64_t* labels, int64_t n, int64_t classes) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    if (labels[i] < 0 || labels[i] >= classes) atomicOr(bad, 1);  // an integer flag: order-free
  }
}

__global__ void targets_check_kernel(int* bad, const float* t, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    if (!(t[i] >= 0.0f && t[i] <= 1.0f)) atomicOr(bad, 1);  // NaN fails both tests
  }
}

// Per-row partials + fixed-order sum; launches the row kernel through
// `row_launch(blocks, partial, bad)` and returns the double total (synchronising the stream to read
// it). `bad` is one double, zeroed first, that a label loss sets to 1 for a label out of range
// (row_label); the call then throws ValueError naming labels_name (nullptr: a loss without labels).
template <typename RowLaunch>
double reduce_rows(int64_t batch, cudaStream_t stream, const char* what, const char* labels_name,
                   int64_t classes, const RowLaunch& row_launch) {
  StreamBuffer work(static_cast<size_t>(batch + 2) * sizeof(double), stream, what);
  double* partial = work.as<double>();
  double* total = partial + batch;  // then bad, so that one copy brings both back
  double* bad = total + 1;
  const int64_t blocks = (batch + kRowsPerBlock - 1) / kRowsPerBlock;
  FASTMLP_CHECK(blocks < (int64_t{1} << 31), "batch: too many rows for one launch, got ", batch);
  if (labels_name != nullptr) {
    check_cuda(cudaMemsetAsync(bad, 0, sizeof(double), stream), what);
  }
  row_launch(static_cast<unsigned>(blocks), partial, bad);
  check_launch(what);
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(total, partial, batch);
  check_launch(what);
  double host[2] = {0.0, 0.0};  // total, bad (read only when zeroed above)
  const size_t back = (labels_name != nullptr ? 2 : 1) * sizeof(double);
  check_cuda(cudaMemcpyAsync(host, total, back, cudaMemcpyDeviceToHost, stream), what);
  check_cuda(cudaStreamSynchronize(stream), what);
  FASTMLP_CHECK(labels_name == nullptr || host[1] == 0.0, labels_name,
                ": a label is out of range [0, ", classes,
                ") as the loss read it (did another thread change the labels during the call?)");
  return host[0];
}

bool any_flag(cudaStream_t stream, const char* what,
              void (*launch)(int*, cudaStream_t, const void*), const void* ctx) {
  StreamBuffer flag(sizeof(int), stream, what);
  check_cuda(cudaMemsetAsync(flag.as<int>(), 0, sizeof(int), stream), what);
  launch(flag.as<int>(), stream, ctx);
  check_launch(what);
  int host = 0;
  check_cuda(cudaMemcpyAsync(&host, flag.as<int>(), sizeof(int), cudaMemcpyDeviceToHost, stream),
             what);
  check_cuda(cudaStreamSynchronize(stream), what);
  return host != 0;
}

}  // namespace

double softmax_cross_entropy(float* dlogits, const float* logits, const int64_t* labels,
                             int64_t batch, int64_t classes, float label_smoothing,
                             const char* labels_name, cudaStream_t stream) {
  if (batch <= 0 || classes <= 0) return 0.0;
  const double eps = label_smoothing;
  const double inv_batch = 1.0 / static_cast<double>(batch);
  const float q_other = static_cast<float>(eps / static_cast<double>(classes) * inv_batch);
  const float q_label =
      static_cast<float>(((1.0 - eps) + eps / static_cast<double>(classes)) * inv_batch);
  const double total = reduce_rows(batch, stream, "softmax_cross_entropy", labels_name, classes,
                                   [&](unsigned blocks, double* partial, double* bad) {
                                     softmax_ce_kernel<<<blocks, kThreads, 0, stream>>>(
                                         partial, bad, dlogits, logits, labels, batch, classes, eps,
                                         inv_batch, q_other, q_label);
                                   });
  return total * inv_batch;
}

double mse_loss(float* dpred, const float* pred, const float* target, int64_t batch,
                int64_t features, cudaStream_t stream) {
  if (batch <= 0 || features <= 0) return 0.0;
  const double inv_n = 1.0 / (static_cast<double>(batch) * static_cast<double>(features));
  const double grad_scale = 2.0 * inv_n;
  const double total = reduce_rows(batch, stream, "mse_loss", nullptr, 0,
                                   [&](unsigned blocks, double* partial, double*) {
                                     mse_kernel<<<blocks, kThreads, 0, stream>>>(
                                         partial, dpred, pred, target, batch, features, grad_scale);
                                   });
  return total * inv_n;
}

double multiclass_hinge_loss(float* dscores, const float* scores, const int64_t* labels,
                             int64_t batch, int64_t classes, float margin, const char* labels_name,
                             cudaStream_t stream) {
  if (batch <= 0 || classes <= 0) return 0.0;
  const double inv_batch = 1.0 / static_cast<double>(batch);
  const double total = reduce_rows(batch, stream, "multiclass_hinge_loss", labels_name, classes,
                                   [&](unsigned blocks, double* partial, double* bad) {
                                     hinge_kernel<<<blocks, kThreads, 0, stream>>>(
                                         partial, bad, dscores, scores, labels, batch, classes,
                                         static_cast<double>(margin), inv_batch);
                                   });
  return total * inv_batch;
}

double bce_with_logits(float* dlogits, const float* logits, const float* targets, int64_t batch,
                       int64_t features, cudaStream_t stream) {
  if (batch <= 0 || features <= 0) return 0.0;
  const double inv_n = 1.0 / (static_cast<double>(batch) * static_cast<double>(features));
  const float grad_scale = static_cast<float>(inv_n);
  const double total = reduce_rows(
      batch, stream, "bce_with_logits", nullptr, 0, [&](unsigned blocks, double* partial, double*) {
        bce_kernel<<<blocks, kThreads, 0, stream>>>(partial, dlogits, logits, targets, batch,
                                                    features, grad_scale);
      });
  return total * inv_n;
}

bool labels_out_of_range(const int64_t* labels, int64_t n, int64_t classes, cudaStream_t stream) {
  if (n <= 0) return false;
  struct Ctx {
    const int64_t* labels;
    int64_t n, classes;
  } ctx{labels, n, classes};
  return any_flag(
      stream, "labels: range check",
      [](int* bad, cudaStream_t s, const void* p) {
        const Ctx& c = *static_cast<const Ctx*>(p);
        labels_check_kernel<<<grid_for(c.n, kThreads), kThreads, 0, s>>>(bad, c.labels, c.n,
                                                                         c.classes);
      },
      &ctx);
}

bool targets_out_of_unit_interval(const float* targets, int64_t n, cudaStream_t stream) {
  if (n <= 0) return false;
  struct Ctx {
    const float* t;
    int64_t n;
  } ctx{targets, n};
  return any_flag(
      stream, "targets: range check",
      [](int* bad, cudaStream_t s, const void* p) {
        const Ctx& c = *static_cast<const Ctx*>(p);
        targets_check_kernel<<<grid_for(c.n, kThreads), kThreads, 0, s>>>(bad, c.t, c.n);
      },
      &ctx);
}

}  // namespace fastmlp::cuda
