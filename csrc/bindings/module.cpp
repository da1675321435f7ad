// fastmlp._core: the CPU kernels and the engine. Argument checks and GIL release live in the
// bind_<family>.cpp files; this file registers them, the exceptions and the build information.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "common/errors.h"
#include "common/threading.h"
#include "cpu/cpu_features.h"

#ifndef FASTMLP_COMPILER
#define FASTMLP_COMPILER "unknown"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastmlp compiled core: CPU kernels (AVX2/FMA, OpenMP) and the training engine.";

  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastmlp::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const fastmlp::NonFiniteError& e) {
      PyErr_SetString(PyExc_FloatingPointError, e.what());
    } catch (const fastmlp::OutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  m.attr("__version__") = FASTMLP_VERSION;
  m.def("_build_info", [] {
    py::dict info;
    info["version"] = FASTMLP_VERSION;
    info["compiler"] = FASTMLP_COMPILER;
    info["simd"] = fastmlp::simd_level();
    info["avx512f_cpu"] = fastmlp::cpu_has_avx512f();
    info["openmp"] = fastmlp::openmp_enabled();
    info["num_threads"] = fastmlp::num_threads();
    return info;
  });
  m.def("set_num_threads", &fastmlp::set_num_threads, py::arg("n"),
        "Set the number of threads every fastmlp kernel uses (1..MAX_THREADS).");
  m.attr("MAX_THREADS") = fastmlp::kMaxThreads;
  m.def("get_num_threads", &fastmlp::num_threads, "Number of threads fastmlp kernels use.");

  fastmlp::bind::bind_gemm(m);
  fastmlp::bind::bind_activations(m);
  fastmlp::bind::bind_losses(m);
  fastmlp::bind::bind_dropout(m);
  fastmlp::bind::bind_optim(m);
  fastmlp::bind::bind_engine(m);
}
