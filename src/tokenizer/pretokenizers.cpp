#include <functional>

#include "core/error.hpp"
#include "tokenizer/components.hpp"
#include "tokenizer/unicode.hpp"

namespace braid::tok {

std::vector<std::string> split_by_matches(const std::string& s,
                                          const std::vector<std::pair<size_t, size_t>>& matches,
                                          SplitBehavior b, bool invert) {
  struct Seg {
    size_t b, e;
    bool match;
  };
  std::vector<Seg> segs;
  size_t at = 0;
  for (auto [mb, me] : matches) {
    if (mb > at) segs.push_back({at, mb, invert});
    segs.push_back({mb, me, !invert});
    at = me;
  }
  if (at < s.size()) segs.push_back({at, s.size(), invert});

  std::vector<std::pair<size_t, size_t>> out;
  bool prev_match = false;
  for (const Seg& g : segs) {
    switch (b) {
      case SplitBehavior::Removed:
        if (!g.match) out.push_back({g.b, g.e});
        break;
      case SplitBehavior::Isolated:
        out.push_back({g.b, g.e});
        break;
      case SplitBehavior::MergedWithPrevious:
        if (g.match && !out.empty())
          out.back().second = g.e;
        else
          out.push_back({g.b, g.e});
        break;
      case SplitBehavior::MergedWithNext:
        if (prev_match && !out.empty())
          out.back().second = g.e;
        else
          out.push_back({g.b, g.e});
        break;
      case SplitBehavior::Contiguous:
        if (prev_match && g.match && !out.empty())
          out.back().second = g.e;
        else
          out.push_back({g.b, g.e});
        break;
    }
    prev_match = g.match;
  }
  std::vector<std::string> pieces;
  for (auto [pb, pe] : out)
    if (pe > pb) pieces.push_back(s.substr(pb, pe - pb));
  return pieces;
}

namespace {

// The GPT-2 pre-tokenization pattern used by ByteLevel(use_regex = true).
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void for_each_piece(std::vector<std::string>& pieces,
                    const std::function<void(const std::string&, std::vector<std::string>&)>& f) {
  std::vector<std::string> out;
  out.reserve(pieces.size());
  for (const auto& p : pieces) f(p, out);
  pieces = std::move(out);
}

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex) : prefix_(add_prefix_space) {
    if (use_regex) re_ = std::make_unique<Regex>(kGpt2Pattern);
  }
  void apply(std::vector<std::string>& pieces) const override {
    for_each_piece(pieces, [&](const std::string& p0, std::vector<std::string>& out) {
      std::string p = (prefix_ && (p0.empty() || p0[0] != ' ')) ? " " + p0 : p0;
      std::vector<std::string> parts =
          re_ ? split_by_matches(p, re_->find_all(p), SplitBehavior::Isolated, false)
              : std::vector<std::string>{p};
      for (const auto& part : parts) {
        std::string mapped;
        mapped.reserve(part.size() * 2);
        for (unsigned char c : part) mapped += unicode::byte_to_char(c);
        out.push_back(std::move(mapped));
      }
    });
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
  void apply(std::vector<std::string>& pieces) const override {
    for_each_piece(pieces, [&](const std::string& p, std::vector<std::string>& out) {
      std::vector<std::pair<size_t, size_t>> m;
      if (re_) {
        m = re_->find_all(p);
      } else if (!lit_.empty()) {
        for (size_t at = p.find(lit_); at != std::string::npos; at = p.find(lit_, at + lit_.size()))
          m.push_back({at, at + lit_.size()});
      }
      for (auto& s : split_by_matches(p, m, b_, invert_)) out.push_back(std::move(s));
    });
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
  void apply(std::vector<std::string>& pieces) const override {
    bool first = true;
    for_each_piece(pieces, [&](const std::string& p, std::vector<std::string>& out) {
      std::string s;
      for (char c : p) {
        if (c == ' ')
          s += repl_;
        else
          s.push_back(c);
      }
      const bool prepend = scheme_ == "always" || (scheme_ == "first" && first);
      if (prepend && s.compare(0, repl_.size(), repl_) != 0) s = repl_ + s;
      first = false;
      if (!split_) {
        out.push_back(std::move(s));
        return;
      }
      std::vector<std::pair<size_t, size_t>> m;
      for (size_t at = s.find(repl_); at != std::string::npos; at = s.find(repl_, at + repl_.size()))
        m.push_back({at, at + repl_.size()});
      for (auto& x : split_by_matches(s, m, SplitBehavior::MergedWithNext, false))
        out.push_back(std::move(x));
    });
  }

 private:
  std::string repl_, scheme_;
  bool split_;
};

class RegexSplit final : public PreTokenizer {  // Whitespace, WhitespaceSplit, Digits
 public:
  RegexSplit(const std::string& pattern, SplitBehavior b, bool invert)
      : re_(pattern), b_(b), invert_(invert) {}
  void apply(std::vector<std::string>& pieces) const override {
    for_each_piece(pieces, [&](const std::string& p, std::vector<std::string>& out) {
      for (auto& s : split_by_matches(p, re_.find_all(p), b_, invert_)) out.push_back(std::move(s));
    });
  }

 private:
  Regex re_;
  SplitBehavior b_;
  bool invert_;
};

class Sequence final : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void apply(std::vector<std::string>& pieces) const override {
    for (const auto& p : parts) p->apply(pieces);
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
