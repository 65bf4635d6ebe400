// braid errors: one exception type whose message is a single line naming what was
// wrong (file, tensor, field), what was expected and what was found.
#pragma once
#include <stdexcept>
#include <string>
#include <utility>

namespace braid {

// Error raised for bad input or unsupported features. The CLI prints what() and
// exits with code 2.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
inline void append(std::string&) {}
template <class T, class... Rest>
void append(std::string& s, const T& v, const Rest&... rest) {
  if constexpr (std::is_arithmetic_v<T>)
    s += std::to_string(v);
  else
    s += v;
  append(s, rest...);
}
}  // namespace detail

// Concatenate the parts into one message and throw braid::Error.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::string s;
  detail::append(s, parts...);
  throw Error(s);
}

// Throws with the given message parts when cond is false.
template <class... Parts>
void check(bool cond, const Parts&... parts) {
  if (!cond) fail(parts...);
}

}  // namespace braid
