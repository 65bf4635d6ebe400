// Training data: text files tokenized into one packed token stream (documents joined by
// a separator token), cached on disk, and split into train / held-out parts (sampled as
// random windows by TextWindows, train/source.hpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.hpp"

namespace braid {

// The whole of a text file; throws naming a missing, unreadable, empty file or a directory.
std::string read_training_text(const std::string& path);

// Each file is one document, followed by `separator` when it is >= 0. Errors name an
// unreadable file, invalid UTF-8, or a corpus with no tokens.
std::vector<int32_t> tokenize_files(const std::vector<std::string>& files, const Tokenizer& tok,
                                    int32_t separator);

// Token cache file: "BRAIDTOK", u32 version (1), u32 0, u64 count, count int32 tokens
// (little-endian). Written atomically; reading checks size and header.
void write_token_cache(const std::string& path, const std::vector<int32_t>& tokens);
std::vector<int32_t> read_token_cache(const std::string& path);

struct TokenSplit {
  std::vector<int32_t> train, val;
};
// The last val_fraction of the stream is held out (at least `window` tokens when
// val_fraction > 0); errors when either part is shorter than `window`.
TokenSplit split_tokens(const std::vector<int32_t>& tokens, double val_fraction, int64_t window);

}  // namespace braid
