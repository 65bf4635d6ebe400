// libFuzzer target: a chat template (tokenizer_config.json's "chat_template"), parsed and
// rendered for a short conversation with tools, as the server renders it.
#include "fuzz_common.hpp"
#include "tokenizer/chat_template.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const braid::ordered_json messages = braid::ordered_json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": "<think>\nlook it up\n</think>\n\n",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
    {"role": "tool", "content": "{\"temp\": -3}"},
    {"role": "user", "content": "Grüße 🦜"}])");
  static const braid::ordered_json tools = braid::ordered_json::parse(
      R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])");
  try {
    braid::ChatTemplate t(std::string(reinterpret_cast<const char*>(data), size), "fuzz", "<s>", "</s>");
    (void)t.render(messages, true, tools);
  } catch (const braid::Error&) {
  }
  return 0;
}
