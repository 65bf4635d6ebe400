#include "tokenizer/byte_tokenizer.hpp"

#include "core/error.hpp"
#include "tokenizer/unicode.hpp"

namespace braid {

json byte_level_tokenizer_json(int64_t vocab_size) {
  check(vocab_size >= 257, "a byte-level tokenizer needs vocab_size >= 257, found ", vocab_size);
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[unicode::byte_to_char(uint8_t(b))] = b;
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
  special("<|endoftext|>", 256);
  for (int64_t id = 257; id < vocab_size; ++id) special("<|reserved_" + std::to_string(id) + "|>", id);
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
            {"merges", json::array()}}}};
}

}  // namespace braid
