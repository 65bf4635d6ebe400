#include "tokenizer/chat_template.hpp"

#include <filesystem>

#include "core/error.hpp"
#include "io/text_file.hpp"

namespace braid {
namespace {

// A special token in tokenizer_config.json: a string, or {"content": "..."}; "" if absent.
std::string special_token(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return "";
  const json& t = cfg[key];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_object() && t.contains("content") && t["content"].is_string())
    return t["content"].get<std::string>();
  return "";
}

json read_tokenizer_config(const std::string& dir) {
  const std::string path = dir + "/tokenizer_config.json";
  if (!std::filesystem::exists(path)) return json::object();
  json cfg = read_json_file(path);
  check(cfg.is_object(), path, ": expected a JSON object");
  return cfg;
}

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source, const std::string& where, std::string bos_token,
                           std::string eos_token)
    : source_(source),
      tmpl_(std::make_shared<const jinja::Template>(source, where)),
      bos_(std::move(bos_token)),
      eos_(std::move(eos_token)) {}

std::optional<ChatTemplate> ChatTemplate::from_model_dir(const std::string& dir) {
  const json cfg = read_tokenizer_config(dir);
  const std::string bos = special_token(cfg, "bos_token"), eos = special_token(cfg, "eos_token");
  const std::string file = dir + "/chat_template.jinja";
  if (std::filesystem::exists(file)) return ChatTemplate(read_text_file(file), file, bos, eos);
  if (!cfg.contains("chat_template") || cfg["chat_template"].is_null()) return std::nullopt;
  const std::string where = dir + "/tokenizer_config.json: chat_template";
  const json& t = cfg["chat_template"];
  if (t.is_string()) return ChatTemplate(t.get<std::string>(), where, bos, eos);
  check(t.is_array(), where, ": expected a string or a list of {name, template}");
  for (const json& e : t)
    if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
        e["template"].is_string())
      return ChatTemplate(e["template"].get<std::string>(), where + " 'default'", bos, eos);
  fail(where, ": no template named 'default'");
}

ChatTemplate ChatTemplate::from_file(const std::string& path, const std::string& dir) {
  const json cfg = read_tokenizer_config(dir);
  return ChatTemplate(read_text_file(path), path, special_token(cfg, "bos_token"),
                      special_token(cfg, "eos_token"));
}

std::string ChatTemplate::render(const ordered_json& messages, bool add_generation_prompt,
                                 const ordered_json& tools, const ordered_json& extra) const {
  jinja::Dict ctx;
  ctx.set("messages", jinja::Value::from_json(messages));
  ctx.set("add_generation_prompt", jinja::Value(add_generation_prompt));
  ctx.set("bos_token", jinja::Value(bos_));
  ctx.set("eos_token", jinja::Value(eos_));
  if (!tools.is_null()) ctx.set("tools", jinja::Value::from_json(tools));
  if (extra.is_object())
    for (const auto& [k, v] : extra.items()) ctx.set(k, jinja::Value::from_json(v));
  return tmpl_->render(ctx);
}

}  // namespace braid
