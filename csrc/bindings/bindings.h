// One registration function per op family, each in its own bind_<family>.cpp.
#pragma once

#include <pybind11/pybind11.h>

namespace fastmlp::bind {

void bind_gemm(pybind11::module_& m);
void bind_activations(pybind11::module_& m);  // activations, prelu, column_sum, softmax
void bind_losses(pybind11::module_& m);
void bind_dropout(pybind11::module_& m);
void bind_optim(pybind11::module_& m);
void bind_engine(pybind11::module_& m);

}  // namespace fastmlp::bind
