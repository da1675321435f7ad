// _core.dropout_forward / dropout_backward / dropout_mask (write into a caller-provided float32
// array) and _core._philox4x32, a test hook exposing the raw generator of common/random.h.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "common/errors.h"
#include "common/random.h"
#include "cpu/dropout.h"

namespace fastmlp::bind {
namespace {

void check_same_size(const py::array& out, const char* out_name, const py::array& in,
                     const char* in_name) {
  bool same = out.ndim() == in.ndim();
  for (py::ssize_t d = 0; same && d < out.ndim(); ++d) same = out.shape(d) == in.shape(d);
  if (!same) {
    throw ValueError(detail::concat(out_name, ": expected the shape of ", in_name, " ",
                                    shape_str(in), ", got ", shape_str(out)));
  }
}

}  // namespace

void bind_dropout(py::module_& m) {
  m.def(
      "dropout_forward",
      [](py::array y, py::array x, float p, uint64_t seed, uint64_t offset) {
        float* yp = out_f32(y, "y");
        const float* xp = in_f32(x, "x");
        check_same_size(y, "y", x, "x");
        check_no_overlap(y, "y", x, "x", /*exact_alias_ok=*/true);  // dropout.h: may alias
        const auto n = static_cast<int64_t>(x.size());
        py::gil_scoped_release release;
        dropout_forward(yp, xp, n, p, seed, offset);
      },
      py::arg("y"), py::arg("x"), py::kw_only(), py::arg("p"), py::arg("seed"), py::arg("offset"),
      "y = x * mask / (1 - p) with the Philox mask of (seed, offset + i); y may be x, not a "
      "shifted view of it.");

  m.def(
      "dropout_backward",
      [](py::array dx, py::array dy, float p, uint64_t seed, uint64_t offset) {
        float* dxp = out_f32(dx, "dx");
        const float* dyp = in_f32(dy, "dy");
        check_same_size(dx, "dx", dy, "dy");
        check_no_overlap(dx, "dx", dy, "dy", /*exact_alias_ok=*/true);  // dropout.h: may alias
        const auto n = static_cast<int64_t>(dy.size());
        py::gil_scoped_release release;
        dropout_backward(dxp, dyp, n, p, seed, offset);
      },
      py::arg("dx"), py::arg("dy"), py::kw_only(), py::arg("p"), py::arg("seed"), py::arg("offset"),
      "dx = dy * mask / (1 - p), regenerating forward's mask; dx may be dy, not a shifted view "
      "of it.");

  m.def(
      "dropout_mask",
      [](py::array mask, float p, uint64_t seed, uint64_t offset) {
        float* mp = out_f32(mask, "mask");
        const auto n = static_cast<int64_t>(mask.size());
        py::gil_scoped_release release;
        dropout_mask(mp, n, p, seed, offset);
      },
      py::arg("mask"), py::kw_only(), py::arg("p"), py::arg("seed"), py::arg("offset"),
      "mask[i] = 1 / (1 - p) if element i is kept, else 0.");

  m.def(
      "_philox4x32",
      [](const std::array<uint32_t, 4>& counter, const std::array<uint32_t, 2>& key) {
        const Philox4x32Block out =
            philox4x32_10(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
        return std::array<uint32_t, 4>{out.x[0], out.x[1], out.x[2], out.x[3]};
      },
      py::arg("counter"), py::arg("key"),
      "Test hook: Philox4x32-10 of a 4-word counter and 2-word key (words as ints < 2**32).");
}

}  // namespace fastmlp::bind
