#include "serve/api.hpp"

#include <cmath>
#include <limits>

namespace braid::serve {

ApiError::ApiError(int status_, std::string message, std::string param_, std::string type_)
    : std::runtime_error(std::move(message)),
      status(status_),
      param(std::move(param_)),
      type(std::move(type_)) {
  if (type.empty())
    type = status == 401   ? "authentication_error"
           : status == 429 ? "rate_limit_error"
           : status >= 500 ? "server_error"
                           : "invalid_request_error";
}

json error_json(const ApiError& e) {
  json err = {{"message", e.what()}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  return json{{"error", err}};
}

std::string error_body(const ApiError& e) { return error_json(e).dump(); }

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg) {
  throw ApiError(400, param + ": " + msg, param);
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "a number";
  }
}

double number(const json& v, const std::string& param, double lo, double hi) {
  if (!v.is_number()) bad(param, std::string("expected a number, found ") + type_name(v));
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi))
    bad(param, "must be in [" + json(lo).dump() + ", " + json(hi).dump() + "], found " + v.dump());
  return x;
}

int64_t integer(const json& v, const std::string& param, int64_t lo, int64_t hi) {
  if (!v.is_number_integer())
    bad(param, std::string("expected an integer, found ") + (v.is_number() ? v.dump() : type_name(v)));
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    bad(param, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], found " + v.dump());
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    bad(param, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], found " + v.dump());
  return x;
}

std::vector<int32_t> token_ids(const json& a, const std::string& param) {
  std::vector<int32_t> ids;
  ids.reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i)
    ids.push_back(int32_t(
        integer(a[i], param + "[" + std::to_string(i) + "]", 0, std::numeric_limits<int32_t>::max())));
  return ids;
}

void read_prompt(const json& p, CompletionRequest& r, const RequestLimits& lim) {
  const std::string param = "prompt";
  auto check_len = [&](size_t n, const std::string& where) {
    if (n == 0) bad(where, "is empty");
    if (int64_t(n) > lim.max_prompt_tokens)
      bad(where, "has " + std::to_string(n) + " tokens; this server accepts at most " +
                     std::to_string(lim.max_prompt_tokens));
  };
  if (p.is_string()) {
    if (p.get_ref<const std::string&>().empty()) bad(param, "is empty");
    r.prompt_texts.push_back(p.get<std::string>());
    return;
  }
  if (!p.is_array() || p.empty())
    bad(param, "expected a string, an array of token ids, or an array of either");
  if (p[0].is_number()) {
    r.prompt_ids.push_back(token_ids(p, param));
    check_len(r.prompt_ids.back().size(), param);
    return;
  }
  for (size_t i = 0; i < p.size(); ++i) {
    const std::string where = param + "[" + std::to_string(i) + "]";
    if (p[i].is_string() && r.prompt_ids.empty()) {
      if (p[i].get_ref<const std::string&>().empty()) bad(where, "is empty");
      r.prompt_texts.push_back(p[i].get<std::string>());
    } else if (p[i].is_array() && r.prompt_texts.empty()) {
      r.prompt_ids.push_back(token_ids(p[i], where));
      check_len(r.prompt_ids.back().size(), where);
    } else {
      bad(where, "a list of prompts must be all strings or all arrays of token ids");
    }
  }
}

}  // namespace

