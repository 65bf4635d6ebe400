#include "tokenizer/tokenizer.hpp"

#include <algorithm>
#include <cctype>

#include "core/error.hpp"
#include "tokenizer/components.hpp"
#include "tokenizer/unicode.hpp"

namespace braid {

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  return from_json(read_json_file(path), path);
}

namespace {

// Reads the ids a post-processor puts before and after a single sequence.
void read_post_processor(const json& j, const std::string& where, std::vector<int32_t>& pre,
                         std::vector<int32_t>& post) {
  if (j.is_null()) return;
  JsonObject o(j, where);
  const std::string type = o.get_string("type");
  if (type == "ByteLevel") return;  // only adjusts offsets
  if (type == "Sequence") {
    check(j.contains("processors") && j["processors"].is_array(), where, ": Sequence needs 'processors'");
    for (const auto& p : j["processors"]) read_post_processor(p, where, pre, post);
    return;
  }
  if (type == "TemplateProcessing") {
    check(j.contains("single") && j["single"].is_array(), where, ": TemplateProcessing needs 'single'");
    const json& specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
    bool seen_seq = false;
    for (const auto& item : j["single"]) {
      if (item.contains("Sequence")) {
        seen_seq = true;
        continue;
      }
      check(item.contains("SpecialToken"), where, ": template item is neither Sequence nor SpecialToken");
      const std::string name = JsonObject(item["SpecialToken"], where).get_string("id");
      check(specials.contains(name) && specials[name].contains("ids") && specials[name]["ids"].is_array(),
            where, ": special token '", name, "' has no ids in special_tokens");
      for (const auto& id : specials[name]["ids"]) (seen_seq ? post : pre).push_back(id.get<int32_t>());
    }
    return;
  }
  fail(where, ": post-processor type '", type,
       "' is not supported (supported: TemplateProcessing, ByteLevel, Sequence)");
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_json(const json& j, const std::string& where) {
  JsonObject o(j, where);
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  check(j.contains("model"), where, ": field 'model' is missing");
  t->model_ = std::make_unique<tok::Bpe>(j["model"], where + ": model");
  t->normalizer_ = tok::make_normalizer(j.value("normalizer", json()), where + ": normalizer");
  t->pre_ = tok::make_pre_tokenizer(j.value("pre_tokenizer", json()), where + ": pre_tokenizer");
  t->decoder_ = tok::make_decoder(j.value("decoder", json()), where + ": decoder");
  read_post_processor(j.value("post_processor", json()), where + ": post_processor", t->prefix_ids_,
                      t->suffix_ids_);
  if (o.has("added_tokens")) {
    check(j["added_tokens"].is_array(), where, ": 'added_tokens' must be an array");
    for (const auto& a : j["added_tokens"]) {
      JsonObject ao(a, where + ": added_tokens");
      Added x{ao.get_string("content"),     int32_t(ao.get_int("id")),    ao.get_bool("special", false),
              ao.get_bool("lstrip", false), ao.get_bool("rstrip", false), ao.get_bool("single_word", false)};
      check(!x.content.empty() && x.id >= 0, where, ": added token with empty content or negative id");
      t->added_.push_back(std::move(x));
    }
  }
  // Longest first, so matching at a position prefers the longest added token.
  std::stable_sort(t->added_.begin(), t->added_.end(),
                   [](const Added& a, const Added& b) { return a.content.size() > b.content.size(); });
  t->vocab_size_ = t->model_->size();
  for (size_t k = 0; k < t->added_.size(); ++k) {
    const Added& a = t->added_[k];
    t->by_first_byte_[static_cast<unsigned char>(a.content[0])].push_back(k);
    t->added_by_id_.emplace(a.id, k);  // the first (longest) wins, as a scan in this order finds
    t->added_by_content_.emplace(a.content, a.id);
    t->vocab_size_ = std::max<int64_t>(t->vocab_size_, int64_t(a.id) + 1);
  }
  return t;
}

void Tokenizer::encode_segment(const std::string& text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string s = text;
  if (normalizer_) normalizer_->apply(s);
  if (!pre_) {
    model_->tokenize(s, out);
    return;
  }
  pre_->apply(s, true, [&](std::string_view piece, bool) { model_->tokenize(std::string(piece), out); });
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  check(unicode::valid_utf8(text), "input text is not valid UTF-8");
  std::vector<int32_t> out;
  if (add_special_tokens) out = prefix_ids_;
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  auto is_word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  // Split around added tokens (leftmost, then longest), then encode the text between.
  size_t seg = 0, i = 0;
  while (i < text.size()) {
    const Added* hit = nullptr;
    for (size_t k : by_first_byte_[static_cast<unsigned char>(text[i])]) {
      const Added& a = added_[k];
      if (text.compare(i, a.content.size(), a.content) != 0) continue;
      if (a.single_word) {
        const size_t e = i + a.content.size();
        if ((i > 0 && is_word(text[i - 1])) || (e < text.size() && is_word(text[e]))) continue;
      }
      hit = &a;
      break;
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t b = i, e = i + hit->content.size();
    if (hit->lstrip)
      while (b > seg && is_space(text[b - 1])) --b;
    if (hit->rstrip)
      while (e < text.size() && is_space(text[e])) ++e;
    encode_segment(text.substr(seg, b - seg), out);
    out.push_back(hit->id);
    seg = i = e;
  }
  encode_segment(text.substr(seg), out);
  if (add_special_tokens) out.insert(out.end(), suffix_ids_.begin(), suffix_ids_.end());
  return out;
}

const Tokenizer::Added* Tokenizer::added(int32_t id) const {
  const auto it = added_by_id_.find(id);
  return it == added_by_id_.end() ? nullptr : &added_[it->second];
}

std::string Tokenizer::token(int32_t id) const {
  const Added* a = added(id);
  return a ? a->content : model_->token(id);
}

bool Tokenizer::is_special(int32_t id) const {
  const Added* a = added(id);
  return a && a->special;
}

int32_t Tokenizer::token_id(const std::string& t) const {
  const auto it = added_by_content_.find(t);
  return it != added_by_content_.end() ? it->second : model_->token_id(t);
}

int64_t Tokenizer::vocab_size() const { return vocab_size_; }

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_)
      fail("token id ", id, " is outside the tokenizer vocabulary [0, ", vocab_size_, ")");
    const Added* a = added(id);
    if (skip_special_tokens && a && a->special) continue;
    tokens.push_back(a ? a->content : model_->token(id));
  }
  if (decoder_) {
    decoder_->apply(tokens);
    std::string s;
    for (const auto& t : tokens) s += t;
    return s;
  }
  std::string s;
  for (size_t i = 0; i < tokens.size(); ++i) s += (i ? " " : "") + tokens[i];
  return s;
}

}  // namespace braid
