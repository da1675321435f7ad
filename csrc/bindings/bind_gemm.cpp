// _core.gemm: the fused GEMM of cpu/gemm.h on NumPy arrays. Every argument is checked again here
// (fastmlp.ops converts first), then the GIL is released around the kernel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "common/errors.h"
#include "cpu/gemm.h"

namespace fastmlp::bind {
namespace {

namespace py = pybind11;

struct NamedActivation {
  const char* name;
  Activation kind;
};
constexpr NamedActivation kActivations[] = {
    {"identity", Activation::Identity},
    {"relu", Activation::Relu},
    {"leaky_relu", Activation::LeakyRelu},
    {"prelu", Activation::Prelu},
    {"elu", Activation::Elu},
    {"sigmoid", Activation::Sigmoid},
    {"tanh", Activation::Tanh},
};

Activation parse_activation(const std::string& name) {
  std::string known;
  for (const auto& a : kActivations) {
    if (name == a.name) return a.kind;
    known += known.empty() ? "" : ", ";
    known += std::string("'") + a.name + "'";
  }
  throw ValueError("activation: unknown '" + name + "'; known: " + known);
}

// a and b checked as 2-D C-contiguous float32 whose op()s can be multiplied: op(a) (m, k) and
// op(b) (k, n).
struct Operands {
  const float* a;
  const float* b;
  int64_t m, n, k;
};

Operands check_operands(const py::array& a, const py::array& b, bool trans_a, bool trans_b) {
  Operands ab;
  ab.a = in_f32(a, "a", 2);
  ab.b = in_f32(b, "b", 2);
  ab.m = trans_a ? a.shape(1) : a.shape(0);
  ab.k = trans_a ? a.shape(0) : a.shape(1);
  const int64_t kb = trans_b ? b.shape(1) : b.shape(0);
  ab.n = trans_b ? b.shape(0) : b.shape(1);
  FASTMLP_CHECK(kb == ab.k, "b: expected ", ab.k,
                " rows in op(b) to match the columns of op(a), got ", kb);
  return ab;
}

void gemm_py(py::array c, const py::array& a, const py::array& b, bool trans_a, bool trans_b,
             float alpha, float beta, const std::optional<py::array>& bias,
             const std::string& activation, float activation_alpha,
             std::optional<py::array> preactivation) {
  const Operands ab = check_operands(a, b, trans_a, trans_b);
  float* pc = out_f32(c, "c", 2);
  check_shape(c, "c", {ab.m, ab.n});
  // Every output (c, preactivation) is checked against every input it could overlap (a, b,
  // bias) and against the other output.
  check_no_overlap(c, "c", a, "a");
  check_no_overlap(c, "c", b, "b");

  GemmEpilogue epi;
  epi.activation = parse_activation(activation);
  epi.activation_alpha = activation_alpha;
  if (bias) {
    epi.bias = in_f32(*bias, "bias", 1);
    check_shape(*bias, "bias", {ab.n});
    check_no_overlap(c, "c", *bias, "bias");
  }
  if (preactivation) {
    epi.preactivation = out_f32(*preactivation, "preactivation", 2);
    check_shape(*preactivation, "preactivation", {ab.m, ab.n});
    check_no_overlap(*preactivation, "preactivation", a, "a");
    check_no_overlap(*preactivation, "preactivation", b, "b");
    if (bias) check_no_overlap(*preactivation, "preactivation", *bias, "bias");
    // gemm.h: preactivation may alias c (exactly) for the identity activation only.
    FASTMLP_CHECK(epi.activation == Activation::Identity || !overlaps(*preactivation, c),
                  "preactivation: may share memory with c only for the identity activation");
    check_no_overlap(*preactivation, "preactivation", c, "c", /*exact_alias_ok=*/true);
  }
  // The kernel reads C only when beta != 0; with beta == 0 it may hold anything.
  py::gil_scoped_release release;
  gemm(trans_a, trans_b, ab.m, ab.n, ab.k, alpha, ab.a, a.shape(1), ab.b, b.shape(1), beta, pc,
       ab.n, epi);
}

// alpha * op(a) @ op(b) + beta * out: fastmlp.ops.matmul's call, in one C++ call with positional
// arguments. out is None (a new array; beta must then be 0) or a NumPy array that ops.matmul has
// checked with as_inplace (checked again here); its shape and its overlap with a and b are
// checked here only. A 2 x 2 product with out= took 4.9 us from ops.matmul through
// gemm() (keyword parsing, np.may_share_memory twice) and takes 3.2 us this way (NumPy: 1.3 us).
py::array matmul_py(const py::array& a, const py::array& b, bool trans_a, bool trans_b, float alpha,
                    std::optional<py::array> out, float beta) {
  const Operands ab = check_operands(a, b, trans_a, trans_b);
  py::array c;
  float* pc = nullptr;
  if (out) {
    c = std::move(*out);
    pc = out_f32(c, "out", 2);
    check_shape(c, "out", {ab.m, ab.n});
    check_no_overlap(c, "out", a, "a");
    check_no_overlap(c, "out", b, "b");
  } else {
    FASTMLP_CHECK(beta == 0.0f, "beta: ", beta, " scales out, so out= must be given");
    py::array_t<float> fresh = new_f32({ab.m, ab.n});
    pc = fresh.mutable_data();
    c = std::move(fresh);
  }
  {
    py::gil_scoped_release release;
    gemm(trans_a, trans_b, ab.m, ab.n, ab.k, alpha, ab.a, a.shape(1), ab.b, b.shape(1), beta, pc,
         ab.n, GemmEpilogue{});
  }
  return c;
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("matmul", &matmul_py, py::arg("a"), py::arg("b"), py::arg("trans_a"), py::arg("trans_b"),
        py::arg("alpha"), py::arg("out"), py::arg("beta"),
        "alpha * op(a) @ op(b) + beta * out, written into out (returned) or, when out is None, "
        "into a new float32 array (beta must then be 0). a, b and out are C-contiguous float32, "
        "op(x) is x.T when trans_x; out may not overlap a or b, and with beta == 0 it is not "
        "read. Arguments are positional for speed (see fastmlp.ops.matmul).");
  m.def("gemm", &gemm_py, py::arg("c"), py::arg("a"), py::arg("b"), py::kw_only(),
        py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("alpha") = 1.0f,
        py::arg("beta") = 0.0f, py::arg("bias") = py::none(), py::arg("activation") = "identity",
        py::arg("activation_alpha") = 0.0f, py::arg("preactivation") = py::none(),
        "c = act(alpha * op(a) @ op(b) + beta * c + bias), in place. a, b, c, bias and "
        "preactivation are C-contiguous float32; op(x) is x.T when trans_x. With beta == 0, c is "
        "not read. preactivation, if given, receives the value before the activation.");
}

}  // namespace fastmlp::bind
