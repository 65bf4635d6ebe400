#include <functional>

#include "core/error.hpp"
#include "tokenizer/components.hpp"
#include "tokenizer/unicode.hpp"

namespace braid::tok {

void split_by_matches(std::string_view s, const MatchSource& matches, SplitBehavior b, bool invert,
                      bool at_start, const PieceSink& emit) {
  // Segments arrive in order; at most one piece is held back while it may still grow.
  bool have = false, prev_match = false;
  size_t pb = 0, pe = 0;
  auto flush = [&] {
    if (have && pe > pb) emit(s.substr(pb, pe - pb), at_start && pb == 0);
    have = false;
  };
  auto segment = [&](size_t sb, size_t se, bool match) {
    bool extend = false;
    switch (b) {
      case SplitBehavior::Removed:
        if (match) {
          prev_match = match;
          return;
        }
        break;
      case SplitBehavior::Isolated:
        break;
      case SplitBehavior::MergedWithPrevious:
        extend = match;
        break;
      case SplitBehavior::MergedWithNext:
        extend = prev_match;
        break;
      case SplitBehavior::Contiguous:
        extend = prev_match && match;
        break;
    }
    if (extend && have) {
      pe = se;
    } else {
      flush();
      have = true, pb = sb, pe = se;
    }
    prev_match = match;
  };
  size_t at = 0;
  matches([&](size_t mb, size_t me) {
    if (mb > at) segment(at, mb, invert);
    segment(mb, me, !invert);
    at = me;
  });
  if (at < s.size()) segment(at, s.size(), invert);
  flush();
}

MatchSource literal_matches(std::string_view s, const std::string& lit) {
  return [s, &lit](const std::function<void(size_t, size_t)>& f) {
    if (lit.empty()) return;
    for (size_t at = s.find(lit); at != std::string_view::npos; at = s.find(lit, at + lit.size()))
      f(at, at + lit.size());
  };
}

MatchSource regex_matches(std::string_view s, const Regex& re) {
  return [s, &re](const std::function<void(size_t, size_t)>& f) { re.for_each_match(s, f); };
}

namespace {

// The GPT-2 pre-tokenization pattern used by ByteLevel(use_regex = true).
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex) : prefix_(add_prefix_space) {
    if (use_regex) re_ = std::make_unique<Regex>(kGpt2Pattern);
  }
  void apply(std::string_view p0, bool at_start, const PieceSink& emit) const override {
    std::string p;
    if (prefix_ && (p0.empty() || p0[0] != ' ')) p = " ";
    p += p0;
    auto map = [&](std::string_view part, bool start) {
      std::string mapped;
      mapped.reserve(part.size() * 2);
      for (unsigned char c : part) mapped += unicode::byte_to_char(c);
      emit(mapped, start);
    };
    if (re_)
      split_by_matches(p, regex_matches(p, *re_), SplitBehavior::Isolated, false, at_start, map);
    else
      map(p, at_start);
  }

 private:
  bool prefix_;
  std::unique_ptr<Regex> re_;
};

class Split final : public PreTokenizer {
 public:
  Split(std::string pattern, bool is_regex, SplitBehavior b, bool invert) : b_(b), invert_(invert) {
    if (is_regex)
      re_ = std::make_unique<Regex>(pattern);
    else
      lit_ = std::move(pattern);
  }
  void apply(std::string_view p, bool at_start, const PieceSink& emit) const override {
    split_by_matches(p, re_ ? regex_matches(p, *re_) : literal_matches(p, lit_), b_, invert_, at_start, emit);
  }

 private:
  SplitBehavior b_;
  bool invert_;
  std::string lit_;
  std::unique_ptr<Regex> re_;
};

