#include "bindings/bindings.h"

namespace fastmlp::bind {

void bind_activations(pybind11::module_& m) { (void)m; }

}  // namespace fastmlp::bind
