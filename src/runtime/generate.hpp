// Streaming generation: prefill the prompt, then decode one token at a time, handing
// each token to a callback as soon as it is chosen.
#pragma once
#include <functional>
#include <vector>

#include "runtime/sampling.hpp"
#include "runtime/session.hpp"

namespace braid {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // generation ends after emitting one of these
};

class Tokenizer;

// The ids that end generation: the model's EOS ids and the tokenizer's <|endoftext|>.
std::vector<int32_t> default_stop_ids(const Model& model, const Tokenizer* tok);

// Returns the generated ids. on_token returns false to stop early.
std::vector<int32_t> generate(Session& s, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                              const std::function<bool(int32_t)>& on_token = nullptr);

}  // namespace braid
