// Bindings for the elementwise activations, PReLU, column_sum and the row softmaxes
// (cpu/activations.h, cpu/softmax.h). Each function checks its arrays (arrays.h), allocates its
// outputs while it holds the GIL, then releases the GIL around the kernel. Activations are passed
// as the int value of fastmlp::Activation; ACTIVATION_KINDS maps the names to those values.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "common/activation_math.h"
#include "common/errors.h"
#include "cpu/activations.h"
#include "cpu/softmax.h"

namespace fastmlp::bind {
namespace {

Activation to_activation(int kind) {
  FASTMLP_CHECK(
      kind >= static_cast<int>(Activation::Identity) && kind <= static_cast<int>(Activation::Tanh),
      "kind: unknown activation enum value ", kind, "; expected 0..6 (see ACTIVATION_KINDS)");
  return static_cast<Activation>(kind);
}

std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

// ValueError unless b has exactly the shape of a (any ndim).
void check_same_shape(const py::array& a, const char* a_name, const py::array& b,
                      const char* b_name) {
  bool same = a.ndim() == b.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
  if (!same) {
    throw ValueError(detail::concat(b_name, ": expected the shape of ", a_name, " ", shape_str(a),
                                    ", got ", shape_str(b)));
  }
}

py::array_t<float> activation_forward_py(const py::array& x, int kind, float alpha) {
  const Activation k = to_activation(kind);
  const float* xp = in_f32(x, "x");
  py::array_t<float> y(shape_of(x));
  float* yp = y.mutable_data();
  const int64_t n = x.size();
  {
    py::gil_scoped_release nogil;
    activation_forward(yp, xp, n, k, alpha);
  }
  return y;
}

py::array_t<float> activation_backward_py(const py::array& x, const py::array& y,
                                          const py::array& dy, int kind, float alpha) {
  const Activation k = to_activation(kind);
  const float* xp = in_f32(x, "x");
  const float* yp = in_f32(y, "y");
  const float* dyp = in_f32(dy, "dy");
  check_same_shape(x, "x", y, "y");
  check_same_shape(x, "x", dy, "dy");
  py::array_t<float> dx(shape_of(x));
  float* dxp = dx.mutable_data();
  const int64_t n = x.size();
  {
    py::gil_scoped_release nogil;
    activation_backward(dxp, xp, yp, dyp, n, k, alpha);
  }
  return dx;
}

// slope must be (1,) or (cols,) for an x of shape (rows, cols).
const float* checked_slope(const py::array& slope, int64_t cols) {
  const float* sp = in_f32(slope, "slope", 1);
  FASTMLP_CHECK(slope.shape(0) == 1 || slope.shape(0) == cols, "slope: expected shape (1,) or (",
                cols, ",) (one slope, or one per column of x), got ", shape_str(slope));
  return sp;
}

py::array_t<float> prelu_forward_py(const py::array& x, const py::array& slope) {
  const float* xp = in_f32(x, "x", 2);
  const int64_t rows = x.shape(0), cols = x.shape(1);
  const float* sp = checked_slope(slope, cols);
  const int64_t n_slope = slope.shape(0);
  py::array_t<float> y(shape_of(x));
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    prelu_forward(yp, xp, sp, rows, cols, n_slope);
  }
  return y;
}

py::tuple prelu_backward_py(const py::array& x, const py::array& slope, const py::array& dy) {
  const float* xp = in_f32(x, "x", 2);
  const int64_t rows = x.shape(0), cols = x.shape(1);
  const float* sp = checked_slope(slope, cols);
  const int64_t n_slope = slope.shape(0);
  const float* dyp = in_f32(dy, "dy", 2);
  check_same_shape(x, "x", dy, "dy");
  py::array_t<float> dx(shape_of(x));
  py::array_t<float> dslope(std::vector<py::ssize_t>{static_cast<py::ssize_t>(n_slope)});
  float* dxp = dx.mutable_data();
  float* dsp = dslope.mutable_data();
  {
    py::gil_scoped_release nogil;
    prelu_backward(dxp, dsp, xp, sp, dyp, rows, cols, n_slope);
  }
  return py::make_tuple(dx, dslope);
}

py::array_t<float> column_sum_py(const py::array& x) {
  const float* xp = in_f32(x, "x", 2);
  const int64_t rows = x.shape(0), cols = x.shape(1);
  py::array_t<float> out(std::vector<py::ssize_t>{static_cast<py::ssize_t>(cols)});
  float* op = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    column_sum(op, xp, rows, cols);
  }
  return out;
}

