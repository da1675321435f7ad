// Losses: each returns the mean loss over the batch and, in the same pass, writes the gradient of
// that mean loss with respect to its input into the first argument (skipped when it is nullptr).
// Inputs are row-major (batch, classes) or (batch, features). Accumulation is in double; the result
// does not depend on the thread count.
//
// Labels are int64 class indices in [0, classes). The label losses read each label exactly once
// and check it before using it as an index, whatever the caller checked before: the bindings check
// with the GIL held and run the kernel without it on the caller's array, which another thread may
// rewrite in between. A label out of range is never used; the call throws ValueError (its message
// starts with labels_name, the caller's name for the argument) after every row has been visited,
// and the gradient buffer is then partly written (the loss is not returned).
#pragma once

#include <cstdint>

namespace fastmlp {

// Fused softmax + cross-entropy with optional label smoothing eps (PyTorch's convention):
//   q = (1 - eps) * onehot(label) + eps / classes,  loss_i = -sum_j q_j log softmax(z_i)_j,
//   loss = mean_i loss_i,  dlogits = (softmax(z) - q) / batch.
double softmax_cross_entropy(float* dlogits, const float* logits, const int64_t* labels,
                             int64_t batch, int64_t classes, float label_smoothing,
                             const char* labels_name);

// Mean squared error over all elements (PyTorch's reduction='mean'):
//   loss = sum (pred - target)^2 / (batch * features),  dpred = 2 (pred - target) / (batch *
//   features).
double mse_loss(float* dpred, const float* pred, const float* target, int64_t batch,
                int64_t features);

// Multiclass SVM hinge loss (Weston-Watkins, as in the course notes), margin 1 by default:
//   loss_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin),  loss = mean_i loss_i.
//   dscores_ij = [margin violated] / batch for j != y_i, and -(number violated) / batch at y_i.
double multiclass_hinge_loss(float* dscores, const float* scores, const int64_t* labels,
                             int64_t batch, int64_t classes, float margin, const char* labels_name);

// Binary cross-entropy on logits, targets in [0, 1], mean over all elements (PyTorch's
// BCEWithLogitsLoss): loss = mean( max(z,0) - z*t + log(1 + exp(-|z|)) ),
// dlogits = (sigmoid(z) - t) / (batch * features).
double bce_with_logits(float* dlogits, const float* logits, const float* targets, int64_t batch,
                       int64_t features);

}  // namespace fastmlp
