// The OpenAI completions and chat completions APIs as braid serves them: request bodies
// parsed and checked (every problem an ApiError naming the parameter), and the JSON bodies
// of responses, stream chunks and errors.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/json.hpp"
#include "serve/tool_calls.hpp"

namespace braid::serve {

// An HTTP error with an OpenAI-style body: {"error": {"message", "type", "param", "code"}}.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = "", std::string type = "");
  int status;
  std::string param, type;
};
json error_json(const ApiError& e);
std::string error_body(const ApiError& e);  // error_json, serialised

// What the server accepts, checked while parsing.
struct RequestLimits {
  int64_t max_prompt_tokens = 32768;
  int64_t max_new_tokens = 4096;
  int max_n = 16;
};

struct CompletionRequest {
  std::string model;
  // The prompt, as text (tokenized by the server) or as token ids; a list of prompts is
  // served as one request whose choices are prompt-major (index = prompt * n + j).
  std::vector<std::string> prompt_texts;
  std::vector<std::vector<int32_t>> prompt_ids;
  int64_t max_tokens = 16;
  double temperature = 1.0;
  double top_p = 1.0;
  std::optional<uint64_t> seed;  // choice i samples with seed + i
  std::vector<std::string> stop;
  int n = 1;
  bool stream = false;
  int logprobs = -1;           // -1: none; k >= 0: the chosen token's log-probability and the k most likely
  bool include_usage = false;  // stream_options.include_usage
  size_t n_prompts() const { return prompt_texts.empty() ? prompt_ids.size() : prompt_texts.size(); }
};

// Throws ApiError (400) for malformed JSON, unknown types or values out of range.
CompletionRequest parse_completion_request(const std::string& body, const RequestLimits& limits);

// A chat completion: the messages are rendered by the model's chat template into one text
// prompt; the sampling parameters are those of a completion. Content given as text parts
// is joined into one string; other part types (images, audio) are refused.
struct ChatRequest {
  CompletionRequest request;     // without prompts; logprobs = top_logprobs when logprobs is true
  ordered_json messages;         // [{role, content, ...}], keys in the order sent
  ordered_json tools;            // null or the array sent (the template decides how to show it)
  ordered_json template_kwargs;  // chat_template_kwargs: further template variables
  bool add_generation_prompt = true;
  bool tool_calls = false;  // tools were given and tool_choice is not "none": parse the reply's calls
};
ChatRequest parse_chat_request(const std::string& body, const RequestLimits& limits);

// One generated token's log-probabilities (present when logprobs >= 0).
struct TokenLogprob {
  std::string token;
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;  // most likely first
};

struct Choice {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprob> logprobs;
  std::string finish_reason;  // "stop" or "length"
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

json completion_body(const std::string& id, int64_t created, const std::string& model,
                     const std::vector<Choice>& choices, const Usage& usage, bool with_logprobs);
// One server-sent event's JSON: a piece of choice `index` (finish_reason empty while it runs).
json completion_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                      const std::string& text, const std::vector<int32_t>& ids, const TokenLogprob* lp,
                      const std::string& finish_reason);
json usage_json(const Usage& u);

// The chat forms of the above: choices carry {"role": "assistant", "content"} messages
// (deltas in a stream), log-probabilities as {"content": [{token, logprob, bytes,
// top_logprobs}]}.
// With tool_calls, each choice's text is read for calls (serve/tool_calls.hpp): a choice that
// made any has message.tool_calls, its remaining content (null when none), and finish_reason
// "tool_calls" where it stopped by itself.
json chat_completion_body(const std::string& id, int64_t created, const std::string& model,
                          const std::vector<Choice>& choices, const Usage& usage, bool with_logprobs,
                          bool tool_calls = false);
// A streamed delta carrying one call, the index-th of its choice (id: call_<id suffix>_<index>).
json tool_call_delta(const std::string& completion_id, int choice, int index, const ToolCall& call);
// The id of a choice's index-th call.
std::string tool_call_id(const std::string& completion_id, int choice, int index);
// `delta` is {"role": "assistant", "content": ""} for a choice's first chunk, else {"content": text}
// ({} for a final chunk without text).
json chat_completion_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                           const json& delta, const TokenLogprob* lp, const std::string& finish_reason);

}  // namespace braid::serve
