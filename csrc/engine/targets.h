// What a training step is asked to compute, shared by the CPU engine (engine/network.h), the CUDA
// engine (engine/network_cuda.h) and their bindings: the loss kinds, the targets of a batch and the
// result of an evaluation.
#pragma once

#include <cstdint>

namespace fastmlp {

enum class LossKind : int {
  CrossEntropy = 0,  // labels (B,) int64, softmax inside the loss
  Mse = 1,           // targets (B, D_L) float32
  Hinge = 2,         // labels (B,) int64, multiclass (Weston-Watkins) hinge, margin 1
  Bce = 3,           // targets (B, D_L) float32 in [0, 1], sigmoid inside the loss
};

// Exactly one of labels (cross_entropy, hinge) or values (mse, bce) is set, per the loss.
struct Targets {
  const int64_t* labels = nullptr;
  const float* values = nullptr;
};

struct EvalResult {
  double loss = 0.0;    // mean loss over the whole input, as the loss function defines it
  int64_t correct = 0;  // rows (cross_entropy, hinge) or elements (bce) predicted right
  int64_t total = 0;    // rows or elements counted; 0 for mse (no accuracy)
};

inline bool loss_uses_labels(LossKind loss) {
  return loss == LossKind::CrossEntropy || loss == LossKind::Hinge;
}

}  // namespace fastmlp
