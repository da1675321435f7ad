#include "bindings/bindings.h"

namespace fastmlp::bind {

void bind_optim(pybind11::module_& m) { (void)m; }

}  // namespace fastmlp::bind
