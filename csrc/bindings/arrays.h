// NumPy argument checks for the bindings. Every check names the argument and says what was
// expected, and raises TypeError (dtype) or ValueError (everything else) in Python.
// The Python layer (fastmlp.ops) converts inputs first; these checks are the last line of defence,
// so that no call into _core can crash or silently compute on the wrong memory.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "common/errors.h"

namespace fastmlp::bind {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

inline std::string dtype_str(const py::array& a) {
  return py::str(a.dtype()).cast<std::string>();
}

template <typename T>
inline void check_array(const py::array& a, const char* name, int ndim, const char* what) {
  // dtype equality, not identity: an unpickled float32 array carries a float32 dtype object of
  // its own. Equality still tells a byte-swapped dtype from the native one.
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().equal(py::dtype::of<T>())) {
    throw TypeError(detail::concat(name, ": expected ", what, " array, got ", dtype_str(a)));
  }
  if (ndim >= 0 && a.ndim() != ndim) {
    throw ValueError(
        detail::concat(name, ": expected a ", ndim, "-D array, got shape ", shape_str(a)));
  }
  if (!(a.flags() & py::array::c_style)) {
    throw ValueError(
        detail::concat(name, ": expected a C-contiguous array (np.ascontiguousarray)"));
  }
}

inline const float* in_f32(const py::array& a, const char* name, int ndim = -1) {
  check_array<float>(a, name, ndim, "a float32");
  return static_cast<const float*>(a.data());
}

inline float* out_f32(py::array& a, const char* name, int ndim = -1) {
  check_array<float>(a, name, ndim, "a float32");
  if (!a.writeable()) throw ValueError(detail::concat(name, ": array is read-only"));
  return static_cast<float*>(a.mutable_data());
}

inline const int64_t* in_i64(const py::array& a, const char* name, int ndim = -1) {
  check_array<int64_t>(a, name, ndim, "an int64");
  return static_cast<const int64_t*>(a.data());
}

// Checks a.shape == expected, where -1 in expected matches any extent.
inline void check_shape(const py::array& a, const char* name,
                        std::initializer_list<int64_t> expected) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(expected.size());
  std::string want = "(";
  int i = 0;
  for (int64_t e : expected) {
    if (i) want += ", ";
    want += e < 0 ? std::string("*") : std::to_string(e);
    if (ok && e >= 0 && a.shape(i) != e) ok = false;
    ++i;
  }
  if (expected.size() == 1) want += ",";
  want += ")";
  if (!ok)
    throw ValueError(detail::concat(name, ": expected shape ", want, ", got ", shape_str(a)));
}

// Checks 0 <= labels[i] < classes for every label. Each label is read once (volatile), so that
// the label reported is the one that failed even when another thread rewrites the array meanwhile
// (the kernels check again as they read).
inline void check_labels(const int64_t* labels, int64_t n, int64_t classes, const char* name) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = *static_cast<const volatile int64_t*>(labels + i);
    if (label < 0 || label >= classes) {
      throw ValueError(detail::concat(name, ": label ", label, " at index ", i,
                                      " is out of range [0, ", classes, ")"));
    }
  }
}

// True when x and y share at least one byte; empty arrays share none.
inline bool overlaps(const py::array& x, const py::array& y) {
  const auto* x0 = static_cast<const char*>(x.data());
  const auto* y0 = static_cast<const char*>(y.data());
  return x.nbytes() > 0 && y.nbytes() > 0 && x0 < y0 + y.nbytes() && y0 < x0 + x.nbytes();
}

// Refuses a and b sharing memory, where at least one is written by the kernel; the message names
// a. With exact_alias_ok, for kernels documented to allow it (they read element i before writing
// element i), a may be the very same memory as b (same start and size); a shifted or partial
// overlap is still refused: the kernel would read elements already overwritten, and threads race.
inline void check_no_overlap(const py::array& a, const char* a_name, const py::array& b,
                             const char* b_name, bool exact_alias_ok = false) {
  if (!overlaps(a, b)) return;
  if (exact_alias_ok) {
    if (a.data() == b.data() && a.nbytes() == b.nbytes()) return;
    throw ValueError(
        detail::concat(a_name, ": may be ", b_name, " itself but must not partly overlap it"));
  }
  throw ValueError(detail::concat(a_name, ": must not share memory with ", b_name));
}

inline py::array_t<float> new_f32(std::vector<py::ssize_t> shape) {
  return py::array_t<float>(shape);
}

}  // namespace fastmlp::bind
