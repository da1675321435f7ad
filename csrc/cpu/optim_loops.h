// The per-element loops of the CPU optimizer steps (cpu/optim.cpp), compiled twice: by optim.cpp
// for the baseline x86-64 ISA (SSE2, 4 floats per instruction) and by optim_avx2.cpp with -mavx2
// (8 floats). The divides and square roots of AdaGrad, RMSProp and Adam then take half the
// instructions: one Adam element went from 1.43 to 0.68 ns on one Zen 3 core (117K elements, the
// state in the L3), which is 5-10% of a 784-256-128-10 training step. Neither build contracts
// a*b+c into an FMA (optim_avx2.cpp gets no -mfma, and -ffp-contract=off), so both give exactly
// the bits of the scalar rules of common/optim_math.h, as the CUDA build (--fmad=false) does.
//
// The includer defines FASTMLP_OPTIM_ISA, the namespace its copy goes in, so that the two copies
// are distinct functions and the linker cannot merge the AVX one into the baseline path.
#pragma once

#include <cstdint>

#include "common/optim_math.h"

#ifndef FASTMLP_OPTIM_ISA
#error "define FASTMLP_OPTIM_ISA (the namespace of this copy of the loops) before including"
#endif

namespace fastmlp {

// One ISA's loops over [begin, end) of the flat buffers; the rule's flags are template arguments
// (they fold away, and no float store through param can alias a hyper-parameter, which is what
// lets the compiler vectorise the shared scalar rule).
struct OptimLoops {
  using Sgd = void (*)(float*, float*, const float*, int64_t, int64_t, const SgdScalars&);
  using Adagrad = void (*)(float*, float*, const float*, int64_t, int64_t, const AdagradScalars&);
  using Rmsprop = void (*)(float*, float*, float*, float*, const float*, int64_t, int64_t,
                           const RmspropScalars&);
  using Adam = void (*)(float*, float*, float*, const float*, int64_t, int64_t, const AdamScalars&);
  Sgd sgd[2][2][2];       // [use_momentum][nesterov][first_step]
  Rmsprop rmsprop[2][2];  // [centered][use_momentum]
  Adagrad adagrad;
  Adam adam;
};

namespace FASTMLP_OPTIM_ISA {

template <bool kMomentum, bool kNesterov, bool kFirst>
void sgd_range(float* param, float* buf, const float* grad, int64_t begin, int64_t end,
               const SgdScalars& scalars) {
  SgdScalars s = scalars;
  s.use_momentum = kMomentum;
  s.nesterov = kNesterov;
  s.first_step = kFirst;
  if (kMomentum) {
    for (int64_t i = begin; i < end; ++i) sgd_update(param[i], buf[i], grad[i], s);
  } else {
    for (int64_t i = begin; i < end; ++i) {
      float unused = 0.0f;
      sgd_update(param[i], unused, grad[i], s);
    }
  }
}

template <bool kCentered, bool kMomentum>
void rmsprop_range(float* param, float* square_avg, float* buf, float* grad_avg, const float* grad,
                   int64_t begin, int64_t end, const RmspropScalars& scalars) {
  RmspropScalars c = scalars;
  c.centered = kCentered;
  c.use_momentum = kMomentum;
  for (int64_t i = begin; i < end; ++i) {
    // Absent buffers are replaced by a dummy the rule never reads (its flag is off).
    float b_dummy = 0.0f, a_dummy = 0.0f;
    float& b = kMomentum ? buf[i] : b_dummy;
    float& a = kCentered ? grad_avg[i] : a_dummy;
    rmsprop_update(param[i], square_avg[i], b, a, grad[i], c);
  }
}

inline void adagrad_range(float* param, float* sum_sq, const float* grad, int64_t begin,
                          int64_t end, const AdagradScalars& scalars) {
  const AdagradScalars c = scalars;
  for (int64_t i = begin; i < end; ++i) adagrad_update(param[i], sum_sq[i], grad[i], c);
}

inline void adam_range(float* param, float* exp_avg, float* exp_avg_sq, const float* grad,
                       int64_t begin, int64_t end, const AdamScalars& scalars) {
  const AdamScalars c = scalars;
  for (int64_t i = begin; i < end; ++i)
    adam_update(param[i], exp_avg[i], exp_avg_sq[i], grad[i], c);
}

inline OptimLoops make_optim_loops() {
  OptimLoops t{};
  t.sgd[0][0][0] = t.sgd[0][0][1] = t.sgd[0][1][0] = t.sgd[0][1][1] =
      sgd_range<false, false, false>;  // without momentum the other flags are unused
  t.sgd[1][0][0] = sgd_range<true, false, false>;
  t.sgd[1][0][1] = sgd_range<true, false, true>;
  t.sgd[1][1][0] = sgd_range<true, true, false>;
  t.sgd[1][1][1] = sgd_range<true, true, true>;
  t.rmsprop[0][0] = rmsprop_range<false, false>;
  t.rmsprop[0][1] = rmsprop_range<false, true>;
  t.rmsprop[1][0] = rmsprop_range<true, false>;
  t.rmsprop[1][1] = rmsprop_range<true, true>;
  t.adagrad = adagrad_range;
  t.adam = adam_range;
  return t;
}

}  // namespace FASTMLP_OPTIM_ISA

// The AVX copy (optim_avx2.cpp); only called after cpu_has_avx2_fma().
const OptimLoops& optim_loops_avx2();

}  // namespace fastmlp
