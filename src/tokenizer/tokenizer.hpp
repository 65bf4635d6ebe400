// Hugging Face tokenizer.json: added/special tokens, normalizer, pre-tokenizer, BPE,
// post-processor (special tokens around a sequence) and decoder.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/json.hpp"

namespace braid {

namespace tok {
class Normalizer;
class PreTokenizer;
class Decoder;
class Bpe;
}  // namespace tok

class Tokenizer {
 public:
  // Throws braid::Error "PATH: ..." when the file is missing, malformed or uses a
  // component braid does not implement.
  static std::unique_ptr<Tokenizer> load(const std::string& path);
  static std::unique_ptr<Tokenizer> from_json(const json& j, const std::string& where);
  ~Tokenizer();

  // Encodes UTF-8 text (throws on invalid UTF-8). add_special_tokens applies the
  // post-processor's template (e.g. a BOS token), as transformers does by default.
  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = false) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int64_t vocab_size() const;                        // largest id + 1 over the model and added tokens
  int32_t token_id(const std::string& token) const;  // -1 when absent
  std::string token(int32_t id) const;
  bool is_special(int32_t id) const;

 private:
  Tokenizer();
  struct Added {
    std::string content;
    int32_t id;
    bool special, lstrip, rstrip, single_word;
  };
  void encode_segment(const std::string& text, std::vector<int32_t>& out) const;
  const Added* added(int32_t id) const;  // null for an id of the model's vocabulary

  std::vector<Added> added_;
  std::unordered_map<int32_t, size_t> added_by_id_;            // index into added_
  std::unordered_map<std::string, int32_t> added_by_content_;  // id
  int64_t vocab_size_ = 0;
  std::array<std::vector<size_t>, 256> by_first_byte_;  // indices into added_, longest first
  std::unique_ptr<tok::Normalizer> normalizer_;
  std::unique_ptr<tok::PreTokenizer> pre_;
  std::unique_ptr<tok::Bpe> model_;
  std::unique_ptr<tok::Decoder> decoder_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;  // from the post-processor (single sequence)
};

}  // namespace braid
