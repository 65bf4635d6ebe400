// Chat templates: real models' templates (tests/data/chat_templates/*.jinja) rendered for a
// set of conversations must equal what Jinja2 renders under transformers' settings
// (cases.json, made by make_cases.py), and bad templates fail with one line naming the line.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "fixtures.hpp"
#include "io/text_file.hpp"
#include "tokenizer/chat_template.hpp"
#include "tokenizer/jinja.hpp"

using namespace braid;

namespace {

const std::string kDir = std::string(BRAID_SOURCE_DIR) + "/tests/data/chat_templates";

std::string render(const std::string& source, const ordered_json& vars = ordered_json::object()) {
  jinja::Template t(source);
  jinja::Dict ctx;
  for (const auto& [k, v] : vars.items()) ctx.set(k, jinja::Value::from_json(v));
  return t.render(ctx);
}

TEST(ChatTemplate, RealTemplatesMatchJinja2) {
  const ordered_json cases = ordered_json::parse(read_text_file(kDir + "/cases.json"));
  ASSERT_GE(cases.size(), 200u);
  std::map<std::string, std::unique_ptr<ChatTemplate>> templates;
  int rendered = 0, refused = 0;
  for (const auto& c : cases) {
    const std::string name = c["template"].get<std::string>();
    if (!templates.count(name))
      templates[name] =
          std::make_unique<ChatTemplate>(read_text_file(kDir + "/" + name), name, "<s>", "</s>");
    const std::string what = name + " / " + c["conversation"].get<std::string>() +
                             (c["add_generation_prompt"].get<bool>() ? " + generation prompt" : "") +
                             (c["tools"].is_null() ? "" : " + tools");
    std::string got, err;
    try {
      got = templates[name]->render(c["messages"], c["add_generation_prompt"].get<bool>(), c["tools"]);
    } catch (const Error& e) {
      err = e.what();
    }
    if (c.contains("expected")) {
      EXPECT_EQ(err, "") << what;
      EXPECT_EQ(got, c["expected"].get<std::string>()) << what;
      ++rendered;
    } else {
      const std::string want = c["error"].get<std::string>();
      EXPECT_NE(err, "") << what << " should fail with: " << want;
      // A template's own raise_exception message reaches the user unchanged.
      if (want.find("undefined") == std::string::npos && want.find("attribute") == std::string::npos) {
        EXPECT_NE(err.find(want), std::string::npos) << what << ": " << err;
      }
      ++refused;
    }
  }
  EXPECT_GT(rendered, 150);
  EXPECT_GT(refused, 10);
}

TEST(ChatTemplate, PythonSpellingsOfValues) {
  EXPECT_EQ(render("{{ x }}", {{"x", 1e-5}}), "1e-05");
  EXPECT_EQ(render("{{ x }}", {{"x", 123456789.0}}), "123456789.0");
  EXPECT_EQ(render("{{ x }}", {{"x", 1e16}}), "1e+16");
  EXPECT_EQ(render("{{ x }}", {{"x", -0.5}}), "-0.5");
  EXPECT_EQ(render("{{ x }}", {{"x", ordered_json::array({"it's", "a\"b", "\n"})}}),
            "[\"it's\", 'a\"b', '\\n']");
  EXPECT_EQ(render("{{ x | tojson }}", {{"x", "\x01\t<&>"}}), "\"\\u0001\\t<&>\"");
  EXPECT_EQ(render("{{ x | tojson(indent=1) }}", {{"x", ordered_json::parse(R"({"z":[],"a":{"b":null}})")}}),
            "{\n \"z\": [],\n \"a\": {\n  \"b\": null\n }\n}");
}

TEST(ChatTemplate, ScopesFollowJinja) {
  // A set inside a loop body lasts one iteration; a namespace carries values out.
  EXPECT_EQ(render("{% set c = 0 %}{% for i in range(3) %}{% set c = c + 1 %}{{ c }}{% endfor %}{{ c }}"),
            "1110");
  EXPECT_EQ(render("{% set ns = namespace(c=0) %}{% for i in range(3) %}{% set ns.c = ns.c + 1 %}{% endfor "
                   "%}{{ ns.c }}"),
            "3");
  EXPECT_EQ(render("{% if true %}{% set z = 3 %}{% endif %}{{ z }}"), "3");
  // Macros see the template's top level at call time, not the caller's loop variables.
  EXPECT_EQ(render("{% macro f(a, b=2) %}{{ a }}{{ b }}{{ g }}{{ i }}{% endmacro %}{% set g = 9 %}"
                   "{% for i in [7] %}{{ f(1) }}{% endfor %}"),
            "129");
}

TEST(ChatTemplate, WhitespaceControl) {
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("  {% if true %}\nx\n  {% endif %}\ny\n"),
            "x\ny");  // lstrip + trim_blocks, last newline dropped
  EXPECT_EQ(render("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(render("a {# note #}\nb"), "a b");
  EXPECT_EQ(render("{{ 'x' }}\n{{ 'y' }}"), "x\ny");  // trim_blocks leaves expressions alone
}

TEST(ChatTemplate, ErrorsNameTheLine) {
  auto err = [](const std::string& src, const ordered_json& vars = ordered_json::object()) {
    return error_of([&] { render(src, vars); });
  };
  EXPECT_EQ(err("a\n{% if x %}"), "chat template: line 2: {% if %} at line 2 is never closed");
  EXPECT_EQ(err("{{ x.y }}"), "chat template: line 1: 'x' is undefined");
  EXPECT_EQ(err("\n\n{{ raise_exception('Roles must alternate') }}"),
            "chat template: line 3: Roles must alternate");
  EXPECT_EQ(err("{% frobnicate %}"), "chat template: line 1: unsupported tag 'frobnicate'");
  EXPECT_EQ(err("{{ x | frobnicate }}"), "chat template: line 1: unknown filter 'frobnicate'");
  EXPECT_EQ(err("{{ 1 +  }}"), "chat template: line 1: expected an expression, found '}}'");
  EXPECT_EQ(err("{{ 'a' + 1 }}"),
            "chat template: line 1: unsupported operand types for +: a string and a number");
  EXPECT_EQ(err("{{ 1 // 0 }}"), "chat template: line 1: integer division or modulo by zero");
  EXPECT_EQ(err("{{ 'abc"), "chat template: line 1: unterminated string");
  EXPECT_EQ(err("{% for x in 5 %}{% endfor %}"), "chat template: line 1: cannot iterate over a number");
}

TEST(ChatTemplate, IntegerEdgesAreErrorsNotOverflow) {
  EXPECT_EQ(error_of([] { render("{{ -(-9223372036854775807 - 1) }}"); }),
            "chat template: line 1: integer overflow");
  EXPECT_EQ(error_of([] { render("{{ (-9223372036854775807 - 1) | abs }}"); }),
            "chat template: line 1: integer overflow");
  EXPECT_EQ(error_of([] { render("{{ 9223372036854775807 + 1 }}"); }),
            "chat template: line 1: integer overflow");
  EXPECT_EQ(render("{{ range(2, 9223372036854775807, 9223372036854775806) | list }}"), "[2]");
  EXPECT_EQ(render("{{ [1, 2, 3][1::9223372036854775807] }}"), "[2]");
  EXPECT_EQ(render("{{ (-9223372036854775807 - 1) is divisibleby(-1) }}"), "True");
  EXPECT_NE(error_of([] { render("{{ 1e300 | int }}"); }).find("does not fit an integer"), std::string::npos);
  EXPECT_EQ(error_of([] { render("{{ 99999999999999999999 }}"); }),
            "chat template: line 1: integer 99999999999999999999 is too large");
}

TEST(ChatTemplate, HostileTemplatesAreBounded) {
  EXPECT_NE(error_of([] {
              render("{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}");
            }).find("too much work"),
            std::string::npos);
  EXPECT_NE(error_of([] { render("{{ 'x' * 100000000 }}"); }).find("too long"), std::string::npos);
  EXPECT_NE(error_of([] {
              render(
                  "{% set ns = namespace(s='x' * 1000000) %}{% for i in range(100000) %}"
                  "{% set ns.s = ns.s[:1000000] ~ i %}{% endfor %}");
            }).find("builds over 1 GiB of strings"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"); }).find("nested too deeply"),
      std::string::npos);
  EXPECT_EQ(error_of([] { render("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"); }),
            "chat template: line 1: template nested too deeply");
  EXPECT_NE(error_of([] {
              render(
                  "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s "
                  "%}{{ ns.s }}{% endfor %}");
            }).find("rendered text exceeds 64 MiB"),
            std::string::npos);
}

TEST(ChatTemplate, FromModelDirectory) {
  TempDir d;
  EXPECT_FALSE(ChatTemplate::from_model_dir(d.path.string()).has_value());
  write_text_file(d / "tokenizer_config.json",
                  R"({"bos_token": {"content": "<B>"}, "eos_token": "<E>",
                      "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]})");
  auto t = ChatTemplate::from_model_dir(d.path.string());
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->render(ordered_json::parse(R"([{"role":"user","content":"hi"}])"), false), "<B>hi<E>");
  write_text_file(d / "chat_template.jinja", "J{{ messages | length }}");  // a separate file wins
  EXPECT_EQ(ChatTemplate::from_model_dir(d.path.string())->render(ordered_json::array(), false), "J0");
  write_text_file(d / "chat_template.jinja", "{% if %}");
  EXPECT_NE(
      error_of([&] { ChatTemplate::from_model_dir(d.path.string()); }).find("chat_template.jinja: line 1"),
      std::string::npos);
}

}  // namespace
