// _cuda ops: the kernels of csrc/cuda/kernels.h on DeviceBuffers. fastmlp.ops / fastmlp.cuda check
// dtypes, shapes and values first and pass the sizes; here every buffer is checked again to be
// large enough for them (need()), so a bug in the Python layer raises instead of reading out of
// bounds. All kernels run on the legacy default stream, after the GIL is released.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "bindings/cuda_bindings.h"
#include "common/activation_math.h"
#include "common/errors.h"
#include "cpu/gemm.h"
#include "cpu/optim.h"
#include "cuda/kernels.h"
#include "cuda/memory.h"

namespace py = pybind11;

namespace fastmlp::bind {
namespace {

using cuda::DeviceBuffer;
using OptBuf = DeviceBuffer*;  // None -> nullptr: an optional buffer
using BufList = std::vector<DeviceBuffer*>;

constexpr cudaStream_t kStream = nullptr;  // legacy default stream (see fastmlp/cuda.py)

Activation to_activation(int kind) {
  FASTMLP_CHECK(kind >= 0 && kind <= static_cast<int>(Activation::Tanh),
                "activation: unknown kind ", kind);
  return static_cast<Activation>(kind);
}

float* opt_f32(OptBuf b, int64_t count, const char* name) {
  return b != nullptr ? need_f32(*b, count, name) : nullptr;
}

void gemm_py(DeviceBuffer& c, const DeviceBuffer& a, const DeviceBuffer& b, int64_t m, int64_t n,
             int64_t k, bool trans_a, bool trans_b, float alpha, float beta, OptBuf bias,
             int activation, float activation_alpha, OptBuf preactivation, bool tf32) {
  FASTMLP_CHECK(m >= 0 && n >= 0 && k >= 0, "m, n, k: expected >= 0");
  const float* pa = need_f32(a, m * k, "a");
  const float* pb = need_f32(b, k * n, "b");
  float* pc = need_f32(c, m * n, "c");
  GemmEpilogue epi;
  epi.bias = opt_f32(bias, n, "bias");
  epi.activation = to_activation(activation);
  epi.activation_alpha = activation_alpha;
  epi.preactivation = opt_f32(preactivation, m * n, "preactivation");
  // Buffers are whole allocations (DeviceArray views share the start), so overlap is equality;
  // empty buffers are null and overlap nothing.
  FASTMLP_CHECK(pc == nullptr || (pc != pa && pc != pb && pc != epi.bias),
                "c: must not share memory with a, b or bias");
  FASTMLP_CHECK(
      epi.preactivation == nullptr ||
          (epi.preactivation != pa && epi.preactivation != pb && epi.preactivation != epi.bias),
      "preactivation: must not share memory with a, b or bias");
  FASTMLP_CHECK(epi.preactivation == nullptr || epi.preactivation != pc ||
                    epi.activation == Activation::Identity,
                "preactivation: may share memory with c only for the identity activation");
  const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n, ldc = n;
  py::gil_scoped_release release;
  if (tf32) {
    cuda::gemm_tf32(trans_a, trans_b, m, n, k, alpha, pa, lda > 0 ? lda : 1, pb, ldb > 0 ? ldb : 1,
                    beta, pc, ldc > 0 ? ldc : 1, epi, kStream);
  } else {
    cuda::gemm(trans_a, trans_b, m, n, k, alpha, pa, lda > 0 ? lda : 1, pb, ldb > 0 ? ldb : 1, beta,
               pc, ldc > 0 ? ldc : 1, epi, kStream);
  }
}

// Optimizer tensor lists: params[i], grads[i] and the state lists' [i] all hold sizes[i] floats.
std::vector<cuda::OptimTensor> tensor_list(const BufList& params, const BufList& grads,
                                           const std::vector<int64_t>& sizes,
                                           const std::optional<BufList>& s0, const char* s0_name,
                                           const std::optional<BufList>& s1, const char* s1_name,
                                           const std::optional<BufList>& s2, const char* s2_name) {
  const size_t count = params.size();
  FASTMLP_CHECK(grads.size() == count && sizes.size() == count, "grads: expected ", count,
                " gradients and sizes (one per param), got ", grads.size(), " and ", sizes.size());
  auto check_len = [&](const std::optional<BufList>& s, const char* name) {
    FASTMLP_CHECK(!s || s->size() == count, name, ": expected ", count, " buffers, got ",
                  s ? s->size() : 0);
  };
  check_len(s0, s0_name);
  check_len(s1, s1_name);
  check_len(s2, s2_name);
  std::vector<cuda::OptimTensor> out(count);
  for (size_t i = 0; i < count; ++i) {
    FASTMLP_CHECK(params[i] != nullptr && grads[i] != nullptr, "params: None in the list");
    cuda::OptimTensor& t = out[i];
    t.n = sizes[i];
    t.param = need_f32(*params[i], t.n, "param");
    t.grad = need_f32(*grads[i], t.n, "grad");
    auto state = [&](const std::optional<BufList>& s, const char* name) -> float* {
      if (!s || (*s)[i] == nullptr) return nullptr;
      return need_f32(*(*s)[i], t.n, name);
    };
    t.state0 = state(s0, s0_name);
    t.state1 = state(s1, s1_name);
    t.state2 = state(s2, s2_name);
  }
  return out;
}

// The FusedMlp of the fused_mlp_* bindings: every list length and buffer size checked against
// `sizes` (widths D_0..D_L) before anything is launched; the limits are the launchers' own.
cuda::FusedMlp fused_net(const BufList& weights, const BufList* biases,
                         const std::vector<int64_t>& sizes, const std::vector<int>& activations,
                         const std::vector<float>& alphas, const BufList& prelu_slopes) {
  const size_t layers = weights.size();
  FASTMLP_CHECK(layers >= 1 && layers <= static_cast<size_t>(cuda::kFusedMlpMaxLayers),
                "weights: expected 1 to ", cuda::kFusedMlpMaxLayers, " layers, got ", layers);
  FASTMLP_CHECK(sizes.size() == layers + 1, "sizes: expected ", layers + 1,
                " widths (one more than the layers), got ", sizes.size());
  for (const int64_t d : sizes) {
    FASTMLP_CHECK(d >= 1 && d <= cuda::kFusedMlpMaxWidth, "sizes: every width must be in [1, ",
                  cuda::kFusedMlpMaxWidth, "], got ", d);
  }
  const size_t hidden = layers - 1;
  FASTMLP_CHECK(activations.size() == hidden, "activations: expected ", hidden,
                " (one per hidden layer), got ", activations.size());
  FASTMLP_CHECK(alphas.size() == hidden, "alphas: expected ", hidden, ", got ", alphas.size());
  FASTMLP_CHECK(prelu_slopes.size() == hidden, "prelu_slopes: expected ", hidden,
                " (None where unused), got ", prelu_slopes.size());
  FASTMLP_CHECK(biases == nullptr || biases->size() == layers, "biases: expected ", layers,
                " (None for no bias), got ", biases == nullptr ? 0 : biases->size());
  cuda::FusedMlp net;
  net.widths = sizes;
  for (size_t l = 0; l < layers; ++l) {
    FASTMLP_CHECK(weights[l] != nullptr, "weights: None in the list");
    net.weights.push_back(need_f32(*weights[l], sizes[l] * sizes[l + 1], "weights"));
    if (biases != nullptr) net.biases.push_back(opt_f32((*biases)[l], sizes[l + 1], "biases"));
  }
  for (size_t h = 0; h < hidden; ++h) {
    net.activations.push_back(to_activation(activations[h]));
    net.alphas.push_back(alphas[h]);
    net.prelu_slopes.push_back(opt_f32(prelu_slopes[h], 1, "prelu_slopes"));
  }
  return net;
}

}  // namespace

void bind_cuda_ops(py::module_& m) {
  m.def(
      "gather_rows",
      [](DeviceBuffer& dst, const DeviceBuffer& src, const DeviceBuffer& index,
         int64_t index_offset, int64_t rows, int64_t src_rows, int64_t row_bytes) {
        FASTMLP_CHECK(rows >= 0 && src_rows >= 0 && row_bytes >= 0 && index_offset >= 0,
                      "gather_rows: negative size or offset");
        void* pd = need(dst, rows * row_bytes, 1, "dst");
        const void* ps = need(src, src_rows * row_bytes, 1, "src");
        const void* pindex = need(index, index_offset + rows, sizeof(int64_t), "index");
        const int64_t* pi = static_cast<const int64_t*>(pindex) + index_offset;
        py::gil_scoped_release release;
        cuda::gather_rows(pd, ps, pi, rows, row_bytes, kStream);
      },
      py::arg("dst"), py::arg("src"), py::arg("index"), py::arg("index_offset"), py::arg("rows"),
      py::arg("src_rows"), py::arg("row_bytes"),
      "dst rows = src rows at index[index_offset:index_offset + rows] (int64, each in [0, "
      "src_rows): the caller's permutation), rows of row_bytes bytes.");
  m.def("gemm", &gemm_py, py::arg("c"), py::arg("a"), py::arg("b"), py::arg("m"), py::arg("n"),
        py::arg("k"), py::kw_only(), py::arg("trans_a") = false, py::arg("trans_b") = false,
        py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f, py::arg("bias") = py::none(),
        py::arg("activation") = 0, py::arg("activation_alpha") = 0.0f,
        py::arg("preactivation") = py::none(), py::arg("tf32") = false,
        "c = act(alpha * op(a) @ op(b) + beta * c + bias) on contiguous device buffers.");

  // ------------------------------------------------------------ activations
  m.def(
      "activation_forward",
      [](DeviceBuffer& y, const DeviceBuffer& x, int64_t n, int kind, float alpha) {
        float* py_ = need_f32(y, n, "y");
        const float* px = need_f32(x, n, "x");
        const Activation k = to_activation(kind);
        py::gil_scoped_release release;
        cuda::activation_forward(py_, px, n, k, alpha, kStream);
      },
      py::arg("y"), py::arg("x"), py::arg("n"), py::arg("kind"), py::arg("alpha"));
  m.def(
      "activation_backward",
      [](DeviceBuffer& dx, const DeviceBuffer& x, const DeviceBuffer& y, const DeviceBuffer& dy,
         int64_t n, int kind, float alpha) {
        float* pdx = need_f32(dx, n, "dx");
        const float* px = need_f32(x, n, "x");
        const float* py_ = need_f32(y, n, "y");
        const float* pdy = need_f32(dy, n, "dy");
        const Activation k = to_activation(kind);
        py::gil_scoped_release release;
        cuda::activation_backward(pdx, px, py_, pdy, n, k, alpha, kStream);
      },
      py::arg("dx"), py::arg("x"), py::arg("y"), py::arg("dy"), py::arg("n"), py::arg("kind"),
      py::arg("alpha"));
  m.def(
      "prelu_forward",
      [](DeviceBuffer& y, const DeviceBuffer& x, const DeviceBuffer& slope, int64_t rows,
         int64_t cols, int64_t n_slope) {
        float* py_ = need_f32(y, rows * cols, "y");
        const float* px = need_f32(x, rows * cols, "x");
        const float* ps = need_f32(slope, n_slope, "slope");
        py::gil_scoped_release release;
        cuda::prelu_forward(py_, px, ps, rows, cols, n_slope, kStream);
      },
      py::arg("y"), py::arg("x"), py::arg("slope"), py::arg("rows"), py::arg("cols"),
      py::arg("n_slope"));
  m.def(
      "prelu_backward",
      [](DeviceBuffer& dx, DeviceBuffer& dslope, const DeviceBuffer& x, const DeviceBuffer& slope,
         const DeviceBuffer& dy, int64_t rows, int64_t cols, int64_t n_slope) {
        float* pdx = need_f32(dx, rows * cols, "dx");
        float* pds = need_f32(dslope, n_slope, "dslope");
        const float* px = need_f32(x, rows * cols, "x");
        const float* ps = need_f32(slope, n_slope, "slope");
        const float* pdy = need_f32(dy, rows * cols, "dy");
        py::gil_scoped_release release;
        cuda::prelu_backward(pdx, pds, px, ps, pdy, rows, cols, n_slope, kStream);
      },
      py::arg("dx"), py::arg("dslope"), py::arg("x"), py::arg("slope"), py::arg("dy"),
      py::arg("rows"), py::arg("cols"), py::arg("n_slope"));
  m.def(
      "column_sum",
      [](DeviceBuffer& out, const DeviceBuffer& x, int64_t rows, int64_t cols) {
        float* po = need_f32(out, cols, "out");
        const float* px = need_f32(x, rows * cols, "x");
        py::gil_scoped_release release;
        cuda::column_sum(po, px, rows, cols, kStream);
      },
      py::arg("out"), py::arg("x"), py::arg("rows"), py::arg("cols"));

  // ------------------------------------------------------------ softmax
  using RowFn = void (*)(float*, const float*, int64_t, int64_t, cudaStream_t);
  using RowBwdFn = void (*)(float*, const float*, const float*, int64_t, int64_t, cudaStream_t);
  auto def_row = [&m](const char* name, RowFn fn) {
    m.def(
        name,
        [fn](DeviceBuffer& y, const DeviceBuffer& x, int64_t rows, int64_t cols) {
          float* py_ = need_f32(y, rows * cols, "y");
          const float* px = need_f32(x, rows * cols, "x");
          py::gil_scoped_release release;
          fn(py_, px, rows, cols, kStream);
        },
        py::arg("y"), py::arg("x"), py::arg("rows"), py::arg("cols"));
  };
  auto def_row_bwd = [&m](const char* name, RowBwdFn fn) {
    m.def(
        name,
        [fn](DeviceBuffer& dx, const DeviceBuffer& y, const DeviceBuffer& dy, int64_t rows,
             int64_t cols) {
          float* pdx = need_f32(dx, rows * cols, "dx");
          const float* py_ = need_f32(y, rows * cols, "y");
          const float* pdy = need_f32(dy, rows * cols, "dy");
          py::gil_scoped_release release;
          fn(pdx, py_, pdy, rows, cols, kStream);
        },
        py::arg("dx"), py::arg("y"), py::arg("dy"), py::arg("rows"), py::arg("cols"));
  };
  def_row("softmax_forward", &cuda::softmax_forward);
  def_row("log_softmax_forward", &cuda::log_softmax_forward);
  def_row_bwd("softmax_backward", &cuda::softmax_backward);
  def_row_bwd("log_softmax_backward", &cuda::log_softmax_backward);

  // ------------------------------------------------------------ losses
  m.def(
      "softmax_cross_entropy",
      [](OptBuf dlogits, const DeviceBuffer& logits, const DeviceBuffer& labels, int64_t batch,
         int64_t classes, float label_smoothing) {
        float* pd = opt_f32(dlogits, batch * classes, "dlogits");
        const float* pz = need_f32(logits, batch * classes, "logits");
        const auto* pl = static_cast<const int64_t*>(need(labels, batch, 8, "labels"));
        py::gil_scoped_release release;
        FASTMLP_CHECK(!cuda::labels_out_of_range(pl, batch, classes, kStream),
                      "labels: a label is out of range [0, ", classes, ")");
        return cuda::softmax_cross_entropy(pd, pz, pl, batch, classes, label_smoothing, "labels",
                                           kStream);
      },
      py::arg("dlogits"), py::arg("logits"), py::arg("labels"), py::arg("batch"),
      py::arg("classes"), py::arg("label_smoothing"));
  m.def(
      "mse_loss",
      [](OptBuf dpred, const DeviceBuffer& pred, const DeviceBuffer& target, int64_t batch,
         int64_t features) {
        float* pd = opt_f32(dpred, batch * features, "dpred");
        const float* pp = need_f32(pred, batch * features, "pred");
        const float* pt = need_f32(target, batch * features, "target");
        py::gil_scoped_release release;
        return cuda::mse_loss(pd, pp, pt, batch, features, kStream);
      },
      py::arg("dpred"), py::arg("pred"), py::arg("target"), py::arg("batch"), py::arg("features"));
  m.def(
      "multiclass_hinge_loss",
      [](OptBuf dscores, const DeviceBuffer& scores, const DeviceBuffer& labels, int64_t batch,
         int64_t classes, float margin) {
        float* pd = opt_f32(dscores, batch * classes, "dscores");
        const float* ps = need_f32(scores, batch * classes, "scores");
        const auto* pl = static_cast<const int64_t*>(need(labels, batch, 8, "labels"));
        py::gil_scoped_release release;
        FASTMLP_CHECK(!cuda::labels_out_of_range(pl, batch, classes, kStream),
                      "labels: a label is out of range [0, ", classes, ")");
        return cuda::multiclass_hinge_loss(pd, ps, pl, batch, classes, margin, "labels", kStream);
      },
      py::arg("dscores"), py::arg("scores"), py::arg("labels"), py::arg("batch"),
      py::arg("classes"), py::arg("margin"));
  m.def(
      "bce_with_logits",
      [](OptBuf dlogits, const DeviceBuffer& logits, const DeviceBuffer& targets, int64_t batch,
         int64_t features) {
        float* pd = opt_f32(dlogits, batch * features, "dlogits");
        const float* pz = need_f32(logits, batch * features, "logits");
        const float* pt = need_f32(targets, batch * features, "targets");
        py::gil_scoped_release release;
        FASTMLP_CHECK(!cuda::targets_out_of_unit_interval(pt, batch * features, kStream),
                      "targets: expected values in [0, 1] (no NaN)");
        return cuda::bce_with_logits(pd, pz, pt, batch, features, kStream);
      },
      py::arg("dlogits"), py::arg("logits"), py::arg("targets"), py::arg("batch"),
      py::arg("features"));

  // ------------------------------------------------------------ dropout
  m.def(
      "dropout_forward",
      [](DeviceBuffer& y, const DeviceBuffer& x, int64_t n, float p, uint64_t seed,
         uint64_t offset) {
        float* py_ = need_f32(y, n, "y");
        const float* px = need_f32(x, n, "x");
        py::gil_scoped_release release;
        cuda::dropout_forward(py_, px, n, p, seed, offset, kStream);
      },
      py::arg("y"), py::arg("x"), py::arg("n"), py::kw_only(), py::arg("p"), py::arg("seed"),
      py::arg("offset"));
  m.def(
      "dropout_backward",
      [](DeviceBuffer& dx, const DeviceBuffer& dy, int64_t n, float p, uint64_t seed,
         uint64_t offset) {
        float* pdx = need_f32(dx, n, "dx");
        const float* pdy = need_f32(dy, n, "dy");
        py::gil_scoped_release release;
        cuda::dropout_backward(pdx, pdy, n, p, seed, offset, kStream);
      },
      py::arg("dx"), py::arg("dy"), py::arg("n"), py::kw_only(), py::arg("p"), py::arg("seed"),
      py::arg("offset"));
  m.def(
      "dropout_mask",
      [](DeviceBuffer& mask, int64_t n, float p, uint64_t seed, uint64_t offset) {
        float* pm = need_f32(mask, n, "mask");
        py::gil_scoped_release release;
        cuda::dropout_mask(pm, n, p, seed, offset, kStream);
      },
      py::arg("mask"), py::arg("n"), py::kw_only(), py::arg("p"), py::arg("seed"),
      py::arg("offset"));

  // ------------------------------------------------------------ optimizers (multi-tensor)
  m.def(
      "sgd_step",
      [](const BufList& params, const BufList& grads, const std::vector<int64_t>& sizes,
         const std::optional<BufList>& momentum_buffers, float lr, float momentum, float dampening,
         bool nesterov, float weight_decay, float l1, int64_t step) {
        const auto t = tensor_list(params, grads, sizes, momentum_buffers, "momentum_buffer",
                                   std::nullopt, "", std::nullopt, "");
        SgdConfig c;
        c.lr = lr;
        c.momentum = momentum;
        c.dampening = dampening;
        c.nesterov = nesterov;
        c.weight_decay = weight_decay;
        c.l1 = l1;
        py::gil_scoped_release release;
        cuda::sgd_step_multi(t, c, step, kStream);
      },
      py::arg("params"), py::arg("grads"), py::arg("sizes"), py::arg("momentum_buffers"),
      py::kw_only(), py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
      py::arg("weight_decay"), py::arg("l1"), py::arg("step"));
  m.def(
      "adagrad_step",
      [](const BufList& params, const BufList& grads, const std::vector<int64_t>& sizes,
         const BufList& sum_sq, float lr, float lr_decay, float weight_decay, float eps, float l1,
         int64_t step) {
        const auto t =
            tensor_list(params, grads, sizes, sum_sq, "sum_sq", std::nullopt, "", std::nullopt, "");
        AdagradConfig c;
        c.lr = lr;
        c.lr_decay = lr_decay;
        c.weight_decay = weight_decay;
        c.eps = eps;
        c.l1 = l1;
        py::gil_scoped_release release;
        cuda::adagrad_step_multi(t, c, step, kStream);
      },
      py::arg("params"), py::arg("grads"), py::arg("sizes"), py::arg("sum_sq"), py::kw_only(),
      py::arg("lr"), py::arg("lr_decay"), py::arg("weight_decay"), py::arg("eps"), py::arg("l1"),
      py::arg("step"));
  m.def(
      "rmsprop_step",
      [](const BufList& params, const BufList& grads, const std::vector<int64_t>& sizes,
         const BufList& square_avg, const std::optional<BufList>& momentum_buffers,
         const std::optional<BufList>& grad_avg, float lr, float alpha, float eps,
         float weight_decay, float momentum, bool centered, float l1, int64_t step) {
        const auto t = tensor_list(params, grads, sizes, square_avg, "square_avg", momentum_buffers,
                                   "momentum_buffer", grad_avg, "grad_avg");
        RmspropConfig c;
        c.lr = lr;
        c.alpha = alpha;
        c.eps = eps;
        c.weight_decay = weight_decay;
        c.momentum = momentum;
        c.centered = centered;
        c.l1 = l1;
        py::gil_scoped_release release;
        cuda::rmsprop_step_multi(t, c, step, kStream);
      },
      py::arg("params"), py::arg("grads"), py::arg("sizes"), py::arg("square_avg"),
      py::arg("momentum_buffers"), py::arg("grad_avg"), py::kw_only(), py::arg("lr"),
      py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"),
      py::arg("centered"), py::arg("l1"), py::arg("step"));
  m.def(
      "adam_step",
      [](const BufList& params, const BufList& grads, const std::vector<int64_t>& sizes,
         const BufList& exp_avg, const BufList& exp_avg_sq, double lr, float beta1, float beta2,
         float eps, double weight_decay, bool decoupled_weight_decay, float l1, int64_t step) {
        const auto t =
            tensor_list(params, grads, sizes, exp_avg, "m", exp_avg_sq, "v", std::nullopt, "");
        AdamConfig c;
        c.lr = lr;
        c.beta1 = beta1;
        c.beta2 = beta2;
        c.eps = eps;
        c.weight_decay = weight_decay;
        c.decoupled_weight_decay = decoupled_weight_decay;
        c.l1 = l1;
        py::gil_scoped_release release;
        cuda::adam_step_multi(t, c, step, kStream);
      },
      py::arg("params"), py::arg("grads"), py::arg("sizes"), py::arg("m"), py::arg("v"),
      py::kw_only(), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
      py::arg("weight_decay"), py::arg("decoupled_weight_decay"), py::arg("l1"), py::arg("step"));

  // ------------------------------------------------------------ fused narrow MLP (fused_mlp.cu)
  m.def(
      "fused_mlp_forward",
      [](DeviceBuffer& logits, const DeviceBuffer& x, const BufList& weights, const BufList& biases,
         const std::vector<int64_t>& sizes, const std::vector<int>& activations,
         const std::vector<float>& alphas, const BufList& prelu_slopes, int64_t n, bool training,
         const std::optional<BufList>& z, const std::optional<BufList>& a) {
        FASTMLP_CHECK(n >= 0, "n: expected >= 0, got ", n);
        const cuda::FusedMlp net =
            fused_net(weights, &biases, sizes, activations, alphas, prelu_slopes);
        const size_t hidden = weights.size() - 1;
        const float* px = need_f32(x, n * sizes.front(), "x");
        float* pl = need_f32(logits, n * sizes.back(), "logits");
        std::vector<float*> pz, pa;
        if (training) {
          FASTMLP_CHECK(z && a && z->size() == hidden && a->size() == hidden, "z: training needs ",
                        hidden, " z and a buffers (one per hidden layer)");
          for (size_t h = 0; h < hidden; ++h) {
            FASTMLP_CHECK((*z)[h] != nullptr && (*a)[h] != nullptr, "z: None in the list");
            pz.push_back(need_f32(*(*z)[h], n * sizes[h + 1], "z"));
            pa.push_back(need_f32(*(*a)[h], n * sizes[h + 1], "a"));
          }
        }
        py::gil_scoped_release release;
        cuda::fused_mlp_forward(pl, pz, pa, px, n, net, kStream);
      },
      py::arg("logits"), py::arg("x"), py::arg("weights"), py::arg("biases"), py::arg("sizes"),
      py::arg("activations"), py::arg("alphas"), py::arg("prelu_slopes"), py::arg("n"),
      py::kw_only(), py::arg("training"), py::arg("z") = py::none(), py::arg("a") = py::none(),
      "logits = the MLP's forward of x in one launch (widths <= 128, <= 8 layers); training also "
      "stores every hidden layer's z and a = f(z).");
  m.def(
      "fused_mlp_backward",
      [](const BufList& dz, const DeviceBuffer& dlogits, const BufList& z, const BufList& weights,
         const std::vector<int64_t>& sizes, const std::vector<int>& activations,
         const std::vector<float>& alphas, const BufList& prelu_slopes, int64_t n) {
        FASTMLP_CHECK(n >= 0, "n: expected >= 0, got ", n);
        const cuda::FusedMlp net =
            fused_net(weights, nullptr, sizes, activations, alphas, prelu_slopes);
        const size_t hidden = weights.size() - 1;
        FASTMLP_CHECK(dz.size() == hidden && z.size() == hidden, "dz: expected ", hidden,
                      " dz and z buffers (one per hidden layer), got ", dz.size(), " and ",
                      z.size());
        const float* pd = need_f32(dlogits, n * sizes.back(), "dlogits");
        std::vector<float*> pdz;
        std::vector<const float*> pz;
        for (size_t h = 0; h < hidden; ++h) {
          FASTMLP_CHECK(dz[h] != nullptr && z[h] != nullptr, "dz: None in the list");
          pdz.push_back(need_f32(*dz[h], n * sizes[h + 1], "dz"));
          pz.push_back(need_f32(*z[h], n * sizes[h + 1], "z"));
        }
        py::gil_scoped_release release;
        cuda::fused_mlp_backward(pdz, pd, pz, n, net, kStream);
      },
      py::arg("dz"), py::arg("dlogits"), py::arg("z"), py::arg("weights"), py::arg("sizes"),
      py::arg("activations"), py::arg("alphas"), py::arg("prelu_slopes"), py::arg("n"),
      "dz[h] = dZ of every hidden layer from dlogits and the forward's z, in one launch (the "
      "weight gradients are left to gemm TN and column_sum).");
}

}  // namespace fastmlp::bind
