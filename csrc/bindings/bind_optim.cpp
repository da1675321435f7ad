// _core.sgd_step / adagrad_step / rmsprop_step / adam_step: in-place optimizer updates on float32
// arrays. Every array is checked (dtype, contiguity, writability, shape equal to param's, no
// overlap between buffers: check_apart) before the GIL is released; the hyper-parameters are
// validated by the kernels (cpu/optim.cpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "common/errors.h"
#include "cpu/optim.h"

namespace fastmlp::bind {
namespace {

void check_like_param(const py::array& a, const char* name, const py::array& param) {
  bool same = a.ndim() == param.ndim();
  for (py::ssize_t d = 0; same && d < a.ndim(); ++d) same = a.shape(d) == param.shape(d);
  if (!same) {
    throw ValueError(detail::concat(name, ": expected the shape of param ", shape_str(param),
                                    ", got ", shape_str(a)));
  }
}

// A state buffer updated in place: float32, C-contiguous, writable, shaped like param.
float* state_buffer(py::array& a, const char* name, const py::array& param) {
  float* ptr = out_f32(a, name);
  check_like_param(a, name, param);
  return ptr;
}

// An optional state buffer: None gives nullptr (the kernel says whether it was required).
float* optional_state_buffer(const py::object& obj, py::array& holder, const char* name,
                             const py::array& param) {
  if (obj.is_none()) return nullptr;
  if (!py::isinstance<py::array>(obj)) {
    throw TypeError(
        detail::concat(name, ": expected a NumPy array or None, got ",
                       py::str(py::type::of(obj).attr("__name__")).cast<std::string>()));
  }
  holder = py::reinterpret_borrow<py::array>(obj);
  return state_buffer(holder, name, param);
}

const float* grad_input(const py::array& grad, const py::array& param) {
  const float* ptr = in_f32(grad, "grad");
  check_like_param(grad, "grad", param);
  return ptr;
}

// An array the step writes (param or a state buffer), or nullptr for an absent optional one.
struct Written {
  const py::array* array;
  const char* name;
};

// cpu/optim.cpp: param and the state buffers are written, so none may overlap another; grad is
// only read and may be param itself (each element is read before it is written), but no shifted
// view of it nor any part of a state buffer (fastmlp.ops copies such a grad first).
void check_apart(std::initializer_list<Written> written, const py::array& grad) {
  for (auto w = written.begin(); w != written.end(); ++w) {
    if (w->array == nullptr) continue;
    for (auto prev = written.begin(); prev != w; ++prev) {
      if (prev->array != nullptr) check_no_overlap(*w->array, w->name, *prev->array, prev->name);
    }
    const bool is_param = w == written.begin();
    check_no_overlap(grad, "grad", *w->array, w->name, /*exact_alias_ok=*/is_param);
  }
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def(
      "sgd_step",
      [](py::array param, py::object momentum_buffer, py::array grad, float lr, float momentum,
         float dampening, bool nesterov, float weight_decay, float l1, int64_t step) {
        float* p = out_f32(param, "param");
        py::array buf_holder;
        float* b = optional_state_buffer(momentum_buffer, buf_holder, "momentum_buffer", param);
        const float* g = grad_input(grad, param);
        check_apart({{&param, "param"},
                     {momentum_buffer.is_none() ? nullptr : &buf_holder, "momentum_buffer"}},
                    grad);
        const auto n = static_cast<int64_t>(param.size());
        SgdConfig config;
        config.lr = lr;
        config.momentum = momentum;
        config.dampening = dampening;
        config.nesterov = nesterov;
        config.weight_decay = weight_decay;
        config.l1 = l1;
        py::gil_scoped_release release;
        sgd_step(p, b, g, n, config, step);
      },
      py::arg("param"), py::arg("momentum_buffer"), py::arg("grad"), py::kw_only(), py::arg("lr"),
      py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"), py::arg("weight_decay"),
      py::arg("l1"), py::arg("step"),
      "In-place SGD step (torch.optim.SGD rule, plus L1); see fastmlp.ops.sgd_step.");

  m.def(
      "adagrad_step",
      [](py::array param, py::array sum_sq, py::array grad, float lr, float lr_decay,
         float weight_decay, float eps, float l1, int64_t step) {
        float* p = out_f32(param, "param");
        float* s = state_buffer(sum_sq, "sum_sq", param);
        const float* g = grad_input(grad, param);
        check_apart({{&param, "param"}, {&sum_sq, "sum_sq"}}, grad);
        const auto n = static_cast<int64_t>(param.size());
        AdagradConfig config;
        config.lr = lr;
        config.lr_decay = lr_decay;
        config.weight_decay = weight_decay;
        config.eps = eps;
        config.l1 = l1;
        py::gil_scoped_release release;
        adagrad_step(p, s, g, n, config, step);
      },
      py::arg("param"), py::arg("sum_sq"), py::arg("grad"), py::kw_only(), py::arg("lr"),
      py::arg("lr_decay"), py::arg("weight_decay"), py::arg("eps"), py::arg("l1"), py::arg("step"),
      "In-place AdaGrad step (torch.optim.Adagrad rule, plus L1); see fastmlp.ops.adagrad_step.");

  m.def(
      "rmsprop_step",
      [](py::array param, py::array square_avg, py::object momentum_buffer, py::object grad_avg,
         py::array grad, float lr, float alpha, float eps, float weight_decay, float momentum,
         bool centered, float l1, int64_t step) {
        float* p = out_f32(param, "param");
        float* v = state_buffer(square_avg, "square_avg", param);
        py::array buf_holder, avg_holder;
        float* b = optional_state_buffer(momentum_buffer, buf_holder, "momentum_buffer", param);
        float* a = optional_state_buffer(grad_avg, avg_holder, "grad_avg", param);
        const float* g = grad_input(grad, param);
        check_apart({{&param, "param"},
                     {&square_avg, "square_avg"},
                     {momentum_buffer.is_none() ? nullptr : &buf_holder, "momentum_buffer"},
                     {grad_avg.is_none() ? nullptr : &avg_holder, "grad_avg"}},
                    grad);
        const auto n = static_cast<int64_t>(param.size());
        RmspropConfig config;
        config.lr = lr;
        config.alpha = alpha;
        config.eps = eps;
        config.weight_decay = weight_decay;
        config.momentum = momentum;
        config.centered = centered;
        config.l1 = l1;
        py::gil_scoped_release release;
        rmsprop_step(p, v, b, a, g, n, config, step);
      },
      py::arg("param"), py::arg("square_avg"), py::arg("momentum_buffer"), py::arg("grad_avg"),
      py::arg("grad"), py::kw_only(), py::arg("lr"), py::arg("alpha"), py::arg("eps"),
      py::arg("weight_decay"), py::arg("momentum"), py::arg("centered"), py::arg("l1"),
      py::arg("step"),
      "In-place RMSprop step (torch.optim.RMSprop rule, plus L1); see fastmlp.ops.rmsprop_step.");

  m.def(
      "adam_step",
      [](py::array param, py::array exp_avg, py::array exp_avg_sq, py::array grad, double lr,
         float beta1, float beta2, float eps, double weight_decay, bool decoupled_weight_decay,
         float l1, int64_t step) {
        float* p = out_f32(param, "param");
        float* mm = state_buffer(exp_avg, "m", param);
        float* vv = state_buffer(exp_avg_sq, "v", param);
        const float* g = grad_input(grad, param);
        check_apart({{&param, "param"}, {&exp_avg, "m"}, {&exp_avg_sq, "v"}}, grad);
        const auto n = static_cast<int64_t>(param.size());
        AdamConfig config;
        config.lr = lr;
        config.beta1 = beta1;
        config.beta2 = beta2;
        config.eps = eps;
        config.weight_decay = weight_decay;
        config.decoupled_weight_decay = decoupled_weight_decay;
        config.l1 = l1;
        py::gil_scoped_release release;
        adam_step(p, mm, vv, g, n, config, step);
      },
      py::arg("param"), py::arg("m"), py::arg("v"), py::arg("grad"), py::kw_only(), py::arg("lr"),
      py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
      py::arg("decoupled_weight_decay"), py::arg("l1"), py::arg("step"),
      "In-place Adam / AdamW step (torch.optim.Adam / AdamW rule, plus L1); see "
      "fastmlp.ops.adam_step and fastmlp.ops.adamw_step.");
}

}  // namespace fastmlp::bind
