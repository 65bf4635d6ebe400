// The subset of Jinja2 that chat templates use (tokenizer_config.json "chat_template"),
// with the settings transformers renders them under: trim_blocks, lstrip_blocks, no
// autoescape, a single trailing newline dropped, loop controls (break / continue),
// `tojson` as Python's json.dumps (no HTML escaping, keys in insertion order).
//
// Supported: {{ }}, {% if / elif / else %}, {% for a[, b] in x [if c] %} with loop.*
// and {% else %}, {% set %} (names, namespace attributes, tuples, blocks), {% macro %},
// {% raw %}, {% generation %} (rendered as its body), whitespace control (-, +), comments;
// expressions with Python semantics (ints and floats, string / list concatenation,
// slices, `in`, chained comparisons, conditional expressions), the usual filters and
// tests, string / dict methods (strip, split, startswith, items, get, ...), and the
// globals range, namespace, dict, raise_exception and strftime_now. Anything else is an
// error naming the line. Rendering is bounded (output size, loop steps, call depth), so a
// hostile template cannot exhaust memory or the stack.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "io/json.hpp"

namespace braid::jinja {

struct Value;
using List = std::vector<Value>;
// A dict keeps insertion order (as Python's does): tojson and items() follow it.
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value v);
};
struct Args;
using Function = std::function<Value(Args&)>;

struct Value {
  struct Undefined {
    std::string name;  // what was looked up, for errors
  };
  struct Namespace {
    std::shared_ptr<Dict> attrs;  // shared: a namespace is mutable through every copy
  };
  using Storage =
      std::variant<Undefined, std::nullptr_t, bool, int64_t, double, std::string, std::shared_ptr<const List>,
                   std::shared_ptr<const Dict>, Namespace, std::shared_ptr<const Function>>;
  Storage v;

  Value() : v(Undefined{}) {}
  Value(std::nullptr_t) : v(nullptr) {}
  Value(bool b) : v(b) {}
  Value(int64_t i) : v(i) {}
  Value(int i) : v(int64_t(i)) {}
  Value(double d) : v(d) {}
  Value(std::string s) : v(std::move(s)) {}
  Value(const char* s) : v(std::string(s)) {}
  Value(List l) : v(std::make_shared<const List>(std::move(l))) {}
  Value(Dict d) : v(std::make_shared<const Dict>(std::move(d))) {}
  Value(Function f) : v(std::make_shared<const Function>(std::move(f))) {}
  static Value undefined(std::string name) { return Value(Storage(Undefined{std::move(name)})); }
  static Value from_json(const ordered_json& j);

  bool is_undefined() const { return std::holds_alternative<Undefined>(v); }
  bool is_none() const { return std::holds_alternative<std::nullptr_t>(v); }
  bool is_bool() const { return std::holds_alternative<bool>(v); }
  bool is_int() const { return std::holds_alternative<int64_t>(v); }
  bool is_float() const { return std::holds_alternative<double>(v); }
  bool is_number() const { return is_int() || is_float(); }  // booleans excluded, as Jinja's test does
  bool is_string() const { return std::holds_alternative<std::string>(v); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<const List>>(v); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<const Dict>>(v); }
  bool is_namespace() const { return std::holds_alternative<Namespace>(v); }
  bool is_callable() const { return std::holds_alternative<std::shared_ptr<const Function>>(v); }

  const std::string& str() const { return std::get<std::string>(v); }
  const List& list() const { return *std::get<std::shared_ptr<const List>>(v); }
  const Dict& dict() const { return *std::get<std::shared_ptr<const Dict>>(v); }
  double number() const { return is_int() ? double(std::get<int64_t>(v)) : std::get<double>(v); }

  bool truthy() const;
  std::string to_string() const;  // Python's str(): None, True, 1.0, ['a'], {'k': 1}
  std::string repr() const;       // Python's repr()
  // json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys); indent < 0: none.
  std::string to_json(int indent = -1, bool sort_keys = false) const;

 private:
  explicit Value(Storage s) : v(std::move(s)) {}
};

// Positional and keyword arguments of a call, filter or test.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  std::string what;  // the callee's name, for errors
  // The i-th positional argument, else the keyword `name`, else `dflt`.
  Value get(size_t i, const std::string& name, Value dflt = Value()) const;
  void expect_at_most(size_t n) const;
};

struct Node;

class Template {
 public:
  // Throws braid::Error "WHERE: line N: ..." for text that is not a valid template.
  Template(const std::string& source, std::string where = "chat template");
  ~Template();
  Template(Template&&) noexcept;
  // Renders with `context` (a dict of variables) plus the globals. Throws braid::Error
  // "WHERE: ..." for runtime errors, including raise_exception("...").
  std::string render(const Dict& context) const;

 private:
  std::string where_;
  std::unique_ptr<Node> root_;
};

}  // namespace braid::jinja