namespace {

json parse_body(const std::string& body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {  // malformed, or a number beyond double's range
    std::string m = e.what();
    const size_t at = m.find("] ");  // drop nlohmann's "[json.exception.parse_error.101] "
    throw ApiError(400,
                   "the request body is not valid JSON: " + (at == std::string::npos ? m : m.substr(at + 2)));
  }
  if (!j.is_object())
    throw ApiError(400, std::string("the request body must be a JSON object, found ") + type_name(j));
  return j;
}

// The parameters completions and chat completions share; false for any other key.
bool read_common(const std::string& key, const json& v, CompletionRequest& r, const RequestLimits& lim) {
  if (key == "model") {
    if (!v.is_string()) bad(key, std::string("expected a string, found ") + type_name(v));
    r.model = v.get<std::string>();
  } else if (key == "max_tokens") {
    r.max_tokens = integer(v, key, 0, lim.max_new_tokens);
  } else if (key == "temperature") {
    r.temperature = number(v, key, 0, 2);
  } else if (key == "top_p") {
    r.top_p = number(v, key, 0, 1);
    if (r.top_p == 0) bad(key, "must be > 0");
  } else if (key == "seed") {
    r.seed =
        uint64_t(integer(v, key, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  } else if (key == "n") {
    r.n = int(integer(v, key, 1, lim.max_n));
  } else if (key == "stream") {
    if (!v.is_boolean()) bad(key, std::string("expected a boolean, found ") + type_name(v));
    r.stream = v.get<bool>();
  } else if (key == "stream_options") {
    if (!v.is_object()) bad(key, std::string("expected an object, found ") + type_name(v));
    if (v.contains("include_usage")) {
      if (!v["include_usage"].is_boolean()) bad("stream_options.include_usage", "expected a boolean");
      r.include_usage = v["include_usage"].get<bool>();
    }
  } else if (key == "stop") {
    if (v.is_string()) {
      r.stop.push_back(v.get<std::string>());
    } else if (v.is_array() && v.size() <= 4) {
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_string()) bad(key + "[" + std::to_string(i) + "]", "expected a string");
        r.stop.push_back(v[i].get<std::string>());
      }
    } else {
      bad(key, "expected a string or an array of at most 4 strings");
    }
  } else if (key == "logit_bias") {
    if (!(v.is_object() && v.empty())) bad(key, "is not supported by this server");
  } else if (key == "presence_penalty" || key == "frequency_penalty") {
    if (number(v, key, -2, 2) != 0) bad(key, "is not supported by this server (only 0)");
  } else if (key == "user") {
    // an end-user label; nothing to do with it
  } else {
    return false;
  }
  return true;
}

void check_stream_options(const CompletionRequest& r) {
  if (r.stream == false && r.include_usage) bad("stream_options", "is only allowed with stream: true");
}

// A chat message's content as text: a string, null (an assistant turn with only tool
// calls), or an array of text parts, which are concatenated.
ordered_json message_content(const ordered_json& c, const std::string& where) {
  if (c.is_string() || c.is_null()) return c;
  if (!c.is_array()) bad(where, "expected a string, null or an array of content parts");
  std::string text;
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string w = where + "[" + std::to_string(i) + "]";
    const ordered_json& part = c[i];
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      bad(w, "expected a content part {\"type\": ..., ...}");
    if (part["type"] != "text") bad(w + ".type", "only \"text\" parts are supported by this server");
    if (!part.contains("text") || !part["text"].is_string()) bad(w + ".text", "expected a string");
    text += part["text"].get<std::string>();
  }
  return text;
}

ordered_json read_messages(const ordered_json& m) {
  if (!m.is_array() || m.empty()) bad("messages", "expected a non-empty array of messages");
  ordered_json out = ordered_json::array();
  for (size_t i = 0; i < m.size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m[i].is_object()) bad(where, "expected an object with a role and content");
    ordered_json msg = m[i];
    if (!msg.contains("role") || !msg["role"].is_string()) bad(where + ".role", "expected a string");
    const std::string role = msg["role"].get<std::string>();
    if (role != "system" && role != "developer" && role != "user" && role != "assistant" && role != "tool")
      bad(where + ".role", "must be system, developer, user, assistant or tool, found '" + role + "'");
    if (!msg.contains("content") && !(role == "assistant" && msg.contains("tool_calls")))
      bad(where + ".content", "missing");
    if (msg.contains("content")) msg["content"] = message_content(msg["content"], where + ".content");
    out.push_back(std::move(msg));
  }
  return out;
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body, const RequestLimits& lim) {
  const json j = parse_body(body);
  CompletionRequest r;
  if (!j.contains("prompt")) throw ApiError(400, "prompt: missing", "prompt");
  for (const auto& [key, v] : j.items()) {
    if (v.is_null() && key != "prompt") continue;  // null means "the default", as OpenAI's clients send it
    if (read_common(key, v, r, lim)) continue;
    if (key == "prompt") {
      read_prompt(v, r, lim);
    } else if (key == "logprobs") {
      r.logprobs = int(integer(v, key, 0, 20));
    } else if (key == "echo" || key == "best_of" || key == "suffix") {
      // Accepted by OpenAI, not implemented here: refuse rather than silently ignore.
      const bool harmless = (key == "echo" && v == false) || (key == "best_of" && v == 1);
      if (!harmless) bad(key, "is not supported by this server");
    } else {
      bad(key, "unknown parameter");
    }
  }
  check_stream_options(r);
  return r;
}

