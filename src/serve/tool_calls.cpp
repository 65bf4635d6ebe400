#include "serve/tool_calls.hpp"

#include <algorithm>

#include "io/json.hpp"

namespace braid::serve {

namespace {

constexpr std::string_view kOpen = "<tool_call>", kClose = "</tool_call>";

// The call a block's inner text describes, if it is one.
bool parse_call(std::string_view inner, ToolCall& call) {
  const json j = json::parse(inner.begin(), inner.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  const auto name = j.find("name");
  if (name == j.end() || !name->is_string() || name->get<std::string>().empty()) return false;
  call.name = name->get<std::string>();
  const auto args = j.find("arguments");
  if (args == j.end() || args->is_null()) {
    call.arguments = "{}";
  } else if (args->is_object()) {
    call.arguments = args->dump();
  } else if (args->is_string()) {  // already JSON text, as some models write it
    call.arguments = args->get<std::string>();
  } else {
    return false;
  }
  return true;
}

// How many characters at the end of s could begin `tag`.
size_t partial_tag(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

}  // namespace

ToolCallStream::Out ToolCallStream::push(const std::string& text) {
  Out out;
  held_ += text;
  for (;;) {
    if (!in_call_) {
      const size_t at = held_.find(kOpen);
      if (at == std::string::npos) {
        const size_t keep = partial_tag(held_, kOpen);
        out.content += held_.substr(0, held_.size() - keep);
        held_.erase(0, held_.size() - keep);
        return out;
      }
      out.content += held_.substr(0, at);
      held_.erase(0, at);
      in_call_ = true;
    }
    const size_t end = held_.find(kClose, kOpen.size());
    if (end == std::string::npos) return out;
    const size_t len = end + kClose.size();
    ToolCall call;
    if (parse_call(std::string_view(held_).substr(kOpen.size(), end - kOpen.size()), call))
      out.calls.push_back(std::move(call));
    else
      out.content += held_.substr(0, len);
    held_.erase(0, len);
    in_call_ = false;
  }
}

ToolCallStream::Out ToolCallStream::finish() {
  Out out;
  out.content = std::move(held_);
  held_.clear();
  in_call_ = false;
  return out;
}

ToolCallStream::Out split_tool_calls(const std::string& text) {
  ToolCallStream s;
  ToolCallStream::Out out = s.push(text);
  out.content += s.finish().content;
  if (out.calls.empty()) return out;  // the text as it was
  const auto space = [](unsigned char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  size_t b = 0, e = out.content.size();
  while (b < e && space(out.content[b])) ++b;
  while (e > b && space(out.content[e - 1])) --e;
  out.content = out.content.substr(b, e - b);
  return out;
}

}  // namespace braid::serve
