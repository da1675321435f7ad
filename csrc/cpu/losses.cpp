// Losses with their gradients, CPU: softmax cross-entropy, MSE, multiclass hinge, BCE on logits.
//
// Shape legend: B = batch (rows), C = classes, F = features; inputs (B, C) or (B, F) row-major
// float32, labels (B,) int64 (each checked as it is read: sum_label_rows_in_order), targets (B, F).
// Each function computes the mean loss and, in the same pass over a row, writes the gradient of
// that mean into its first argument (skipped when it is nullptr). The gradient may alias the
// input it is taken with respect to (every element is read before it is written).
//
// Determinism: rows are split across threads, each row's loss is summed in double into its own
// slot, and the slots are added in row order afterwards, so the loss is bit-identical for every
// thread count (and so is the gradient, which is elementwise per row).
#include "cpu/losses.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include "common/errors.h"
#include "common/macros.h"
#include "common/scratch.h"
#include "common/threading.h"
#include "cpu/cpu_features.h"
#include "cpu/losses_avx2.h"
#include "cpu/row_exp.h"

namespace fastmlp {
namespace {

// Elements per thread below which another thread does not pay for itself (~1-5 us to open a
// region): ~4096 elements of binary cross-entropy (an exp, a log1p and a division each, ~3 ns
// with AVX2), ~32768 with a few flops each. Estimates from the per-element cost, not tuned on a
// quiet machine.
constexpr int64_t kTranscendentalGrain = int64_t{1} << 12;
constexpr int64_t kCheapGrain = int64_t{1} << 15;
// Softmax cross-entropy's exp terms cost ~1 ns each with AVX2 (cpu/row_exp.h), ~5 scalar.
constexpr int64_t kRowExpGrain = int64_t{1} << 14;

// sum_j (m - z_j) in double, in LaneSum's lanes (so that the compiler can vectorise it).
double gap_sum(const float* z, float m, int64_t n) {
  LaneSum sum;
  sum.add_terms(n, [=](int64_t j) { return static_cast<double>(m) - z[j]; });
  return sum.total();
}

// Runs row_loss(i) -> double for every row, split across threads, and returns the sum of the row
// losses added in row order (the thread-count-independent reduction shared by all losses). A NaN
// total is returned as the canonical NaN: which NaN a sum of NaNs of both signs keeps (+NaN from
// an input, -NaN from inf - inf) depends on the operand order the compiler chose, which differs
// between the AVX2 and scalar rows.
template <typename RowLoss>
double sum_rows_in_order(int64_t rows, int64_t work, int64_t grain, const RowLoss& row_loss) {
  double* per_row = thread_scratch_doubles(static_cast<size_t>(rows));
  parallel_ranges(rows, threads_for(work, grain), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) per_row[i] = row_loss(i);
  });
  double total = 0.0;
  for (int64_t i = 0; i < rows; ++i) total += per_row[i];
  return canonical_nan(total);
}

// The error of sum_label_rows_in_order, out of line so that no kernel carries its construction.
[[noreturn]] FASTMLP_NOINLINE void throw_label_out_of_range(const char* name, int64_t label,
                                                            int64_t row, int64_t classes) {
  throw ValueError(detail::concat(
      name, ": label ", label, " at index ", row, " is out of range [0, ", classes,
      ") as the loss read it (did another thread change the labels during the call?)"));
}

