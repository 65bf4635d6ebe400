// The byte-level BPE tokenizer.json braid writes for its own models: one token per
// byte, plus the merges learned by `braid tokenizer train` (none for an untrained model).
#pragma once
#include <cstdint>
#include <vector>

#include "io/json.hpp"
#include "tokenizer/bpe_trainer.hpp"

namespace braid {

// Ids 0-255 are the bytes (GPT-2 byte-to-character alphabet), 256 is <|endoftext|>,
// then each new token the merges form, in order; any ids left up to vocab_size - 1 are
// reserved special tokens. Throws when vocab_size cannot hold them all.
json byte_level_tokenizer_json(int64_t vocab_size, const std::vector<BpeMerge>& merges = {});
// The number of ids byte_level_tokenizer_json needs for these merges.
int64_t byte_level_vocab_size(const std::vector<BpeMerge>& merges);

}  // namespace braid
