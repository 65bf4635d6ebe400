#include "runtime/generate.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "tokenizer/tokenizer.hpp"

namespace braid {

std::vector<int32_t> default_stop_ids(const Model& model, const Tokenizer* tok) {
  std::vector<int32_t> ids;
  for (int64_t id : model.spec().eos_token_ids) ids.push_back(int32_t(id));
  if (tok && tok->token_id("<|endoftext|>") >= 0) ids.push_back(tok->token_id("<|endoftext|>"));
  return ids;
}

std::vector<int32_t> generate(Session& s, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                              const std::function<bool(int32_t)>& on_token) {
  check(!prompt.empty(), "prompt is empty: at least one token is needed to start generation");
  Sampler sampler(opt.sampling);
  std::vector<int32_t> out;
  const int64_t V = s.model().spec().vocab_size;
  const std::vector<float>* logits = &s.feed(prompt);
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    int32_t tok = sampler.sample(logits->data(), V);
    out.push_back(tok);
    if (on_token && !on_token(tok)) break;
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), tok) != opt.stop_ids.end()) break;
    if (i + 1 < opt.max_new_tokens) logits = &s.feed(&tok, 1);
  }
  return out;
}

}  // namespace braid