// sum_rows_in_order for a label loss: row_loss(i, y) -> double gets the label y of row i, read
// exactly once and checked to lie in [0, classes) before it indexes anything.
//
// Why the kernel checks: the bindings check every label up front with the GIL held, but the
// kernels then run without it on the caller's own array (nothing copies it), so another Python
// thread can rewrite a label in between, and a label trusted from that check would index z[y] /
// d[y] out of bounds. Checking where the label is used makes every caller memory-safe whatever the
// memory holds when it is read, for one compare per row and no allocation (the engine allocates
// nothing in the steady state; a private copy of the labels would need a buffer). A row whose
// label is out of range is skipped; each range keeps its lowest such row in locals (nothing in the
// row loop but the compare) and the lowest of all is reported, the same row for every thread
// count, with ValueError thrown once the parallel region has joined: no exception may leave an
// OpenMP region.
//
// Variant with a second slot per row: row_loss(i, y, aside) may also write *aside, and
// finish(per_row, aside, n) then completes the values of each thread's n rows from both slots,
// after its row loop and before the rows are added (softmax_cross_entropy takes the logs of its
// rows' sums there, four at a time). A range that met a bad label is not finished: the call
// throws. The total is NaN-canonical, as sum_rows_in_order's.
template <typename RowLoss, typename Finish>
double sum_label_rows_in_order(int64_t rows, int64_t classes, int64_t grain, const int64_t* labels,
                               const char* labels_name, const RowLoss& row_loss,
                               const Finish& finish) {
  double* per_row = thread_scratch_doubles(2 * static_cast<size_t>(rows));
  double* aside = per_row + rows;
  std::mutex bad_mutex;  // taken only by a range that met a bad label
  int64_t bad_row = -1, bad_label = 0;
  parallel_ranges(rows, threads_for(rows * classes, grain), [&](int64_t r0, int64_t r1) {
    int64_t first = -1, first_label = 0;
    for (int64_t i = r0; i < r1; ++i) {
      // volatile: exactly one load, so that the value checked is the value used (a plain load of
      // memory that another thread may write could legally be repeated by the compiler).
      const int64_t y = *static_cast<const volatile int64_t*>(labels + i);
      if (static_cast<uint64_t>(y) < static_cast<uint64_t>(classes)) {  // also refuses y < 0
        per_row[i] = row_loss(i, y, aside + i);
      } else if (first < 0) {
        first = i;
        first_label = y;
      }
    }
    if (first < 0) {
      finish(per_row + r0, aside + r0, r1 - r0);
    } else {
      const std::lock_guard<std::mutex> lock(bad_mutex);
      if (bad_row < 0 || first < bad_row) {
        bad_row = first;
        bad_label = first_label;
      }
    }
  });
  if (bad_row >= 0) throw_label_out_of_range(labels_name, bad_label, bad_row, classes);
  double total = 0.0;
  for (int64_t i = 0; i < rows; ++i) total += per_row[i];
  return canonical_nan(total);
}

// rest[i] = log(sums[i]) + rest[i] for i < n (sums overwritten): softmax_cross_entropy's rows'
// log s. Out of line: inlined into the parallel region, it made the row loop of a 1024 x 1000
// cross-entropy with its gradient 8% slower.
FASTMLP_NOINLINE void add_log_sums(double* rest, double* sums, int64_t n, bool avx2) {
  log_of_sums(sums, sums, n, avx2);
  for (int64_t i = 0; i < n; ++i) rest[i] = sums[i] + rest[i];
}

// sum_label_rows_in_order for a loss whose rows need one slot: row_loss(i, y) -> double.
template <typename RowLoss>
double sum_label_rows_in_order(int64_t rows, int64_t classes, int64_t grain, const int64_t* labels,
                               const char* labels_name, const RowLoss& row_loss) {
  return sum_label_rows_in_order(
      rows, classes, grain, labels, labels_name,
      [&](int64_t i, int64_t y, double*) { return row_loss(i, y); },
      [](double*, const double*, int64_t) {});
}

}  // namespace