ChatRequest parse_chat_request(const std::string& body, const RequestLimits& lim) {
  const json j = parse_body(body);
  // Messages, tools and template arguments keep their keys' order: templates print them.
  const ordered_json oj = ordered_json::parse(body);
  ChatRequest r;
  if (!j.contains("messages")) throw ApiError(400, "messages: missing", "messages");
  bool logprobs = false, tool_choice_none = false;
  int top_logprobs = 0;
  for (const auto& [key, v] : j.items()) {
    if (v.is_null() && key != "messages") continue;
    if (read_common(key, v, r.request, lim)) continue;
    if (key == "messages") {
      r.messages = read_messages(oj["messages"]);
    } else if (key == "max_completion_tokens") {
      r.request.max_tokens = integer(v, key, 0, lim.max_new_tokens);
    } else if (key == "logprobs") {
      if (!v.is_boolean()) bad(key, std::string("expected a boolean, found ") + type_name(v));
      logprobs = v.get<bool>();
    } else if (key == "top_logprobs") {
      top_logprobs = int(integer(v, key, 0, 20));
    } else if (key == "tools") {
      if (!v.is_array()) bad(key, std::string("expected an array, found ") + type_name(v));
      r.tools = oj["tools"];
    } else if (key == "tool_choice") {
      if (!(v == "none" || v == "auto"))
        bad(key, "only \"none\" and \"auto\" are supported (a named function or \"required\" is not)");
      tool_choice_none = v == "none";
    } else if (key == "parallel_tool_calls") {
      if (!v.is_boolean()) bad(key, std::string("expected a boolean, found ") + type_name(v));
    } else if (key == "response_format") {
      if (!(v.is_object() && v.value("type", "") == "text"))
        bad(key, "only {\"type\": \"text\"} is supported");
    } else if (key == "chat_template_kwargs") {
      if (!v.is_object()) bad(key, std::string("expected an object, found ") + type_name(v));
      r.template_kwargs = oj["chat_template_kwargs"];
    } else if (key == "add_generation_prompt") {
      if (!v.is_boolean()) bad(key, std::string("expected a boolean, found ") + type_name(v));
      r.add_generation_prompt = v.get<bool>();
    } else {
      bad(key, "unknown parameter");
    }
  }
  if (top_logprobs > 0 && !logprobs) bad("top_logprobs", "needs logprobs: true");
  r.request.logprobs = logprobs ? top_logprobs : -1;
  r.tool_calls = r.tools.is_array() && !r.tools.empty() && !tool_choice_none;
  check_stream_options(r.request);
  return r;
}

namespace {

// Offsets of each token's text in the choice's text (all 0 in a stream chunk).
json logprobs_json(const std::vector<TokenLogprob>& lps, const std::vector<size_t>& offsets) {
  json tokens = json::array(), token_lps = json::array(), top = json::array(), off = json::array();
  for (size_t i = 0; i < lps.size(); ++i) {
    tokens.push_back(lps[i].token);
    token_lps.push_back(lps[i].logprob);
    json t = json::object();
    for (const auto& [s, lp] : lps[i].top) t[s] = lp;
    top.push_back(t);
    off.push_back(offsets[i]);
  }
  return {{"tokens", tokens}, {"token_logprobs", token_lps}, {"top_logprobs", top}, {"text_offset", off}};
}

}  // namespace

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json completion_body(const std::string& id, int64_t created, const std::string& model,
                     const std::vector<Choice>& choices, const Usage& usage, bool with_logprobs) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    json lp = nullptr;
    if (with_logprobs) {
      std::vector<size_t> offsets;
      size_t at = 0;
      for (const auto& t : c.logprobs) {
        offsets.push_back(std::min(at, c.text.size()));
        at += t.token.size();
      }
      lp = logprobs_json(c.logprobs, offsets);
    }
    cs.push_back({{"index", i},
                  {"text", c.text},
                  {"token_ids", c.token_ids},
                  {"logprobs", lp},
                  {"finish_reason", c.finish_reason}});
  }
  return {{"id", id},      {"object", "text_completion"}, {"created", created},           {"model", model},
          {"choices", cs}, {"usage", usage_json(usage)},  {"system_fingerprint", nullptr}};
}

