// Tool calls in chat replies (serve/tool_calls.hpp): Hermes-style <tool_call> blocks become
// OpenAI tool_calls whether the reply arrives whole or a few characters at a time; anything
// that is not a well-formed call stays in the content as written.
#include <gtest/gtest.h>

#include "serve/api.hpp"
#include "serve/tool_calls.hpp"

namespace braid::serve {
namespace {

// The reply fed in pieces of `step` characters: the content released and the calls.
ToolCallStream::Out streamed(const std::string& text, size_t step) {
  ToolCallStream s;
  ToolCallStream::Out all;
  for (size_t i = 0; i < text.size(); i += step) {
    ToolCallStream::Out o = s.push(text.substr(i, step));
    all.content += o.content;
    for (auto& c : o.calls) all.calls.push_back(c);
  }
  all.content += s.finish().content;
  return all;
}

TEST(ToolCalls, CallsAreReadWholeAndInPieces) {
  const std::string reply =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", "
      "\"days\": 2}}\n"
      "</tool_call>\n<tool_call>{\"name\": \"now\"}</tool_call>";
  const ToolCallStream::Out whole = split_tool_calls(reply);
  ASSERT_EQ(whole.calls.size(), 2u);
  EXPECT_EQ(whole.calls[0].name, "get_weather");
  EXPECT_EQ(json::parse(whole.calls[0].arguments), json::parse(R"({"city": "Paris", "days": 2})"));
  EXPECT_EQ(whole.calls[1].name, "now");
  EXPECT_EQ(whole.calls[1].arguments, "{}");
  EXPECT_EQ(whole.content, "Let me check.");
  for (size_t step : {1, 2, 3, 7, 11, 1000}) {
    const ToolCallStream::Out s = streamed(reply, step);
    ASSERT_EQ(s.calls.size(), 2u) << step;
    EXPECT_EQ(s.calls[0].arguments, whole.calls[0].arguments) << step;
    EXPECT_EQ(s.content, "Let me check.\n\n") << step;  // untrimmed: the stream sent it as it came
  }
}

TEST(ToolCalls, TextThatIsNotACallStaysContent) {
  // No calls: the text unchanged, including a lone "<" and a tag start at the very end.
  for (const std::string t : {"plain answer", "a < b and <tool", "x <tool_call", "  spaced  "}) {
    EXPECT_EQ(split_tool_calls(t).content, t);
    EXPECT_TRUE(split_tool_calls(t).calls.empty());
    EXPECT_EQ(streamed(t, 1).content, t);
  }
  // Malformed blocks are content as written; the good one beside them is still a call.
  const std::string bad =
      "<tool_call>not json</tool_call><tool_call>{\"arguments\": {}}</tool_call>"
      "<tool_call>{\"name\": \"f\", \"arguments\": 3}</tool_call>"
      "<tool_call>{\"name\": \"g\", \"arguments\": \"{\\\"a\\\": 1}\"}</tool_call>"
      "<tool_call>{\"name\": \"unclosed\"}";
  for (size_t step : {1, 5, 1000}) {
    const ToolCallStream::Out s = streamed(bad, step);
    ASSERT_EQ(s.calls.size(), 1u) << step;
    EXPECT_EQ(s.calls[0].name, "g");
    EXPECT_EQ(s.calls[0].arguments, "{\"a\": 1}");  // string arguments are JSON text already
    EXPECT_EQ(s.content,
              "<tool_call>not json</tool_call><tool_call>{\"arguments\": {}}</tool_call>"
              "<tool_call>{\"name\": \"f\", \"arguments\": 3}</tool_call><tool_call>{\"name\": \"unclosed\"}")
        << step;
  }
}

TEST(ToolCalls, ChatBodiesCarryTheCalls) {
  Choice called, plain, cut;
  called.text = "<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": 1}}</tool_call>";
  called.finish_reason = "stop";
  plain.text = "no call here";
  plain.finish_reason = "stop";
  cut.text = "ok <tool_call>{\"name\": \"g\"}</tool_call>";
  cut.finish_reason = "length";
  const std::vector<Choice> choices = {called, plain, cut};
  const json body = chat_completion_body("chatcmpl-ab-1", 0, "m", choices, Usage{}, false, true);
  const json& c0 = body["choices"][0];
  EXPECT_TRUE(c0["message"]["content"].is_null());
  EXPECT_EQ(c0["finish_reason"], "tool_calls");
  ASSERT_EQ(c0["message"]["tool_calls"].size(), 1u);
  const json& call = c0["message"]["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["id"], "call_ab-1_0_0");
  EXPECT_EQ(call["function"]["name"], "f");
  EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>()), json::parse(R"({"x": 1})"));
  EXPECT_EQ(body["choices"][1]["message"]["content"], "no call here");
  EXPECT_FALSE(body["choices"][1]["message"].contains("tool_calls"));
  EXPECT_EQ(body["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][2]["message"]["content"], "ok");
  EXPECT_EQ(body["choices"][2]["finish_reason"], "length");  // cut off, not a finished call
  // Without tools the text is left alone.
  const json untouched = chat_completion_body("chatcmpl-ab-1", 0, "m", choices, Usage{}, false, false);
  EXPECT_EQ(untouched["choices"][0]["message"]["content"], called.text);
  // A streamed call delta as OpenAI clients read it.
  const json d = tool_call_delta("chatcmpl-ab-1", 2, 1, ToolCall{"f", "{}"});
  EXPECT_EQ(d["tool_calls"][0]["index"], 1);
  EXPECT_EQ(d["tool_calls"][0]["id"], "call_ab-1_2_1");
  EXPECT_EQ(d["tool_calls"][0]["function"]["arguments"], "{}");
}

TEST(ToolCalls, RequestsSayWhetherToReadCalls) {
  const RequestLimits lim;
  const std::string msgs = R"("messages": [{"role": "user", "content": "x"}])";
  const std::string tools = R"("tools": [{"type": "function", "function": {"name": "f"}}])";
  EXPECT_TRUE(parse_chat_request("{" + msgs + ", " + tools + "}", lim).tool_calls);
  EXPECT_TRUE(parse_chat_request("{" + msgs + ", " + tools + R"(, "tool_choice": "auto"})", lim).tool_calls);
  EXPECT_FALSE(parse_chat_request("{" + msgs + ", " + tools + R"(, "tool_choice": "none"})", lim).tool_calls);
  EXPECT_FALSE(parse_chat_request("{" + msgs + "}", lim).tool_calls);
  EXPECT_FALSE(parse_chat_request("{" + msgs + R"(, "tools": []})", lim).tool_calls);
}

}  // namespace
}  // namespace braid::serve
