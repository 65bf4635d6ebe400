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

TEST(ServeApi, ChatRequests) {
  const RequestLimits lim;
  const ChatRequest r = parse_chat_request(R"({"model": "m", "messages": [
      {"role": "system", "content": "s", "zeta": 1, "alpha": 2},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
    "max_completion_tokens": 7, "temperature": 0.5, "logprobs": true, "top_logprobs": 3, "stream": true,
    "tools": [{"type": "function", "function": {"name": "f", "z": 1, "a": 2}}], "tool_choice": "auto",
    "chat_template_kwargs": {"enable_thinking": false}, "n": 2, "seed": 5, "stop": ["x"]})",
                                           lim);
  EXPECT_EQ(r.request.model, "m");
  EXPECT_EQ(r.request.max_tokens, 7);
  EXPECT_EQ(r.request.temperature, 0.5);
  EXPECT_EQ(r.request.logprobs, 3);
  EXPECT_TRUE(r.request.stream);
  EXPECT_EQ(r.request.n, 2);
  EXPECT_EQ(r.request.seed, 5u);
  EXPECT_EQ(r.request.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(r.messages[1]["content"], "ab");
  EXPECT_TRUE(r.messages[2]["content"].is_null());
  EXPECT_EQ(r.messages[0].dump(), R"({"role":"system","content":"s","zeta":1,"alpha":2})");  // order kept
  EXPECT_EQ(r.tools.dump(), R"([{"type":"function","function":{"name":"f","z":1,"a":2}}])");
  EXPECT_EQ(r.template_kwargs["enable_thinking"], false);
  EXPECT_TRUE(r.add_generation_prompt);
  EXPECT_EQ(parse_chat_request(R"({"messages": [{"role": "user", "content": "x"}]})", lim).request.logprobs,
            -1);

  auto param_of = [&](const std::string& body) {
    try {
      parse_chat_request(body, lim);
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 400);
      return e.param;
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(param_of(R"({})"), "messages");
  EXPECT_EQ(param_of(R"({"messages": []})"), "messages");
  EXPECT_EQ(param_of(R"({"messages": [{"content": "x"}]})"), "messages[0].role");
  EXPECT_EQ(param_of(R"({"messages": [{"role": "wizard", "content": "x"}]})"), "messages[0].role");
  EXPECT_EQ(param_of(R"({"messages": [{"role": "user"}]})"), "messages[0].content");
  EXPECT_EQ(param_of(R"({"messages": [{"role": "user", "content": 5}]})"), "messages[0].content");
  EXPECT_EQ(param_of(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})"),
            "messages[0].content[0].text");
  EXPECT_EQ(param_of(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})"),
            "top_logprobs");
  EXPECT_EQ(param_of(R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})"),
            "tool_choice");
  EXPECT_EQ(
      param_of(
          R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})"),
      "response_format");
  EXPECT_EQ(param_of(R"({"messages": [{"role": "user", "content": "x"}], "prompt": "x"})"), "prompt");
  EXPECT_EQ(param_of(R"({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -1})"),
            "max_completion_tokens");
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