// Fused softmax + cross-entropy with label smoothing eps; logits (B, C), labels (B,),
// dlogits (B, C) or nullptr. With m = max_j z_j, s = sum_j exp(z_j - m), lse = m + log s and
// q = (1 - eps) onehot(y) + eps / C:
//   loss_i = sum_j q_j (lse - z_j) = log s + (1 - eps)(m - z_y) + eps/C sum_j (m - z_j),
//   written with lse - z_j = log s + (m - z_j), all terms >= 0, so that logits of +-1000 lose
//   no digits;
//   dlogits_ij = (exp(z_j - m) / s - q_j) / B.
// The row's exp terms are stored in dlogits on the way and rescaled in place.
double softmax_cross_entropy(float* dlogits, const float* logits, const int64_t* labels,
                             int64_t batch, int64_t classes, float label_smoothing,
                             const char* labels_name) {
  if (batch <= 0 || classes <= 0) return 0.0;
  const double eps = label_smoothing;
  const double inv_batch = 1.0 / static_cast<double>(batch);
  const float q_other = static_cast<float>(eps / static_cast<double>(classes) * inv_batch);
  const float q_label =
      static_cast<float>(((1.0 - eps) + eps / static_cast<double>(classes)) * inv_batch);
  const bool avx2 = cpu_has_avx2_fma();
  const double total = sum_label_rows_in_order(
      batch, classes, kRowExpGrain, labels, labels_name,
      [&](int64_t i, int64_t y, double* sum_aside) {
        const float* z = logits + i * classes;
        // Pass 1 reads everything the loss needs from z, since dlogits may alias logits.
        const float m = row_max(z, classes, avx2);
        const double sum_gap = eps == 0.0 ? 0.0 : gap_sum(z, m, classes);  // sum_j (m - z_j)
        const double gap_y = static_cast<double>(m) - z[y];
        // Pass 2: s = sum_j exp(z_j - m) (cpu/row_exp.h), keeping each term for the gradient.
        double s;
        if (dlogits != nullptr) {
          float* d = dlogits + i * classes;
          s = exp_shifted_sum(d, z, m, classes, avx2);
          // Pass 3: d_j = e_j / (s B) - q_j / B.
          const float scale = static_cast<float>(inv_batch / s);
          const float e_y = d[y];
          for (int64_t j = 0; j < classes; ++j) d[j] = d[j] * scale - q_other;
          d[y] = e_y * scale - q_label;
        } else {
          s = exp_shifted_sum(nullptr, z, m, classes, avx2);  // the same terms and order
        }
        // loss_i = log s + [(1 - eps) gap_y + eps mean_j (m - z_j)]: the bracket here, log s in
        // `finish`, for the thread's rows at once.
        *sum_aside = s;
        if (eps == 0.0) return gap_y;
        return (1.0 - eps) * gap_y + eps * (sum_gap / static_cast<double>(classes));
      },
      [&](double* rest, double* sums, int64_t n) { add_log_sums(rest, sums, n, avx2); });
  return total * inv_batch;
}

// loss = sum_ij (p_ij - t_ij)^2 / (B F); dpred_ij = 2 (p_ij - t_ij) / (B F).
// pred, target, dpred (B, F); dpred may be nullptr, and may alias pred or target.
double mse_loss(float* dpred, const float* pred, const float* target, int64_t batch,
                int64_t features) {
  if (batch <= 0 || features <= 0) return 0.0;
  const double inv_n = 1.0 / (static_cast<double>(batch) * static_cast<double>(features));
  const double grad_scale = 2.0 * inv_n;
  const bool avx2 = cpu_has_avx2_fma();
  const double total = sum_rows_in_order(batch, batch * features, kCheapGrain, [&](int64_t i) {
    const float* p = pred + i * features;
    const float* t = target + i * features;
    float* d = dpred != nullptr ? dpred + i * features : nullptr;
    if (avx2) return detail::mse_row_avx2(d, p, t, features, grad_scale);
    // In LaneSum's eight lanes (cpu/row_exp.h): one running sum is a chain of dependent adds,
    // ~4x slower on a wide row.
    LaneSum acc;
    if (d != nullptr) {
      acc.add_terms(features, [&](int64_t j) {
        const double diff = static_cast<double>(p[j]) - t[j];
        // Scaled in double, then rounded once: |p - t| may exceed float's range (3e38 - -3e38)
        // while the gradient fits.
        d[j] = static_cast<float>(diff * grad_scale);
        return diff * diff;
      });
    } else {
      acc.add_terms(features, [&](int64_t j) {
        const double diff = static_cast<double>(p[j]) - t[j];
        return diff * diff;
      });
    }
    return acc.total();
  });
  return total * inv_n;
}

