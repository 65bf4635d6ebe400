// Unicode regular expressions (PCRE2 in UTF + UCP mode, JIT when available) for
// pre-tokenizer split patterns such as \p{L}+ and (?i:'s|'t).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace braid {

class Regex {
 public:
  // Throws braid::Error naming the pattern when it does not compile.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // All non-overlapping matches, leftmost first, as [begin, end) byte ranges.
  // Empty matches are skipped. `s` must be valid UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;
  // Same matches, streamed to f(begin, end) without building a list.
  void for_each_match(std::string_view s, const std::function<void(size_t, size_t)>& f) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code*
};

}  // namespace braid
