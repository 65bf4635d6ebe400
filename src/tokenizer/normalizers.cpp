#include "core/error.hpp"
#include "tokenizer/components.hpp"
#include "tokenizer/unicode.hpp"

namespace braid::tok {

namespace {

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(unicode::Form f) : f_(f) {}
  void apply(std::string& s) const override {
    // ASCII text is invariant under every normalization form.
    for (unsigned char c : s)
      if (c >= 0x80) {
        s = unicode::normalize(s, f_);
        return;
      }
  }

 private:
  unicode::Form f_;
};

class Lowercase final : public Normalizer {
 public:
  void apply(std::string& s) const override { s = unicode::lowercase(s); }
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string p) : p_(std::move(p)) {}
  void apply(std::string& s) const override {
    if (!s.empty()) s = p_ + s;
  }

 private:
  std::string p_;
};

class Replace final : public Normalizer {
 public:
  Replace(std::string pattern, bool is_regex, std::string content)
      : lit_(std::move(pattern)), content_(std::move(content)) {
    if (is_regex) re_ = std::make_unique<Regex>(lit_);
  }
  void apply(std::string& s) const override {
    std::string out;
    size_t last = 0;
    if (re_) {
      for (auto [b, e] : re_->find_all(s)) {
        out.append(s, last, b - last);
        out += content_;
        last = e;
      }
    } else {
      if (lit_.empty()) return;
      for (size_t p = s.find(lit_); p != std::string::npos; p = s.find(lit_, last)) {
        out.append(s, last, p - last);
        out += content_;
        last = p + lit_.size();
      }
    }
    out.append(s, last, std::string::npos);
    s = std::move(out);
  }

 private:
  std::string lit_, content_;
  std::unique_ptr<Regex> re_;
};

class Strip final : public Normalizer {
 public:
  Strip(bool l, bool r) : l_(l), r_(r) {}
  void apply(std::string& s) const override {
    const char* ws = " \t\n\r\f\v";
    if (r_) s.erase(s.find_last_not_of(ws) + 1);
    if (l_) s.erase(0, std::min(s.size(), s.find_first_not_of(ws)));
  }

 private:
  bool l_, r_;
};

class Sequence final : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> parts;
  void apply(std::string& s) const override {
    for (const auto& p : parts) p->apply(s);
  }
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  JsonObject o(j, where);
  const std::string type = o.get_string("type");
  if (type == "NFC") return std::make_unique<UnicodeForm>(unicode::Form::NFC);
  if (type == "NFD") return std::make_unique<UnicodeForm>(unicode::Form::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(unicode::Form::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(unicode::Form::NFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Prepend") return std::make_unique<Prepend>(o.get_string("prepend"));
  if (type == "Strip")
    return std::make_unique<Strip>(o.get_bool("strip_left", true), o.get_bool("strip_right", true));
  if (type == "Replace") {
    JsonObject pat = o.get_object("pattern");
    const bool is_regex = pat.has("Regex");
    return std::make_unique<Replace>(pat.get_string(is_regex ? "Regex" : "String"), is_regex,
                                     o.get_string("content"));
  }
  if (type == "Sequence") {
    auto seq = std::make_unique<Sequence>();
    check(j.contains("normalizers") && j["normalizers"].is_array(), where,
          ": Sequence needs a 'normalizers' array");
    for (size_t i = 0; i < j["normalizers"].size(); ++i)
      if (auto n = make_normalizer(j["normalizers"][i], where + ".normalizers[" + std::to_string(i) + "]"))
        seq->parts.push_back(std::move(n));
    return seq;
  }
  fail(where, ": normalizer type '", type,
       "' is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, Sequence)");
}

}  // namespace braid::tok