json completion_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                      const std::string& text, const std::vector<int32_t>& ids, const TokenLogprob* lp,
                      const std::string& finish_reason) {
  json c = {{"index", index},
            {"text", text},
            {"token_ids", ids},
            {"logprobs", lp ? logprobs_json({*lp}, {0}) : json(nullptr)},
            {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}};
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({c})}};
}

namespace {

json bytes_json(const std::string& s) {
  json b = json::array();
  for (const unsigned char c : s) b.push_back(int(c));
  return b;
}

json chat_logprob_json(const TokenLogprob& t) {
  json top = json::array();
  for (const auto& [s, lp] : t.top) top.push_back({{"token", s}, {"logprob", lp}, {"bytes", bytes_json(s)}});
  return {{"token", t.token}, {"logprob", t.logprob}, {"bytes", bytes_json(t.token)}, {"top_logprobs", top}};
}

}  // namespace

std::string tool_call_id(const std::string& completion_id, int choice, int index) {
  const size_t dash = completion_id.find('-');
  return "call_" + completion_id.substr(dash == std::string::npos ? 0 : dash + 1) + "_" +
         std::to_string(choice) + "_" + std::to_string(index);
}

namespace {

json tool_call_json(const std::string& completion_id, int choice, int index, const ToolCall& call) {
  return {{"id", tool_call_id(completion_id, choice, index)},
          {"type", "function"},
          {"function", {{"name", call.name}, {"arguments", call.arguments}}}};
}

}  // namespace

json tool_call_delta(const std::string& completion_id, int choice, int index, const ToolCall& call) {
  json c = tool_call_json(completion_id, choice, index, call);
  c["index"] = index;
  return {{"tool_calls", json::array({c})}};
}

json chat_completion_body(const std::string& id, int64_t created, const std::string& model,
                          const std::vector<Choice>& choices, const Usage& usage, bool with_logprobs,
                          bool tool_calls) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    json lp = nullptr;
    if (with_logprobs) {
      json content = json::array();
      for (const auto& t : c.logprobs) content.push_back(chat_logprob_json(t));
      lp = {{"content", content}};
    }
    json message = {{"role", "assistant"}, {"content", c.text}};
    std::string finish = c.finish_reason;
    if (tool_calls) {
      const ToolCallStream::Out reply = split_tool_calls(c.text);
      if (!reply.calls.empty()) {
        json calls = json::array();
        for (size_t k = 0; k < reply.calls.size(); ++k)
          calls.push_back(tool_call_json(id, int(i), int(k), reply.calls[k]));
        message["content"] = reply.content.empty() ? json(nullptr) : json(reply.content);
        message["tool_calls"] = calls;
        if (finish == "stop") finish = "tool_calls";
      }
    }
    cs.push_back({{"index", i}, {"message", message}, {"logprobs", lp}, {"finish_reason", finish}});
  }
  return {{"id", id},      {"object", "chat.completion"}, {"created", created},           {"model", model},
          {"choices", cs}, {"usage", usage_json(usage)},  {"system_fingerprint", nullptr}};
}

json chat_completion_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                           const json& delta, const TokenLogprob* lp, const std::string& finish_reason) {
  json c = {{"index", index},
            {"delta", delta},
            {"logprobs", lp ? json{{"content", json::array({chat_logprob_json(*lp)})}} : json(nullptr)},
            {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}};
  return {{"id", id},       {"object", "chat.completion.chunk"}, {"created", created},
          {"model", model}, {"system_fingerprint", nullptr},     {"choices", json::array({c})}};
}

}  // namespace braid::serve
