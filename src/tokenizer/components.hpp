// The pipeline stages of a Hugging Face tokenizer.json, each built from its JSON:
// normalizer -> pre-tokenizer -> model (BPE) -> post-processor; decoder for the way back.
#pragma once
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/json.hpp"
#include "tokenizer/regex.hpp"

namespace braid::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};
// Returns null for a JSON null; throws naming the type when unsupported.
std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where);

// Receives each piece a pre-tokenizer produces; at_start is true for a piece that
// begins at the start of the text being pre-tokenized.
using PieceSink = std::function<void(std::string_view piece, bool at_start)>;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and may rewrite) one piece, streaming the results to `emit` in order, so
  // long texts never materialise a list of every piece.
  virtual void apply(std::string_view piece, bool at_start, const PieceSink& emit) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where);

// Split behaviour shared by the Split, Metaspace and Digits pre-tokenizers.
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
// Splits s at the given [begin, end) match ranges according to `b`, emitting the
// non-empty pieces in order (at_start: the piece begins at s[0] and s is at the start).
// `matches` streams the [begin, end) ranges, in order, to the function it is given.
using MatchSource = std::function<void(const std::function<void(size_t, size_t)>&)>;
void split_by_matches(std::string_view s, const MatchSource& matches, SplitBehavior b, bool invert,
                      bool at_start, const PieceSink& emit);
// Matches of a literal string (non-overlapping, left to right).
MatchSource literal_matches(std::string_view s, const std::string& lit);
// Matches of a regex.
MatchSource regex_matches(std::string_view s, const Regex& re);

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where);

// Byte-pair encoding model with merges ranked by priority, optional byte fallback,
// unknown-token fusing, and whole-word lookup (ignore_merges).
class Bpe {
 public:
  Bpe(const json& model, const std::string& where);
  void tokenize(const std::string& word, std::vector<int32_t>& out) const;
  int32_t token_id(const std::string& t) const;  // -1 when absent
  const std::string& token(int32_t id) const;
  int64_t size() const { return int64_t(id_to_token_.size()); }

 private:
  void tokenize_uncached(const std::string& word, std::vector<int32_t>& out) const;
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  struct Merge {
    int32_t rank, id;
  };
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  int32_t unk_ = -1;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  int32_t byte_ids_[256];        // <0xXX> tokens for byte fallback (-1 if absent)
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace braid::tok
