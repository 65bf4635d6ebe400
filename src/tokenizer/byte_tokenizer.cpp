#include "tokenizer/byte_tokenizer.hpp"

#include <unordered_set>

#include "core/error.hpp"
#include "tokenizer/unicode.hpp"

namespace braid {

namespace {

constexpr int64_t kFirstMergedId = 257;  // after the 256 bytes and <|endoftext|>

// Each distinct token the merges form, in order of first appearance.
std::vector<std::string> merged_tokens(const std::vector<BpeMerge>& merges) {
  std::unordered_set<std::string> seen;
  for (int b = 0; b < 256; ++b) seen.insert(unicode::byte_to_char(uint8_t(b)));
  std::vector<std::string> out;
  for (const auto& [l, r] : merges)
    if (seen.insert(l + r).second) out.push_back(l + r);
  return out;
}

}  // namespace

int64_t byte_level_vocab_size(const std::vector<BpeMerge>& merges) {
  return kFirstMergedId + int64_t(merged_tokens(merges).size());
}

json byte_level_tokenizer_json(int64_t vocab_size, const std::vector<BpeMerge>& merges) {
  const std::vector<std::string> formed = merged_tokens(merges);
  const int64_t needed = kFirstMergedId + int64_t(formed.size());
  check(vocab_size >= needed, "a byte-level tokenizer with ", formed.size(),
        " merged tokens needs vocab_size >= ", needed, ", found ", vocab_size);
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[unicode::byte_to_char(uint8_t(b))] = b;
  int64_t next = kFirstMergedId;
  for (const auto& t : formed) vocab[t] = next++;
  json merge_list = json::array();
  for (const auto& [l, r] : merges) merge_list.push_back(json::array({l, r}));
  json added = json::array();
  auto special = [&](const std::string& s, int64_t id) {
    vocab[s] = id;
    added.push_back({{"id", id},
                     {"content", s},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  };
  special("<|endoftext|>", kFirstMergedId - 1);
  for (int64_t id = next; id < vocab_size; ++id) special("<|reserved_" + std::to_string(id) + "|>", id);
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder",
           {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merge_list}}}};
}

}  // namespace braid
