// Tool calls in a chat reply. Models trained with Hermes-style tool templates (Hermes, Qwen 2.5
// and 3, and the many that follow them) write each call as
//   <tool_call>{"name": "...", "arguments": {...}}</tool_call>
// which the server returns as OpenAI `tool_calls`. A block that is not a JSON object with a
// string "name" (and, if present, an object or string "arguments") stays in the content as
// written, as does an unclosed one; other call formats come back as content.
#pragma once
#include <string>
#include <vector>

namespace braid::serve {

struct ToolCall {
  std::string name;
  std::string arguments;  // JSON text of an object ("{}" when the model gave none)
};

// Reads a reply as it is generated: push() each piece of text, then finish(). Content is
// released as soon as it cannot be the start of a call; a call is released when it closes.
class ToolCallStream {
 public:
  struct Out {
    std::string content;
    std::vector<ToolCall> calls;
  };
  Out push(const std::string& text);
  Out finish();  // the text held back (a partial tag, an unclosed call) as content

 private:
  std::string held_;  // text not yet released: a possible tag start, or a call being read
  bool in_call_ = false;
};

// A whole reply: its calls and the content around them (surrounding whitespace trimmed when
// there are calls; the text unchanged when there are none).
ToolCallStream::Out split_tool_calls(const std::string& text);

}  // namespace braid::serve
