// Errors raised by the C++ core. The bindings translate them into Python exceptions:
//   ValueError  -> ValueError   (bad shape, bad value, label out of range, empty batch)
//   TypeError   -> TypeError    (wrong dtype)
//   NonFiniteError -> FloatingPointError (a loss or gradient that became NaN/inf)
//   OutOfMemory -> MemoryError (an allocation sized by an argument, named in the message)
//   std::bad_alloc -> MemoryError
// Messages always start with the name of the offending argument.
#pragma once

#include <charconv>
#include <iomanip>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>

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
struct OutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
// A float or double as the shortest text that reads back to the same value (std::to_chars):
// a stream's default 6 digits printed 1.0000001 as "1" in "expected a value in [0, 1], got 1".
template <typename T>
void put(std::ostringstream& out, const T& part) {
  if constexpr (std::is_floating_point_v<T> && !std::is_same_v<T, long double>) {
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
    char text[64];
    const auto [end, error] = std::to_chars(text, text + sizeof text, part);
    if (error == std::errc()) {
      out.write(text, end - text);
      return;
    }
#endif
    out << std::setprecision(std::numeric_limits<T>::max_digits10) << part << std::setprecision(6);
  } else {
    out << part;
  }
}

template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (put(out, parts), ...);
  return out.str();
}
}  // namespace detail

// FASTMLP_CHECK(cond, "x", ": expected ", n, " columns") throws ValueError with the parts joined.
#define FASTMLP_CHECK(cond, ...)                                                      \
  do {                                                                                \
    if (!(cond)) throw ::fastmlp::ValueError(::fastmlp::detail::concat(__VA_ARGS__)); \
  } while (0)

}  // namespace fastmlp