class Metaspace final : public PreTokenizer {
 public:
  Metaspace(std::string repl, std::string scheme, bool split)
      : repl_(std::move(repl)), scheme_(std::move(scheme)), split_(split) {}
  void apply(std::string_view p, bool at_start, const PieceSink& emit) const override {
    std::string s;
    for (char c : p) {
      if (c == ' ')
        s += repl_;
      else
        s.push_back(c);
    }
    const bool prepend = scheme_ == "always" || (scheme_ == "first" && at_start);
    if (prepend && s.compare(0, repl_.size(), repl_) != 0) s = repl_ + s;
    if (!split_) {
      emit(s, at_start);
      return;
    }
    split_by_matches(s, literal_matches(s, repl_), SplitBehavior::MergedWithNext, false, at_start, emit);
  }

 private:
  std::string repl_, scheme_;
  bool split_;
};

class RegexSplit final : public PreTokenizer {  // Whitespace, WhitespaceSplit, Digits
 public:
  RegexSplit(const std::string& pattern, SplitBehavior b, bool invert)
      : re_(pattern), b_(b), invert_(invert) {}
  void apply(std::string_view p, bool at_start, const PieceSink& emit) const override {
    split_by_matches(p, regex_matches(p, re_), b_, invert_, at_start, emit);
  }

 private:
  Regex re_;
  SplitBehavior b_;
  bool invert_;
};

class Sequence final : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void apply(std::string_view p, bool at_start, const PieceSink& emit) const override {
    run(0, p, at_start, emit);
  }

 private:
  // Feeds a piece to stage i, whose pieces go to stage i + 1, the last to `emit`.
  void run(size_t i, std::string_view p, bool at_start, const PieceSink& emit) const {
    if (i == parts.size()) {
      emit(p, at_start);
      return;
    }
    parts[i]->apply(p, at_start, [&](std::string_view q, bool s) { run(i + 1, q, s, emit); });
  }
};

SplitBehavior parse_behavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return SplitBehavior::Removed;
  if (s == "Isolated") return SplitBehavior::Isolated;
  if (s == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (s == "Contiguous") return SplitBehavior::Contiguous;
  fail(where, ": unknown split behavior '", s, "'");
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  JsonObject o(j, where);
  const std::string type = o.get_string("type");
  if (type == "ByteLevel")
    return std::make_unique<ByteLevel>(o.get_bool("add_prefix_space", true), o.get_bool("use_regex", true));
  if (type == "Split") {
    JsonObject pat = o.get_object("pattern");
    const bool is_regex = pat.has("Regex");
    return std::make_unique<Split>(pat.get_string(is_regex ? "Regex" : "String"), is_regex,
                                   parse_behavior(o.get_string("behavior"), where),
                                   o.get_bool("invert", false));
  }
  if (type == "Metaspace") {
    std::string scheme =
        o.get_string("prepend_scheme", o.get_bool("add_prefix_space", true) ? "always" : "never");
    return std::make_unique<Metaspace>(o.get_string("replacement", "\xE2\x96\x81"), scheme,
                                       o.get_bool("split", true));
  }
  if (type == "Whitespace")
    return std::make_unique<RegexSplit>(R"(\w+|[^\w\s]+)", SplitBehavior::Removed, true);
  if (type == "WhitespaceSplit") return std::make_unique<RegexSplit>(R"(\s+)", SplitBehavior::Removed, false);
  if (type == "Digits")
    return o.get_bool("individual_digits", false)
               ? std::make_unique<RegexSplit>(R"(\p{N})", SplitBehavior::Isolated, false)
               : std::make_unique<RegexSplit>(R"(\p{N}+)", SplitBehavior::Isolated, false);
  if (type == "Sequence") {
    auto seq = std::make_unique<Sequence>();
    check(j.contains("pretokenizers") && j["pretokenizers"].is_array(), where,
          ": Sequence needs a 'pretokenizers' array");
    for (size_t i = 0; i < j["pretokenizers"].size(); ++i)
      if (auto p =
              make_pre_tokenizer(j["pretokenizers"][i], where + ".pretokenizers[" + std::to_string(i) + "]"))
        seq->parts.push_back(std::move(p));
    return seq;
  }
  fail(where, ": pre-tokenizer type '", type,
       "' is not supported (supported: ByteLevel, Split, Metaspace, Whitespace, WhitespaceSplit, Digits, "
       "Sequence)");
}

}  // namespace braid::tok
