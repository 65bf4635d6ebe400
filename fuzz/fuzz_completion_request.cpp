// libFuzzer target: the body of POST /v1/completions and of POST /v1/chat/completions, and the
// same bytes as a chat reply read for tool calls (whole, and streamed in pieces, which must
// find the same calls and release the same text).
#include <cstdlib>

#include "fuzz_common.hpp"
#include "serve/api.hpp"
#include "serve/tool_calls.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)braid::serve::parse_completion_request(text, braid::serve::RequestLimits{});
  } catch (const braid::serve::ApiError&) {
  }
  try {
    (void)braid::serve::parse_chat_request(text, braid::serve::RequestLimits{});
  } catch (const braid::serve::ApiError&) {
  }
  using braid::serve::ToolCallStream;
  ToolCallStream whole, pieces;
  ToolCallStream::Out a = whole.push(text), b;
  a.content += whole.finish().content;
  const size_t step = size > 0 ? 1 + data[0] % 7 : 1;
  for (size_t i = 0; i < size; i += step) {
    ToolCallStream::Out o = pieces.push(text.substr(i, step));
    b.content += o.content;
    b.calls.insert(b.calls.end(), o.calls.begin(), o.calls.end());
  }
  b.content += pieces.finish().content;
  if (a.content != b.content || a.calls.size() != b.calls.size()) std::abort();
  for (size_t i = 0; i < a.calls.size(); ++i)
    if (a.calls[i].name != b.calls[i].name || a.calls[i].arguments != b.calls[i].arguments) std::abort();
  return 0;
}
