// Learns byte-level BPE merges from text, as GPT-2-style tokenizers are trained: the
// text is split by the ByteLevel pre-tokenizer, each piece becomes a word of byte
// symbols, and the adjacent pair with the largest count (summed over all words) is
// merged, again and again, until the vocabulary is full.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace braid {

namespace tok {
class PreTokenizer;
}

using BpeMerge = std::pair<std::string, std::string>;  // left, right (byte-level alphabet)

class BpeTrainer {
 public:
  BpeTrainer();
  ~BpeTrainer();
  // Counts the pieces of UTF-8 text (throws on invalid UTF-8).
  void add_text(std::string_view text);
  int64_t distinct_words() const { return int64_t(counts_.size()); }

  // Learns merges until the byte alphabet (256) plus the merged tokens reach
  // `token_budget` distinct tokens, or the best pair occurs fewer than `min_frequency`
  // times. Ties go to the pair whose tokens sort first, so the result is deterministic.
  // `progress` (optional) sees the number of tokens so far after each merge.
  std::vector<BpeMerge> train(int64_t token_budget, int64_t min_frequency,
                              const std::function<void(int64_t)>& progress = {}) const;

 private:
  std::unique_ptr<tok::PreTokenizer> pre_;
  std::unordered_map<std::string, int64_t> counts_;  // piece (byte-level alphabet) -> count
};

}  // namespace braid
