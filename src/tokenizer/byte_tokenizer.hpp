// A byte-level tokenizer.json with one token per byte (no merges), for models braid
// creates itself before a trained tokenizer exists.
#pragma once
#include <cstdint>

#include "io/json.hpp"

namespace braid {

// Ids 0-255 are the bytes (GPT-2 byte-to-character alphabet), 256 is <|endoftext|>,
// and any ids up to vocab_size - 1 are reserved special tokens. vocab_size >= 257.
json byte_level_tokenizer_json(int64_t vocab_size);

}  // namespace braid