// Multiclass SVM (Weston-Watkins): scores (B, C), labels (B,), dscores (B, C) or nullptr.
//   margin_ij = s_ij - s_iy + margin for j != y;  loss_i = sum_{j != y} max(0, margin_ij);
//   dscores_ij = [margin_ij > 0] / B for j != y,  dscores_iy = -(count of margin_ij > 0) / B.
// margin_ij is evaluated in double from the float inputs with the operations of the float64
// reference, so the indicator [margin_ij > 0] agrees with it exactly (for a margin representable in
// float32). dscores may alias scores.
double multiclass_hinge_loss(float* dscores, const float* scores, const int64_t* labels,
                             int64_t batch, int64_t classes, float margin,
                             const char* labels_name) {
  if (batch <= 0 || classes <= 0) return 0.0;
  const double inv_batch = 1.0 / static_cast<double>(batch);
  const float g = static_cast<float>(inv_batch);
  const double delta = margin;
  const double total = sum_label_rows_in_order(
      batch, classes, kCheapGrain, labels, labels_name, [&](int64_t i, int64_t y) {
        const float* s = scores + i * classes;
        const double s_y = s[y];
        double acc = 0.0;
        int64_t violated = 0;
        float* d = dscores != nullptr ? dscores + i * classes : nullptr;
        for (int64_t j = 0; j < classes; ++j) {
          const double m = (static_cast<double>(s[j]) - s_y) + delta;
          const bool on = j != y && m > 0.0;
          // max(0, m) as the reference's np.maximum: a NaN margin (NaN or inf - inf in the scores)
          // makes the loss NaN instead of dropping out of the sum; its gradient term stays 0.
          if (j != y && !(m <= 0.0)) acc += m;
          violated += on;
          if (d != nullptr) d[j] = on ? g : 0.0f;
        }
        if (d != nullptr) d[y] = static_cast<float>(-static_cast<double>(violated) * inv_batch);
        return acc;
      });
  return total * inv_batch;
}

// Binary cross-entropy on logits z with targets t in [0, 1]; logits, targets, dlogits (B, F).
//   loss = mean_ij ( max(z, 0) - z t + log(1 + exp(-|z|)) )   (never exp of a positive number),
//   dlogits_ij = (sigmoid(z_ij) - t_ij) / (B F).
// dlogits may be nullptr, and may alias logits or targets.
double bce_with_logits(float* dlogits, const float* logits, const float* targets, int64_t batch,
                       int64_t features) {
  if (batch <= 0 || features <= 0) return 0.0;
  const double inv_n = 1.0 / (static_cast<double>(batch) * static_cast<double>(features));
  const float grad_scale = static_cast<float>(inv_n);
  const bool avx2 = cpu_has_avx2_fma();
  const double total =
      sum_rows_in_order(batch, batch * features, kTranscendentalGrain, [&](int64_t i) {
        const float* z = logits + i * features;
        const float* t = targets + i * features;
        float* d = dlogits != nullptr ? dlogits + i * features : nullptr;
        if (avx2) return detail::bce_row_avx2(d, z, t, features, grad_scale);
        LaneSum acc;
        acc.add_terms(features, [&](int64_t j) {
          const float zj = z[j];
          const float tj = t[j];
          const float e = expmath::exp(-std::fabs(zj));
          if (d != nullptr) {
            // The logistic from the same e = exp(-|z|) (one exp instead of two), with the two
            // branches of the stable form: 1 / (1 + e) for z >= 0 and e / (1 + e) for z < 0.
            const float sig = zj >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
            d[j] = (sig - tj) * grad_scale;
          }
          // The max(z,0) - z t part is done in double: it can be two large, nearly equal terms
          // (z = 1000, t = 1); the log1p part is in (0, log 2], where float is accurate enough.
          const double zd = zj;
          return (std::max(zd, 0.0) - zd * tj) + static_cast<double>(expmath::log1p_unit(e));
        });
        return acc.total();
      });
  return total * inv_n;
}

}  // namespace fastmlp
