// The completions request parser: every accepted field lands where the engine reads it,
// and every bad request is a 400 naming its parameter.
#include <gtest/gtest.h>

#include "serve/api.hpp"

namespace braid::serve {
namespace {

CompletionRequest parse(const std::string& body) { return parse_completion_request(body, RequestLimits{}); }

// The parameter and message of the ApiError a body raises ("" when it parses).
std::pair<std::string, std::string> refusal(const std::string& body, const RequestLimits& lim = {}) {
  try {
    parse_completion_request(body, lim);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400) << body;
    return {e.param, e.what()};
  }
  return {"", ""};
}

TEST(ServeApi, ParsesEveryField) {
  const CompletionRequest r = parse(R"({"model": "m", "prompt": "hi", "max_tokens": 7, "temperature": 0.5,
      "top_p": 0.9, "seed": 42, "stop": ["a", "b"], "n": 3, "stream": true,
      "stream_options": {"include_usage": true}, "logprobs": 2, "user": "u", "echo": false, "best_of": null})");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt_texts, std::vector<std::string>{"hi"});
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_DOUBLE_EQ(r.temperature, 0.5);
  EXPECT_DOUBLE_EQ(r.top_p, 0.9);
  EXPECT_EQ(r.seed, 42u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.n, 3);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.logprobs, 2);
}

TEST(ServeApi, PromptsAsTextIdsOrLists) {
  EXPECT_EQ(parse(R"({"prompt": [1, 2, 3]})").prompt_ids, (std::vector<std::vector<int32_t>>{{1, 2, 3}}));
  EXPECT_EQ(parse(R"({"prompt": [[1], [2, 3]]})").prompt_ids,
            (std::vector<std::vector<int32_t>>{{1}, {2, 3}}));
  EXPECT_EQ(parse(R"({"prompt": ["a", "b"]})").prompt_texts, (std::vector<std::string>{"a", "b"}));
  const CompletionRequest d = parse(R"({"prompt": "x"})");  // OpenAI's defaults
  EXPECT_EQ(d.max_tokens, 16);
  EXPECT_DOUBLE_EQ(d.temperature, 1.0);
  EXPECT_EQ(d.n, 1);
  EXPECT_FALSE(d.seed.has_value());
  EXPECT_EQ(d.logprobs, -1);
}

TEST(ServeApi, BadRequestsNameTheParameter) {
  EXPECT_NE(refusal("{not json").second.find("not valid JSON"), std::string::npos);
  EXPECT_NE(refusal("[1]").second.find("must be a JSON object"), std::string::npos);
  // Found by fuzz_completion_request: a number beyond double's range is malformed JSON too.
  EXPECT_NE(refusal(R"({"prompt": "x", "max_tokens": 1e999})").second.find("number overflow"),
            std::string::npos);
  EXPECT_EQ(refusal(R"({"max_tokens": 3})").first, "prompt");
  EXPECT_EQ(refusal(R"({"prompt": ""})").first, "prompt");
  EXPECT_EQ(refusal(R"({"prompt": []})").first, "prompt");
  EXPECT_EQ(refusal(R"({"prompt": 5})").first, "prompt");
  EXPECT_EQ(refusal(R"({"prompt": [1, -2]})").first, "prompt[1]");
  EXPECT_EQ(refusal(R"({"prompt": [1, 2.5]})").first, "prompt[1]");
  EXPECT_EQ(refusal(R"({"prompt": ["a", [1]]})").first, "prompt[1]");
  EXPECT_EQ(refusal(R"({"prompt": "x", "max_tokens": "9"})").first, "max_tokens");
  EXPECT_EQ(refusal(R"({"prompt": "x", "max_tokens": -1})").first, "max_tokens");
  EXPECT_EQ(refusal(R"({"prompt": "x", "max_tokens": 99999999999999999999})").first, "max_tokens");
  EXPECT_EQ(refusal(R"({"prompt": "x", "temperature": 2.5})").first, "temperature");
  EXPECT_EQ(refusal(R"({"prompt": "x", "top_p": 0})").first, "top_p");
  EXPECT_EQ(refusal(R"({"prompt": "x", "n": 0})").first, "n");
  EXPECT_EQ(refusal(R"({"prompt": "x", "stream": "yes"})").first, "stream");
  EXPECT_EQ(refusal(R"({"prompt": "x", "stop": [1]})").first, "stop[0]");
  EXPECT_EQ(refusal(R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})").first, "stop");
  EXPECT_EQ(refusal(R"({"prompt": "x", "logprobs": 21})").first, "logprobs");
  EXPECT_EQ(refusal(R"({"prompt": "x", "echo": true})").first, "echo");
  EXPECT_EQ(refusal(R"({"prompt": "x", "frequency_penalty": 1})").first, "frequency_penalty");
  EXPECT_EQ(refusal(R"({"prompt": "x", "temprature": 1})").first, "temprature");
  EXPECT_EQ(refusal(R"({"prompt": "x", "stream_options": {"include_usage": true}})").first, "stream_options");
  RequestLimits lim;
  lim.max_prompt_tokens = 2;
  lim.max_new_tokens = 5;
  EXPECT_EQ(refusal(R"({"prompt": [1, 2, 3]})", lim).first, "prompt");
  EXPECT_EQ(refusal(R"({"prompt": [1], "max_tokens": 6})", lim).first, "max_tokens");
}

TEST(ServeApi, ErrorBodiesAreOpenAIShaped) {
  const json j = json::parse(error_body(ApiError(400, "n: must be in [1, 16]", "n")));
  EXPECT_EQ(j["error"]["message"], "n: must be in [1, 16]");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "n");
  EXPECT_TRUE(j["error"]["code"].is_null());
  EXPECT_EQ(json::parse(error_body(ApiError(401, "no key")))["error"]["type"], "authentication_error");
  EXPECT_EQ(json::parse(error_body(ApiError(429, "full")))["error"]["type"], "rate_limit_error");
}

}  // namespace
}  // namespace braid::serve
