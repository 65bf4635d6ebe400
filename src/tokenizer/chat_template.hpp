// A model's chat template: the Jinja text that turns a list of chat messages into the
// prompt the model was trained on, as transformers' apply_chat_template renders it.
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "io/json.hpp"
#include "tokenizer/jinja.hpp"

namespace braid {

class ChatTemplate {
 public:
  // Parses `source`; throws braid::Error naming `where` and the line.
  ChatTemplate(const std::string& source, const std::string& where, std::string bos_token = "",
               std::string eos_token = "");

  // The template of a model directory: chat_template.jinja if present, else the
  // "chat_template" of tokenizer_config.json (a string, or a list of named templates of
  // which "default" is used). nullopt when the model has none.
  static std::optional<ChatTemplate> from_model_dir(const std::string& dir);
  // A template file given by the user (its special tokens from `dir`'s tokenizer_config.json).
  static ChatTemplate from_file(const std::string& path, const std::string& dir);

  // Renders `messages` (an array of {role, content, ...}); `tools` (an array or null) and
  // `extra` (an object of further template variables, e.g. enable_thinking) as given.
  // Throws braid::Error for what the template refuses (raise_exception) or cannot do.
  std::string render(const ordered_json& messages, bool add_generation_prompt,
                     const ordered_json& tools = nullptr, const ordered_json& extra = nullptr) const;

  const std::string& source() const { return source_; }
  const std::string& eos_token() const { return eos_; }  // tokenizer_config.json's, "" if none

 private:
  std::string source_;
  std::shared_ptr<const jinja::Template> tmpl_;
  std::string bos_, eos_;
};

}  // namespace braid