using RowKernel = void (*)(float*, const float*, int64_t, int64_t);
using RowBackwardKernel = void (*)(float*, const float*, const float*, int64_t, int64_t);

py::array_t<float> row_forward(RowKernel kernel, const py::array& x) {
  const float* xp = in_f32(x, "x", 2);
  const int64_t rows = x.shape(0), cols = x.shape(1);
  py::array_t<float> y(shape_of(x));
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    kernel(yp, xp, rows, cols);
  }
  return y;
}

py::array_t<float> row_backward(RowBackwardKernel kernel, const py::array& y, const py::array& dy) {
  const float* yp = in_f32(y, "y", 2);
  const float* dyp = in_f32(dy, "dy", 2);
  check_same_shape(y, "y", dy, "dy");
  const int64_t rows = y.shape(0), cols = y.shape(1);
  py::array_t<float> dx(shape_of(y));
  float* dxp = dx.mutable_data();
  {
    py::gil_scoped_release nogil;
    kernel(dxp, yp, dyp, rows, cols);
  }
  return dx;
}

}  // namespace

void bind_activations(py::module_& m) {
  py::dict kinds;
  kinds["identity"] = static_cast<int>(Activation::Identity);
  kinds["relu"] = static_cast<int>(Activation::Relu);
  kinds["leaky_relu"] = static_cast<int>(Activation::LeakyRelu);
  kinds["prelu"] = static_cast<int>(Activation::Prelu);
  kinds["elu"] = static_cast<int>(Activation::Elu);
  kinds["sigmoid"] = static_cast<int>(Activation::Sigmoid);
  kinds["tanh"] = static_cast<int>(Activation::Tanh);
  m.attr("ACTIVATION_KINDS") = kinds;

  m.def("activation_forward", &activation_forward_py, py::arg("x"), py::arg("kind"),
        py::arg("alpha"), "y = f(x) elementwise; x float32 C-contiguous, any shape.");
  m.def("activation_backward", &activation_backward_py, py::arg("x"), py::arg("y"), py::arg("dy"),
        py::arg("kind"), py::arg("alpha"), "dx = dy * f'(x), given y = f(x); same shapes.");
  m.def("prelu_forward", &prelu_forward_py, py::arg("x"), py::arg("slope"),
        "PReLU: x (rows, cols), slope (1,) or (cols,).");
  m.def("prelu_backward", &prelu_backward_py, py::arg("x"), py::arg("slope"), py::arg("dy"),
        "Returns (dx, dslope) for PReLU.");
  m.def("column_sum", &column_sum_py, py::arg("x"),
        "out[j] = sum_i x[i, j]; thread-count independent.");
  m.def(
      "softmax_forward", [](const py::array& x) { return row_forward(&softmax_forward, x); },
      py::arg("x"), "Row-wise softmax of a 2-D float32 array.");
  m.def(
      "log_softmax_forward",
      [](const py::array& x) { return row_forward(&log_softmax_forward, x); }, py::arg("x"),
      "Row-wise log-softmax of a 2-D float32 array.");
  m.def(
      "softmax_backward",
      [](const py::array& y, const py::array& dy) {
        return row_backward(&softmax_backward, y, dy);
      },
      py::arg("y"), py::arg("dy"), "dx = y * (dy - sum(dy * y)) per row, given y = softmax(x).");
  m.def(
      "log_softmax_backward",
      [](const py::array& y, const py::array& dy) {
        return row_backward(&log_softmax_backward, y, dy);
      },
      py::arg("y"), py::arg("dy"), "dx = dy - exp(y) * sum(dy) per row, given y = log_softmax(x).");
}

}  // namespace fastmlp::bind
