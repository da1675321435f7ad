// Errors raised by the C++ core. The bindings translate them into Python exceptions:
//   ValueError  -> ValueError   (bad shape, bad value, label out of range, empty batch)
//   TypeError   -> TypeError    (wrong dtype)
//   NonFiniteError -> FloatingPointError (a loss or gradient that became NaN/inf)
//   std::bad_alloc -> MemoryError
// Messages always start with the name of the offending argument.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace fastmlp {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct NonFiniteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

// FASTMLP_CHECK(cond, "x", ": expected ", n, " columns") throws ValueError with the parts joined.
#define FASTMLP_CHECK(cond, ...)                                                      \
  do {                                                                                \
    if (!(cond)) throw ::fastmlp::ValueError(::fastmlp::detail::concat(__VA_ARGS__)); \
  } while (0)

}  // namespace fastmlp
