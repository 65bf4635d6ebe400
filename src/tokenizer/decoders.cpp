#include <cctype>

#include "core/error.hpp"
#include "tokenizer/components.hpp"
#include "tokenizer/unicode.hpp"

namespace braid::tok {

namespace {

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t last = 0;
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, last)) {
    out.append(s, last, p - last);
    out += to;
    last = p + from.size();
  }
  out.append(s, last, std::string::npos);
  return out;
}

class ByteLevel final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      std::string mapped;
      bool ok = true;
      size_t i = 0;
      while (i < t.size()) {
        const int b = unicode::char_to_byte(unicode::next_cp(t, i));
        if (b < 0) {
          ok = false;
          break;
        }
        mapped.push_back(char(b));
      }
      bytes += ok ? mapped : t;  // a token with unmapped characters passes through as is
    }
    tokens.assign(1, unicode::from_utf8_lossy(bytes));
  }
};

class Replace final : public Decoder {
 public:
  Replace(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = replace_all(t, from_, to_);
  }

 private:
  std::string from_, to_;
};

// Turns runs of <0xXX> tokens back into bytes; invalid UTF-8 becomes one U+FFFD per byte.
class ByteFallback final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string run;
    size_t run_len = 0;
    auto flush = [&] {
      if (run_len == 0) return;
      if (unicode::valid_utf8(run)) {
        out.push_back(run);
      } else {
        for (size_t k = 0; k < run_len; ++k) out.push_back("\xEF\xBF\xBD");
      }
      run.clear();
      run_len = 0;
    };
    for (const auto& t : tokens) {
      unsigned v = 0;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
          std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4]))) {
        v = unsigned(std::stoul(t.substr(3, 2), nullptr, 16));
        run.push_back(char(v));
        ++run_len;
      } else {
        flush();
        out.push_back(t);
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class Fuse final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

class Strip final : public Decoder {
 public:
  Strip(std::string content, size_t start, size_t stop)
      : c_(std::move(content)), start_(start), stop_(stop) {}
  void apply(std::vector<std::string>& tokens) const override {
    if (c_.empty()) return;
    for (auto& t : tokens) {
      for (size_t k = 0; k < start_ && t.compare(0, c_.size(), c_) == 0; ++k) t.erase(0, c_.size());
      for (size_t k = 0;
           k < stop_ && t.size() >= c_.size() && t.compare(t.size() - c_.size(), c_.size(), c_) == 0; ++k)
        t.erase(t.size() - c_.size());
    }
  }

 private:
  std::string c_;
  size_t start_, stop_;
};

class Metaspace final : public Decoder {
 public:
  Metaspace(std::string repl, bool strip_first) : repl_(std::move(repl)), strip_first_(strip_first) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = replace_all(tokens[i], repl_, " ");
      if (i == 0 && strip_first_ && !tokens[i].empty() && tokens[i][0] == ' ') tokens[i].erase(0, 1);
    }
  }

 private:
  std::string repl_;
  bool strip_first_;
};

class Sequence final : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> parts;
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts) p->apply(tokens);
  }
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  JsonObject o(j, where);
  const std::string type = o.get_string("type");
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip")
    return std::make_unique<Strip>(o.get_string("content"), size_t(o.get_int("start", 0)),
                                   size_t(o.get_int("stop", 0)));
  if (type == "Replace") {
    JsonObject pat = o.get_object("pattern");
    check(pat.has("String"), where, ": Replace decoder supports only String patterns");
    return std::make_unique<Replace>(pat.get_string("String"), o.get_string("content"));
  }
  if (type == "Metaspace") {
    std::string scheme =
        o.get_string("prepend_scheme", o.get_bool("add_prefix_space", true) ? "always" : "never");
    return std::make_unique<Metaspace>(o.get_string("replacement", "\xE2\x96\x81"), scheme != "never");
  }
  if (type == "Sequence") {
    auto seq = std::make_unique<Sequence>();
    check(j.contains("decoders") && j["decoders"].is_array(), where, ": Sequence needs a 'decoders' array");
    for (size_t i = 0; i < j["decoders"].size(); ++i)
      if (auto d = make_decoder(j["decoders"][i], where + ".decoders[" + std::to_string(i) + "]"))
        seq->parts.push_back(std::move(d));
    return seq;
  }
  fail(where, ": decoder type '", type,
       "' is not supported (supported: ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence)");
}

}  // namespace braid::tok
