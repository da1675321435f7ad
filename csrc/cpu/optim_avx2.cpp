// The optimizer loops of cpu/optim_loops.h compiled with AVX (CMakeLists.txt gives this file
// -mavx2 without -mfma, and -ffp-contract=off): same bits as the baseline copy, twice the width.
#define FASTMLP_OPTIM_ISA avx2
#include "cpu/optim_loops.h"

namespace fastmlp {

const OptimLoops& optim_loops_avx2() {
  static const OptimLoops loops = avx2::make_optim_loops();
  return loops;
}

}  // namespace fastmlp
