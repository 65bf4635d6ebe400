// Jinja rendering: evaluates the syntax tree with Python's semantics for the operations
// chat templates use, Jinja's scoping (each loop iteration and macro call has its own
// scope; namespaces carry values out) and bounded work.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>

#include "core/error.hpp"
#include "tokenizer/jinja_ast.hpp"

namespace braid::jinja {
namespace {

constexpr size_t kMaxOutput = size_t(64) << 20;  // bytes of rendered text (and of any one string)
constexpr int64_t kMaxSteps = 1'000'000;         // loop iterations and list elements made
constexpr int64_t kMaxBytes = int64_t(1) << 30;  // bytes of strings built, in all
constexpr int kMaxCallDepth = 64;                // macro calls

enum class Flow { Normal, Break, Continue };

// Byte offsets of a UTF-8 string's code points (plus its size), so that indexing, slicing
// and length count characters as Python does.
std::vector<size_t> code_points(const std::string& s) {
  std::vector<size_t> at;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) at.push_back(i);
  at.push_back(s.size());
  return at;
}

std::string strip_chars(const std::string& s, const std::string& chars, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && chars.find(s[b]) != std::string::npos) ++b;
  if (right)
    while (e > b && chars.find(s[e - 1]) != std::string::npos) --e;
  return s.substr(b, e - b);
}

const char* kWhitespace = " \t\n\r\f\v";

class Renderer {
 public:
  Renderer(const std::string& where, const Dict& context) : where_(where) {
    auto globals = std::make_shared<Dict>();
    install_globals(*globals);
    frames_.push_back(globals);
    frames_.push_back(std::make_shared<Dict>(context));
  }

  std::string run(const Node& root) {
    render(root);
    return std::move(out_);
  }

 private:
  [[noreturn]] void error(int line, const std::string& msg) const {
    fail(where_, ": line ", line, ": ", msg);
  }

  void emit(const std::string& s) {
    if (out_.size() + s.size() > kMaxOutput)
      fail(where_, ": rendered text exceeds ", kMaxOutput >> 20, " MiB");
    out_ += s;
  }
  void step(int line, int64_t n = 1) {
    steps_ += n;
    if (steps_ > kMaxSteps) error(line, "template does too much work (over a million steps)");
  }
  // Strings built by concatenation, repetition and the like: bounded in total so that
  // quadratic string building cannot run for minutes.
  void charge(int line, size_t bytes) {
    bytes_ += int64_t(bytes);
    if (bytes_ > kMaxBytes) error(line, "template does too much work (builds over 1 GiB of strings)");
  }

  Value lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it)
      if (const Value* v = (*it)->find(name)) return *v;
    return Value::undefined(name);
  }

  // ---- statements ----
  Flow render(const Node& n) {
    switch (n.kind) {
      case Node::Block:
        for (const auto& c : n.bodies)
          if (Flow f = render(*c); f != Flow::Normal) return f;
        return Flow::Normal;
      case Node::Text:
        emit(n.text);
        return Flow::Normal;
      case Node::Output: {
        const std::string s = eval(*n.exprs[0]).to_string();
        charge(n.line, s.size());
        emit(s);
        return Flow::Normal;
      }
      case Node::If:
        for (size_t i = 0; i < n.exprs.size(); ++i)
          if (eval(*n.exprs[i]).truthy()) return render(*n.bodies[i]);
        return n.bodies.size() > n.exprs.size() ? render(*n.bodies.back()) : Flow::Normal;
      case Node::For:
        return render_for(n);
      case Node::Set:
        render_set(n);
        return Flow::Normal;
      case Node::Macro:
        define_macro(n);
        return Flow::Normal;
      case Node::Break:
        return Flow::Break;
      case Node::Continue:
        return Flow::Continue;
    }
    return Flow::Normal;
  }

  void assign(const std::string& target, Value v, int line) {
    const size_t dot = target.find('.');
    if (dot == std::string::npos) {
      frames_.back()->set(target, std::move(v));
      return;
    }
    const Value ns = lookup(target.substr(0, dot));
    if (!ns.is_namespace()) error(line, "cannot assign attribute '" + target + "': not a namespace");
    std::get<Value::Namespace>(ns.v).attrs->set(target.substr(dot + 1), std::move(v));
  }

  void render_set(const Node& n) {
    Value v;
    if (!n.exprs.empty()) {
      v = eval(*n.exprs[0]);
    } else {
      std::string saved;
      std::swap(saved, out_);
      render(*n.bodies[0]);
      std::swap(saved, out_);
      v = Value(std::move(saved));
    }
    if (n.targets.size() == 1) return assign(n.targets[0], std::move(v), n.line);
    const List items = iterate(v, n.line);
    if (items.size() != n.targets.size())
      error(n.line, "cannot unpack " + std::to_string(items.size()) + " values into " +
                        std::to_string(n.targets.size()) + " names");
    for (size_t i = 0; i < items.size(); ++i) assign(n.targets[i], items[i], n.line);
  }

  // The elements a for loop visits: list items, dict keys, string characters.
  List iterate(const Value& v, int line) {
    if (v.is_list()) return v.list();
    if (v.is_undefined()) return {};
    if (v.is_dict()) {
      List keys;
      for (const auto& e : v.dict().entries) keys.emplace_back(e.first);
      return keys;
    }
    if (v.is_string()) {
      const auto at = code_points(v.str());
      List chars;
      for (size_t i = 0; i + 1 < at.size(); ++i) chars.emplace_back(v.str().substr(at[i], at[i + 1] - at[i]));
      step(line, int64_t(chars.size()));
      return chars;
    }
    error(line, "cannot iterate over " + type_name(v));
  }

  void bind_targets(const std::vector<std::string>& targets, const Value& item, Dict& frame, int line) {
    if (targets.size() == 1) {
      frame.set(targets[0], item);
      return;
    }
    const List parts = iterate(item, line);
    if (parts.size() != targets.size())
      error(line, "cannot unpack " + std::to_string(parts.size()) + " values into " +
                      std::to_string(targets.size()) + " loop variables");
    for (size_t i = 0; i < parts.size(); ++i) frame.set(targets[i], parts[i]);
  }

  Flow render_for(const Node& n) {
    const List all = iterate(eval(*n.exprs[0]), n.line);
    List items;
    if (n.exprs.size() > 1) {  // {% for x in xs if cond %}: filtered before loop.* is computed
      for (const Value& it : all) {
        step(n.line);
        frames_.push_back(std::make_shared<Dict>());
        bind_targets(n.targets, it, *frames_.back(), n.line);
        const bool keep = eval(*n.exprs[1]).truthy();
        frames_.pop_back();
        if (keep) items.push_back(it);
      }
    } else {
      items = all;
    }
    if (items.empty()) {
      if (n.bodies.size() > 1) return render(*n.bodies[1]) == Flow::Break ? Flow::Normal : Flow::Normal;
      return Flow::Normal;
    }
    const int64_t len = int64_t(items.size());
    for (int64_t i = 0; i < len; ++i) {
      step(n.line);
      auto frame = std::make_shared<Dict>();
      Dict loop;
      loop.set("index", Value(i + 1));
      loop.set("index0", Value(i));
      loop.set("revindex", Value(len - i));
      loop.set("revindex0", Value(len - i - 1));
      loop.set("first", Value(i == 0));
      loop.set("last", Value(i == len - 1));
      loop.set("length", Value(len));
      loop.set("depth", Value(1));
      loop.set("depth0", Value(0));
      loop.set("previtem", i > 0 ? items[size_t(i - 1)] : Value::undefined("loop.previtem"));
      loop.set("nextitem", i + 1 < len ? items[size_t(i + 1)] : Value::undefined("loop.nextitem"));
      loop.set("cycle", Value(Function([i](Args& a) -> Value {
                 check(!a.pos.empty(), "chat template: loop.cycle needs at least one value");
                 return a.pos[size_t(i) % a.pos.size()];
               })));
      frame->set("loop", Value(std::move(loop)));
      bind_targets(n.targets, items[size_t(i)], *frame, n.line);
      frames_.push_back(frame);
      const Flow f = render(*n.bodies[0]);
      frames_.pop_back();
      if (f == Flow::Break) break;
    }
    return Flow::Normal;
  }

  void define_macro(const Node& n) {
    const Node* node = &n;
    assign(n.text, Value(Function([this, node](Args& a) -> Value { return call_macro(*node, a); })), n.line);
  }

  Value call_macro(const Node& n, Args& a) {
    if (call_depth_ >= kMaxCallDepth) error(n.line, "macro calls nested too deeply");
    if (a.pos.size() > n.targets.size())
      error(n.line, "macro '" + n.text + "' takes " + std::to_string(n.targets.size()) + " arguments");
    auto frame = std::make_shared<Dict>();
    for (size_t i = 0; i < n.targets.size(); ++i) {
      Value v = a.get(i, n.targets[i], Value::undefined(n.targets[i]));
      if (v.is_undefined() && n.exprs[i]) v = eval(*n.exprs[i]);
      frame->set(n.targets[i], std::move(v));
    }
    for (const auto& [k, v] : a.kw)
      if (std::find(n.targets.begin(), n.targets.end(), k) == n.targets.end())
        error(n.line, "macro '" + n.text + "' has no parameter '" + k + "'");
    // The body sees its parameters and the template's top level, not the caller's locals.
    std::vector<std::shared_ptr<Dict>> saved = {frames_[0], frames_[1], frame};
    std::swap(saved, frames_);
    std::string out;
    std::swap(out, out_);
    ++call_depth_;
    render(*n.bodies[0]);
    --call_depth_;
    std::swap(out, out_);
    std::swap(saved, frames_);
    return Value(std::move(out));
  }

  // ---- expressions ----
  static std::string type_name(const Value& v) {
    if (v.is_undefined()) return "an undefined value";
    if (v.is_none()) return "none";
    if (v.is_bool()) return "a boolean";
    if (v.is_number()) return "a number";
    if (v.is_string()) return "a string";
    if (v.is_list()) return "a list";
    if (v.is_dict()) return "a dict";
    if (v.is_namespace()) return "a namespace";
    return "a function";
  }
  [[noreturn]] void undefined_error(const Value& v, int line) const {
    error(line, "'" + std::get<Value::Undefined>(v.v).name + "' is undefined");
  }

  Value eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Literal:
        return e.value;
      case Expr::Name:
        return lookup(e.name);
      case Expr::Attr:
        return get_attr(eval(*e.kids[0]), e.name, e.line);
      case Expr::Item:
        return get_item(eval(*e.kids[0]), eval(*e.kids[1]), e.line);
      case Expr::Slice:
        return slice(e);
      case Expr::Call:
        return call(e);
      case Expr::Filter:
        return filter(e);
      case Expr::Test:
        return Value(test(e) != e.negated);
      case Expr::Unary: {
        const Value x = eval(*e.kids[0]);
        if (e.name == "not") return Value(!x.truthy());
        if (x.is_undefined()) undefined_error(x, e.line);
        if (x.is_int()) {
          if (e.name != "-") return x;
          if (std::get<int64_t>(x.v) == INT64_MIN) error(e.line, "integer overflow");
          return Value(-std::get<int64_t>(x.v));
        }
        if (x.is_float()) return e.name == "-" ? Value(-std::get<double>(x.v)) : x;
        error(e.line, "bad operand for unary " + e.name + ": " + type_name(x));
      }
      case Expr::Binary:
        return binary(e);
      case Expr::Compare: {
        Value a = eval(*e.kids[0]);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value b = eval(*e.kids[i + 1]);
          if (!compare(e.ops[i], a, b, e.line)) return Value(false);
          a = std::move(b);
        }
        return Value(true);
      }
      case Expr::Cond:
        if (eval(*e.kids[0]).truthy()) return eval(*e.kids[1]);
        return e.kids[2] ? eval(*e.kids[2]) : Value::undefined("conditional expression");
      case Expr::ListLit:
      case Expr::TupleLit: {
        List l;
        for (const auto& k : e.kids) l.push_back(eval(*k));
        return Value(std::move(l));
      }
      case Expr::DictLit: {
        Dict d;
        for (size_t i = 0; i + 1 < e.kids.size(); i += 2) {
          const Value k = eval(*e.kids[i]);
          if (!k.is_string()) error(e.line, "dict keys must be strings");
          d.set(k.str(), eval(*e.kids[i + 1]));
        }
        return Value(std::move(d));
      }
    }
    return Value();
  }

  Args eval_args(const Expr& e, size_t first, const std::string& what) {
    Args a;
    a.what = what;
    const size_t n_kw = e.keywords.size();
    for (size_t i = first; i < e.kids.size(); ++i) {
      Value v = eval(*e.kids[i]);
      const size_t from_end = e.kids.size() - i;
      if (from_end <= n_kw)
        a.kw.emplace_back(e.keywords[n_kw - from_end], std::move(v));
      else
        a.pos.push_back(std::move(v));
    }
    return a;
  }

  Value call(const Expr& e) {
    const Value f = eval(*e.kids[0]);
    const std::string what = e.kids[0]->kind == Expr::Name   ? e.kids[0]->name
                             : e.kids[0]->kind == Expr::Attr ? e.kids[0]->name
                                                             : "call";
    if (f.is_undefined()) error(e.line, "'" + what + "' is undefined");
    if (!f.is_callable()) error(e.line, "'" + what + "' is not callable");
    Args a = eval_args(e, 1, what);
    try {
      return (*std::get<std::shared_ptr<const Function>>(f.v))(a);
    } catch (const Error& err) {
      const std::string msg = err.what();
      if (msg.rfind(where_ + ": line ", 0) == 0) throw;  // already located (inside a macro)
      error(e.line, msg.rfind("chat template: ", 0) == 0 ? msg.substr(15) : msg);
    }
  }

  Value get_attr(const Value& obj, const std::string& name, int line) {
    if (obj.is_undefined()) undefined_error(obj, line);
    if (obj.is_namespace()) {
      const Value* v = std::get<Value::Namespace>(obj.v).attrs->find(name);
      return v ? *v : Value::undefined(name);
    }
    if (Value m = method(obj, name); m.is_callable()) return m;
    if (obj.is_dict()) {
      const Value* v = obj.dict().find(name);
      return v ? *v : Value::undefined(name);
    }
    return Value::undefined(name);
  }

  Value get_item(const Value& obj, const Value& key, int line) {
    if (obj.is_undefined()) undefined_error(obj, line);
    if (obj.is_dict() || obj.is_namespace()) {
      if (!key.is_string()) return Value::undefined(key.to_string());
      const Dict& d = obj.is_dict() ? obj.dict() : *std::get<Value::Namespace>(obj.v).attrs;
      const Value* v = d.find(key.str());
      return v ? *v : (obj.is_dict() ? get_attr(obj, key.str(), line) : Value::undefined(key.str()));
    }
    if ((obj.is_list() || obj.is_string()) && key.is_int()) {
      int64_t i = std::get<int64_t>(key.v);
      if (obj.is_list()) {
        const int64_t n = int64_t(obj.list().size());
        if (i < 0) i += n;
        return i >= 0 && i < n ? obj.list()[size_t(i)] : Value::undefined("[" + key.to_string() + "]");
      }
      const auto at = code_points(obj.str());
      const int64_t n = int64_t(at.size()) - 1;
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined("[" + key.to_string() + "]");
      return Value(obj.str().substr(at[size_t(i)], at[size_t(i) + 1] - at[size_t(i)]));
    }
    if (key.is_string()) return get_attr(obj, key.str(), line);
    return Value::undefined("[" + key.to_string() + "]");
  }

  Value slice(const Expr& e) {
    const Value obj = eval(*e.kids[0]);
    if (obj.is_undefined()) undefined_error(obj, e.line);
    auto bound = [&](const std::unique_ptr<Expr>& x) -> std::optional<int64_t> {
      if (!x) return std::nullopt;
      const Value v = eval(*x);
      if (v.is_none()) return std::nullopt;
      if (!v.is_int()) error(e.line, "slice bounds must be integers");
      return std::get<int64_t>(v.v);
    };
    const auto lo = bound(e.kids[1]), hi = bound(e.kids[2]), st = bound(e.kids[3]);
    const int64_t stepv = st.value_or(1);
    if (stepv == 0) error(e.line, "slice step cannot be zero");
    std::vector<size_t> at;
    int64_t n;
    if (obj.is_list()) {
      n = int64_t(obj.list().size());
    } else if (obj.is_string()) {
      charge(e.line, obj.str().size());
      const bool ascii =
          std::all_of(obj.str().begin(), obj.str().end(), [](char c) { return (c & 0x80) == 0; });
      if (ascii && stepv == 1) {  // byte offsets are character offsets: no table needed
        n = int64_t(obj.str().size());
        int64_t from = lo.value_or(0), to = hi.value_or(n);
        if (from < 0) from = std::max<int64_t>(from + n, 0);
        if (to < 0) to = std::max<int64_t>(to + n, 0);
        from = std::min(from, n), to = std::min(to, n);
        charge(e.line, size_t(std::max<int64_t>(to - from, 0)));
        return Value(to > from ? obj.str().substr(size_t(from), size_t(to - from)) : std::string());
      }
      at = code_points(obj.str());
      n = int64_t(at.size()) - 1;
    } else {
      error(e.line, "cannot slice " + type_name(obj));
    }
    // Python's slice.indices().
    auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
      if (!v) return dflt;
      int64_t x = *v;
      if (x < 0) x += n;
      if (stepv > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t b = clamp(lo, stepv > 0 ? 0 : n - 1), end = clamp(hi, stepv > 0 ? n : -1);
    if (obj.is_string() && stepv == 1) {  // the common case, without a step per character
      const size_t from = at[size_t(b)], to = at[size_t(std::max(b, end))];
      charge(e.line, to - from);
      return Value(obj.str().substr(from, to - from));
    }
    List items;
    std::string s;
    for (int64_t i = b; stepv > 0 ? i < end : i > end;) {
      step(e.line);
      if (obj.is_list())
        items.push_back(obj.list()[size_t(i)]);
      else
        s += obj.str().substr(at[size_t(i)], at[size_t(i) + 1] - at[size_t(i)]);
      if (__builtin_add_overflow(i, stepv, &i)) break;
    }
    return obj.is_list() ? Value(std::move(items)) : Value(std::move(s));
  }

  Value binary(const Expr& e) {
    if (e.name == "and") {
      Value a = eval(*e.kids[0]);
      return a.truthy() ? eval(*e.kids[1]) : a;
    }
    if (e.name == "or") {
      Value a = eval(*e.kids[0]);
      return a.truthy() ? a : eval(*e.kids[1]);
    }
    const Value a = eval(*e.kids[0]), b = eval(*e.kids[1]);
    if (e.name == "~") {
      std::string s = a.to_string() + b.to_string();
      if (s.size() > kMaxOutput) error(e.line, "string too long");
      charge(e.line, s.size());
      return Value(std::move(s));
    }
    if (a.is_undefined()) undefined_error(a, e.line);
    if (b.is_undefined()) undefined_error(b, e.line);
    const std::string& op = e.name;
    auto bad = [&]() -> Value {
      error(e.line, "unsupported operand types for " + op + ": " + type_name(a) + " and " + type_name(b));
    };
    if (op == "+") {
      if (a.is_string() && b.is_string()) {
        if (a.str().size() + b.str().size() > kMaxOutput) error(e.line, "string too long");
        charge(e.line, a.str().size() + b.str().size());
        return Value(a.str() + b.str());
      }
      if (a.is_list() && b.is_list()) {
        step(e.line, int64_t(a.list().size() + b.list().size()));
        List l = a.list();
        l.insert(l.end(), b.list().begin(), b.list().end());
        return Value(std::move(l));
      }
    }
    if (op == "*" &&
        (((a.is_string() || a.is_list()) && b.is_int()) || (a.is_int() && (b.is_string() || b.is_list())))) {
      const Value& seq = a.is_int() ? b : a;
      const int64_t times = std::max<int64_t>(0, std::get<int64_t>((a.is_int() ? a : b).v));
      const size_t unit = seq.is_string() ? seq.str().size() : seq.list().size();
      if (unit && double(unit) * double(times) > double(kMaxOutput)) error(e.line, "repetition too long");
      step(e.line, seq.is_list() ? int64_t(unit) * times : 0);
      charge(e.line, seq.is_string() ? unit * size_t(times) : 0);
      if (seq.is_string()) {
        std::string s;
        for (int64_t i = 0; i < times; ++i) s += seq.str();
        return Value(std::move(s));
      }
      List l;
      for (int64_t i = 0; i < times; ++i) l.insert(l.end(), seq.list().begin(), seq.list().end());
      return Value(std::move(l));
    }
    const bool numeric = (a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool());
    if (!numeric) return bad();
    auto as_int = [](const Value& v) {
      return v.is_bool() ? int64_t(std::get<bool>(v.v)) : std::get<int64_t>(v.v);
    };
    auto as_num = [](const Value& v) { return v.is_bool() ? double(std::get<bool>(v.v)) : v.number(); };
    const bool ints = !a.is_float() && !b.is_float();
    if (op == "/") {
      if (as_num(b) == 0) error(e.line, "division by zero");
      return Value(as_num(a) / as_num(b));
    }
    if (ints && op != "**") {
      const int64_t x = as_int(a), y = as_int(b);
      int64_t r = 0;
      if (op == "+" && !__builtin_add_overflow(x, y, &r)) return Value(r);
      if (op == "-" && !__builtin_sub_overflow(x, y, &r)) return Value(r);
      if (op == "*" && !__builtin_mul_overflow(x, y, &r)) return Value(r);
      if (op == "//" || op == "%") {
        if (y == 0) error(e.line, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) error(e.line, "integer overflow");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) --q, m += y;  // Python floors
        return op == "//" ? Value(q) : Value(m);
      }
      if (op == "+" || op == "-" || op == "*") error(e.line, "integer overflow");
    }
    const double x = as_num(a), y = as_num(b);
    if (op == "+") return Value(x + y);
    if (op == "-") return Value(x - y);
    if (op == "*") return Value(x * y);
    if (op == "//" || op == "%") {
      if (y == 0) error(e.line, "float division or modulo by zero");
      const double q = std::floor(x / y);
      return op == "//" ? Value(q) : Value(x - q * y);
    }
    if (op == "**") {
      if (ints && as_int(b) >= 0) {
        const double r = std::pow(x, y);
        if (std::abs(r) < 9.2e18) return Value(int64_t(std::llround(r)));
        error(e.line, "integer overflow");
      }
      return Value(std::pow(x, y));
    }
    return bad();
  }

  static bool equal(const Value& a, const Value& b) {
    if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
    const bool an = a.is_number() || a.is_bool(), bn = b.is_number() || b.is_bool();
    if (an && bn) {
      auto num = [](const Value& v) { return v.is_bool() ? double(std::get<bool>(v.v)) : v.number(); };
      if (a.is_int() && b.is_int()) return std::get<int64_t>(a.v) == std::get<int64_t>(b.v);
      return num(a) == num(b);
    }
    if (a.is_none() || b.is_none()) return a.is_none() && b.is_none();
    if (a.is_string() && b.is_string()) return a.str() == b.str();
    if (a.is_list() && b.is_list()) {
      if (a.list().size() != b.list().size()) return false;
      for (size_t i = 0; i < a.list().size(); ++i)
        if (!equal(a.list()[i], b.list()[i])) return false;
      return true;
    }
    if (a.is_dict() && b.is_dict()) {
      if (a.dict().entries.size() != b.dict().entries.size()) return false;
      for (const auto& [k, v] : a.dict().entries) {
        const Value* w = b.dict().find(k);
        if (!w || !equal(v, *w)) return false;
      }
      return true;
    }
    return false;
  }

  bool contains(const Value& container, const Value& x, int line) {
    if (container.is_undefined()) return false;
    if (container.is_string()) {
      if (!x.is_string()) error(line, "'in <string>' requires a string on the left");
      return container.str().find(x.str()) != std::string::npos;
    }
    if (container.is_list()) {
      for (const Value& v : container.list())
        if (equal(v, x)) return true;
      return false;
    }
    if (container.is_dict()) return x.is_string() && container.dict().find(x.str()) != nullptr;
    error(line, "'in' needs a string, list or dict on the right, found " + type_name(container));
  }

  bool compare(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "==") return equal(a, b);
    if (op == "!=") return !equal(a, b);
    if (op == "in") return contains(b, a, line);
    if (op == "not in") return !contains(b, a, line);
    int c;
    if ((a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool())) {
      auto num = [](const Value& v) { return v.is_bool() ? double(std::get<bool>(v.v)) : v.number(); };
      c = num(a) < num(b) ? -1 : num(a) > num(b) ? 1 : 0;
    } else if (a.is_string() && b.is_string()) {
      c = a.str().compare(b.str());
    } else {
      if (a.is_undefined()) undefined_error(a, line);
      if (b.is_undefined()) undefined_error(b, line);
      error(line, "cannot compare " + type_name(a) + " with " + type_name(b) + " using " + op);
    }
    if (op == "<") return c < 0;
    if (op == ">") return c > 0;
    if (op == "<=") return c <= 0;
    return c >= 0;
  }

  // ---- methods of strings and dicts ----
  Value method(const Value& obj, const std::string& name) {
    if (obj.is_string()) {
      const std::string s = obj.str();
      auto fn = [&](auto f) { return Value(Function(f)); };
      if (name == "strip" || name == "lstrip" || name == "rstrip")
        return fn([s, name](Args& a) -> Value {
          a.expect_at_most(1);
          const Value c = a.get(0, "chars");
          const std::string chars = c.is_string() ? c.str() : kWhitespace;
          return Value(strip_chars(s, chars, name != "rstrip", name != "lstrip"));
        });
      if (name == "upper" || name == "lower")
        return fn([s, name](Args&) -> Value {
          std::string r = s;
          for (char& ch : r)
            ch = char(name == "upper" ? std::toupper(static_cast<unsigned char>(ch))
                                      : std::tolower(static_cast<unsigned char>(ch)));
          return Value(std::move(r));
        });
      if (name == "title" || name == "capitalize")
        return fn([s, name](Args&) -> Value { return Value(recase(s, name)); });
      if (name == "startswith" || name == "endswith")
        return fn([s, name](Args& a) -> Value {
          a.expect_at_most(1);
          const Value p = a.get(0, "prefix");
          auto one = [&](const Value& x) {
            if (!x.is_string()) fail("chat template: ", name, " needs a string");
            const std::string& t = x.str();
            if (t.size() > s.size()) return false;
            return name == "startswith" ? s.compare(0, t.size(), t) == 0
                                        : s.compare(s.size() - t.size(), t.size(), t) == 0;
          };
          if (p.is_list()) {
            for (const Value& x : p.list())
              if (one(x)) return Value(true);
            return Value(false);
          }
          return Value(one(p));
        });
      if (name == "split" || name == "rsplit")
        return fn([s, name](Args& a) -> Value { return split(s, a, name == "rsplit"); });
      if (name == "replace")
        return fn([s](Args& a) -> Value {
          a.expect_at_most(3);
          return replace(s, a.get(0, "old"), a.get(1, "new"), a.get(2, "count", Value(int64_t(-1))));
        });
      if (name == "find" || name == "count")
        return fn([s, name](Args& a) -> Value {
          const Value x = a.get(0, "sub");
          if (!x.is_string()) fail("chat template: ", name, " needs a string");
          if (name == "find") {
            const size_t p = s.find(x.str());
            if (p == std::string::npos) return Value(int64_t(-1));
            return Value(int64_t(code_points(s.substr(0, p)).size() - 1));
          }
          if (x.str().empty()) return Value(int64_t(code_points(s).size()));
          int64_t n = 0;
          for (size_t p = s.find(x.str()); p != std::string::npos; p = s.find(x.str(), p + x.str().size()))
            ++n;
          return Value(n);
        });
      if (name == "join")
        return fn([this, s](Args& a) -> Value {
          std::string out;
          const List items = iterate(a.get(0, "iterable"), 0);
          for (size_t i = 0; i < items.size(); ++i) {
            if (!items[i].is_string()) fail("chat template: join needs strings");
            out += (i ? s : "") + items[i].str();
            if (out.size() > kMaxOutput) fail("chat template: string too long");
          }
          return Value(std::move(out));
        });
    }
    if (obj.is_dict()) {
      const auto d = std::get<std::shared_ptr<const Dict>>(obj.v);
      if (name == "items" || name == "keys" || name == "values")
        return Value(Function([d, name](Args& a) -> Value {
          a.expect_at_most(0);
          List out;
          for (const auto& [k, v] : d->entries)
            out.push_back(name == "items" ? Value(List{Value(k), v}) : name == "keys" ? Value(k) : v);
          return Value(std::move(out));
        }));
      if (name == "get")
        return Value(Function([d](Args& a) -> Value {
          a.expect_at_most(2);
          const Value k = a.get(0, "key");
          const Value* v = k.is_string() ? d->find(k.str()) : nullptr;
          return v ? *v : a.get(1, "default", Value(nullptr));
        }));
    }
    return Value();
  }

  static std::string recase(const std::string& s, const std::string& how) {
    std::string r = s;
    bool start = true;
    for (size_t i = 0; i < r.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(r[i]);
      if (how == "capitalize") {
        r[i] = char(i == 0 ? std::toupper(c) : std::tolower(c));
      } else {
        r[i] = char(start ? std::toupper(c) : std::tolower(c));
        start = !std::isalpha(c);
      }
    }
    return r;
  }

  static Value split(const std::string& s, Args& a, bool from_right) {
    a.expect_at_most(2);
    const Value sep = a.get(0, "sep", Value(nullptr));
    const Value maxv = a.get(1, "maxsplit", Value(int64_t(-1)));
    if (!maxv.is_int()) fail("chat template: split: maxsplit must be an integer");
    int64_t max = std::get<int64_t>(maxv.v);
    List parts;
    if (sep.is_none() || sep.is_undefined()) {  // runs of whitespace, ends ignored
      std::vector<std::pair<size_t, size_t>> words;
      for (size_t i = 0; i < s.size();) {
        while (i < s.size() && std::strchr(kWhitespace, s[i]) && s[i]) ++i;
        if (i >= s.size()) break;
        size_t j = i;
        while (j < s.size() && !(std::strchr(kWhitespace, s[j]) && s[j])) ++j;
        words.emplace_back(i, j);
        i = j;
      }
      if (max >= 0 && int64_t(words.size()) > max + 1) {
        if (!from_right) {
          const size_t b = words[size_t(max)].first;
          words.resize(size_t(max));
          words.emplace_back(b, s.find_last_not_of(kWhitespace) + 1);
        } else {
          const size_t keep = words.size() - size_t(max);
          const size_t e = words[keep - 1].second;
          words.erase(words.begin(), words.begin() + ptrdiff_t(keep));
          words.insert(words.begin(), {s.find_first_not_of(kWhitespace), e});
        }
      }
      for (const auto& [b, e] : words) parts.emplace_back(s.substr(b, e - b));
      return Value(std::move(parts));
    }
    if (!sep.is_string() || sep.str().empty())
      fail("chat template: split: separator must be a non-empty string");
    const std::string& d = sep.str();
    std::vector<std::string> out;
    if (!from_right) {
      size_t b = 0;
      for (size_t p = s.find(d); p != std::string::npos && max != 0; p = s.find(d, b), --max) {
        out.push_back(s.substr(b, p - b));
        b = p + d.size();
      }
      out.push_back(s.substr(b));
    } else {
      size_t e = s.size();
      for (;;) {
        if (max == 0 || e < d.size()) break;
        const size_t p = s.rfind(d, e - d.size());
        if (p == std::string::npos) break;
        out.insert(out.begin(), s.substr(p + d.size(), e - p - d.size()));
        e = p;
        --max;
      }
      out.insert(out.begin(), s.substr(0, e));
    }
    for (auto& p : out) parts.emplace_back(std::move(p));
    return Value(std::move(parts));
  }

  static Value replace(const std::string& s, const Value& from, const Value& to, const Value& count) {
    if (!from.is_string() || !to.is_string() || !count.is_int())
      fail("chat template: replace needs two strings (and an integer count)");
    int64_t n = std::get<int64_t>(count.v);
    const std::string &f = from.str(), &t = to.str();
    std::string out;
    if (f.empty()) {  // Python inserts `t` between characters
      const auto at = code_points(s);
      for (size_t i = 0; i + 1 < at.size(); ++i) {
        if (n != 0) out += t, --n;
        out += s.substr(at[i], at[i + 1] - at[i]);
      }
      if (n != 0) out += t;
      return Value(std::move(out));
    }
    size_t b = 0;
    for (size_t p = s.find(f); p != std::string::npos && n != 0; p = s.find(f, b), --n) {
      out += s.substr(b, p - b) + t;
      b = p + f.size();
      if (out.size() > kMaxOutput) fail("chat template: string too long");
    }
    return Value(out + s.substr(b));
  }

  // ---- filters ----
  Value filter(const Expr& e) {
    const Value x = eval(*e.kids[0]);
    Args a = eval_args(e, 1, "filter " + e.name);
    const std::string& f = e.name;
    try {
      return apply_filter(f, x, a, e.line);
    } catch (const Error& err) {
      const std::string msg = err.what();
      if (msg.rfind(where_ + ": line ", 0) == 0) throw;
      error(e.line, msg.rfind("chat template: ", 0) == 0 ? msg.substr(15) : msg);
    }
  }

  Value apply_filter(const std::string& f, const Value& x, Args& a, int line) {
    auto need_string = [&]() -> const std::string& {
      if (x.is_undefined()) undefined_error(x, line);
      if (!x.is_string()) error(line, "filter " + f + " needs a string, found " + type_name(x));
      return x.str();
    };
    if (f == "default" || f == "d") {
      const Value dflt = a.get(0, "default_value", Value(""));
      const bool boolean = a.get(1, "boolean", Value(false)).truthy();
      return (x.is_undefined() || (boolean && !x.truthy())) ? dflt : x;
    }
    if (f == "trim") {
      const Value c = a.get(0, "chars");
      return Value(strip_chars(need_string(), c.is_string() ? c.str() : kWhitespace, true, true));
    }
    if (f == "upper" || f == "lower") {
      std::string r = need_string();
      for (char& ch : r)
        ch = char(f == "upper" ? std::toupper(static_cast<unsigned char>(ch))
                               : std::tolower(static_cast<unsigned char>(ch)));
      return Value(std::move(r));
    }
    if (f == "title" || f == "capitalize") return Value(recase(need_string(), f));
    if (f == "tojson") {
      const Value ind = a.get(0, "indent", Value(nullptr));
      if (!ind.is_none() && !ind.is_int()) error(line, "tojson: indent must be an integer");
      if (!a.get(1, "separators", Value(nullptr)).is_none())
        error(line, "tojson: separators are not supported");
      std::string j = x.to_json(ind.is_int() ? int(std::clamp<int64_t>(std::get<int64_t>(ind.v), 0, 64)) : -1,
                                a.get(2, "sort_keys", Value(false)).truthy());
      charge(line, j.size());
      return Value(std::move(j));
    }
    if (f == "length" || f == "count") {
      if (x.is_string()) return Value(int64_t(code_points(x.str()).size() - 1));
      if (x.is_list()) return Value(int64_t(x.list().size()));
      if (x.is_dict()) return Value(int64_t(x.dict().entries.size()));
      if (x.is_undefined()) return Value(int64_t(0));
      error(line, "object of type " + type_name(x) + " has no length");
    }
    if (f == "string") return Value(x.to_string());
    if (f == "safe" || f == "e" || f == "escape") {
      if (f != "safe") error(line, "filter " + f + " is not supported (templates render without autoescape)");
      return x;
    }
    if (f == "list") return Value(iterate(x, line));
    if (f == "first" || f == "last") {
      const List l = iterate(x, line);
      if (l.empty()) return Value::undefined(f);
      return f == "first" ? l.front() : l.back();
    }
    if (f == "reverse") {
      if (x.is_string()) {
        List chars = iterate(x, line);
        std::string r;
        for (auto it = chars.rbegin(); it != chars.rend(); ++it) r += it->str();
        return Value(std::move(r));
      }
      List l = iterate(x, line);
      std::reverse(l.begin(), l.end());
      return Value(std::move(l));
    }
    if (f == "join") {
      const List l = iterate(x, line);
      const Value sep = a.get(0, "d", Value(""));
      const Value attr = a.get(1, "attribute", Value(nullptr));
      std::string out;
      for (size_t i = 0; i < l.size(); ++i) {
        const Value item = attr.is_string() ? get_item(l[i], attr, line) : l[i];
        out += (i ? sep.to_string() : "") + item.to_string();
        if (out.size() > kMaxOutput) error(line, "string too long");
      }
      return Value(std::move(out));
    }
    if (f == "items") {
      if (x.is_undefined()) return Value(List{});
      if (!x.is_dict()) error(line, "filter items needs a dict, found " + type_name(x));
      List out;
      for (const auto& [k, v] : x.dict().entries) out.push_back(Value(List{Value(k), v}));
      return Value(std::move(out));
    }
    if (f == "int") {
      if (x.is_int()) return x;
      if (x.is_float()) {
        const double d = std::get<double>(x.v);
        if (!(std::abs(d) < 9.2e18)) error(line, "filter int: " + x.to_string() + " does not fit an integer");
        return Value(int64_t(d));
      }
      if (x.is_bool()) return Value(int64_t(std::get<bool>(x.v)));
      if (x.is_string()) {
        const std::string t = strip_chars(x.str(), kWhitespace, true, true);
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(t.c_str(), &end, 10);
        if (!t.empty() && end && *end == '\0' && errno == 0) return Value(int64_t(v));
      }
      return a.get(0, "default", Value(int64_t(0)));
    }
    if (f == "float") {
      if (x.is_number() || x.is_bool()) return Value(x.is_bool() ? double(std::get<bool>(x.v)) : x.number());
      if (x.is_string()) {
        char* end = nullptr;
        const std::string t = strip_chars(x.str(), kWhitespace, true, true);
        const double v = std::strtod(t.c_str(), &end);
        if (!t.empty() && end && *end == '\0') return Value(v);
      }
      return a.get(0, "default", Value(0.0));
    }
    if (f == "abs") {
      if (x.is_int()) {
        const int64_t i = std::get<int64_t>(x.v);
        if (i == INT64_MIN) error(line, "integer overflow");
        return Value(i < 0 ? -i : i);
      }
      if (x.is_float()) return Value(std::abs(std::get<double>(x.v)));
      error(line, "filter abs needs a number");
    }
    if (f == "replace") {
      return replace(need_string(), a.get(0, "old"), a.get(1, "new"), a.get(2, "count", Value(int64_t(-1))));
    }
    if (f == "indent") {
      const Value w = a.get(0, "width", Value(int64_t(4)));
      const bool first = a.get(1, "first", Value(false)).truthy(),
                 blank = a.get(2, "blank", Value(false)).truthy();
      const std::string pad =
          w.is_string()
              ? w.str()
              : std::string(size_t(std::clamp<int64_t>(w.is_int() ? std::get<int64_t>(w.v) : 4, 0, 256)),
                            ' ');
      // Jinja: the first line is indented only with first=True, empty lines only with blank=True.
      const std::string& s = need_string();
      std::string out = first ? pad : "";
      size_t b = 0;
      for (bool first_line = true;; first_line = false) {
        const size_t nl = s.find('\n', b);
        const std::string ln = s.substr(b, nl == std::string::npos ? std::string::npos : nl - b);
        if (!first_line) out += (blank || !ln.empty()) ? "\n" + pad : "\n";
        out += ln;
        if (nl == std::string::npos) break;
        b = nl + 1;
        if (out.size() > kMaxOutput) error(line, "string too long");
      }
      return Value(std::move(out));
    }
    if (f == "selectattr" || f == "rejectattr" || f == "select" || f == "reject") {
      const bool by_attr = f == "selectattr" || f == "rejectattr";
      const bool keep_if = f == "selectattr" || f == "select";
      const List l = iterate(x, line);
      const size_t t0 = by_attr ? 1 : 0;
      const Value attr = by_attr ? a.get(0, "attribute") : Value();
      if (by_attr && !attr.is_string()) error(line, f + " needs an attribute name");
      const Value test_name = a.pos.size() > t0 ? a.pos[t0] : Value();
      List out;
      for (const Value& item : l) {
        step(line);
        const Value v = by_attr ? get_attr_path(item, attr.str(), line) : item;
        bool pass;
        if (test_name.is_undefined()) {
          pass = v.truthy();
        } else {
          if (!test_name.is_string()) error(line, f + ": the test must be named by a string");
          Args ta;
          ta.what = "test " + test_name.str();
          ta.pos.assign(a.pos.begin() + ptrdiff_t(std::min(a.pos.size(), t0 + 1)), a.pos.end());
          pass = apply_test(test_name.str(), v, ta, line);
        }
        if (pass == keep_if) out.push_back(item);
      }
      return Value(std::move(out));
    }
    if (f == "map") {
      const List l = iterate(x, line);
      const Value attr = a.get(99, "attribute");
      List out;
      for (const Value& item : l) {
        step(line);
        if (attr.is_string()) {
          Value v = get_attr_path(item, attr.str(), line);
          if (v.is_undefined()) v = a.get(99, "default", v);
          out.push_back(v);
        } else {
          if (a.pos.empty() || !a.pos[0].is_string()) error(line, "map needs attribute= or a filter name");
          Args fa;
          fa.what = "filter " + a.pos[0].str();
          fa.pos.assign(a.pos.begin() + 1, a.pos.end());
          out.push_back(apply_filter(a.pos[0].str(), item, fa, line));
        }
      }
      return Value(std::move(out));
    }
    if (f == "unique") {
      List out;
      for (const Value& v : iterate(x, line)) {
        step(line, int64_t(out.size()) + 1);
        if (std::none_of(out.begin(), out.end(), [&](const Value& o) { return equal(o, v); }))
          out.push_back(v);
      }
      return Value(std::move(out));
    }
    if (f == "sort") {
      List l = iterate(x, line);
      const bool rev = a.get(0, "reverse", Value(false)).truthy();
      const Value attr = a.get(2, "attribute");
      step(line, int64_t(l.size()) * 20);
      std::stable_sort(l.begin(), l.end(), [&](const Value& p, const Value& q) {
        const Value pv = attr.is_string() ? get_attr_path(p, attr.str(), line) : p;
        const Value qv = attr.is_string() ? get_attr_path(q, attr.str(), line) : q;
        return rev ? compare("<", qv, pv, line) : compare("<", pv, qv, line);
      });
      return Value(std::move(l));
    }
    if (f == "dictsort") {
      if (!x.is_dict()) error(line, "filter dictsort needs a dict");
      List out;
      for (const auto& [k, v] : x.dict().entries) out.push_back(Value(List{Value(k), v}));
      std::stable_sort(out.begin(), out.end(),
                       [](const Value& p, const Value& q) { return p.list()[0].str() < q.list()[0].str(); });
      return Value(std::move(out));
    }
    if (f == "min" || f == "max" || f == "sum") {
      const List l = iterate(x, line);
      if (f == "sum") {
        Value acc = a.get(1, "start", Value(int64_t(0)));
        for (const Value& v : l) acc = numeric_add(acc, v, line);
        return acc;
      }
      if (l.empty()) return Value::undefined(f);
      Value best = l[0];
      for (const Value& v : l)
        if (compare(f == "min" ? "<" : ">", v, best, line)) best = v;
      return best;
    }
    if (f == "round") {
      const int64_t prec = a.get(0, "precision", Value(int64_t(0))).is_int()
                               ? std::get<int64_t>(a.get(0, "precision", Value(int64_t(0))).v)
                               : 0;
      if (!x.is_number()) error(line, "filter round needs a number");
      const double p = std::pow(10.0, double(std::clamp<int64_t>(prec, -300, 300)));
      return Value(std::nearbyint(x.number() * p) / p);
    }
    if (f == "wordcount") {
      Args none;
      return Value(int64_t(split(need_string(), none, false).list().size()));
    }
    error(line, "unknown filter '" + f + "'");
  }

  Value numeric_add(const Value& a, const Value& b, int line) {
    if (a.is_int() && b.is_int()) {
      int64_t r;
      if (__builtin_add_overflow(std::get<int64_t>(a.v), std::get<int64_t>(b.v), &r))
        error(line, "integer overflow");
      return Value(r);
    }
    if (a.is_number() && b.is_number()) return Value(a.number() + b.number());
    error(line, "sum needs numbers");
  }

  // "a.b.c" looked up item by item, as Jinja's attribute filters do.
  Value get_attr_path(const Value& obj, const std::string& path, int line) {
    Value v = obj;
    size_t b = 0;
    for (;;) {
      const size_t dot = path.find('.', b);
      const std::string part = path.substr(b, dot == std::string::npos ? std::string::npos : dot - b);
      if (v.is_undefined()) return v;
      v = get_item(v, Value(part), line);
      if (dot == std::string::npos) return v;
      b = dot + 1;
    }
  }

  // ---- tests ----
  bool test(const Expr& e) {
    const Value x = eval(*e.kids[0]);
    Args a = eval_args(e, 1, "test " + e.name);
    return apply_test(e.name, x, a, e.line);
  }

  bool apply_test(const std::string& t, const Value& x, const Args& a, int line) {
    if (t == "defined") return !x.is_undefined();
    if (t == "undefined") return x.is_undefined();
    if (t == "none") return x.is_none();
    if (t == "string") return x.is_string();
    if (t == "number") return x.is_number();
    if (t == "integer") return x.is_int();
    if (t == "float") return x.is_float();
    if (t == "boolean") return x.is_bool();
    if (t == "true") return x.is_bool() && std::get<bool>(x.v);
    if (t == "false") return x.is_bool() && !std::get<bool>(x.v);
    if (t == "mapping") return x.is_dict() || x.is_namespace();
    if (t == "sequence") return x.is_list() || x.is_string() || x.is_dict();
    if (t == "iterable") return x.is_list() || x.is_string() || x.is_dict() || x.is_undefined();
    if (t == "callable") return x.is_callable();
    if (t == "odd" || t == "even") {
      if (!x.is_int()) error(line, "test " + t + " needs an integer");
      return (std::get<int64_t>(x.v) % 2 != 0) == (t == "odd");
    }
    if (t == "divisibleby") {
      const Value d = a.get(0, "num");
      if (!x.is_int() || !d.is_int() || std::get<int64_t>(d.v) == 0)
        error(line, "test divisibleby needs non-zero integers");
      return std::get<int64_t>(d.v) == -1 || std::get<int64_t>(x.v) % std::get<int64_t>(d.v) == 0;
    }
    if (t == "eq" || t == "equalto" || t == "==") return equal(x, a.get(0, "b"));
    if (t == "ne" || t == "!=") return !equal(x, a.get(0, "b"));
    if (t == "sameas") {
      const Value o = a.get(0, "other");
      if (x.is_none() || o.is_none()) return x.is_none() && o.is_none();
      if (x.is_bool() && o.is_bool()) return std::get<bool>(x.v) == std::get<bool>(o.v);
      return false;
    }
    if (t == "in") return contains(a.get(0, "seq"), x, line);
    if (t == "lower" || t == "upper") {
      if (!x.is_string()) return false;
      for (const char c : x.str())
        if (std::isalpha(static_cast<unsigned char>(c)) &&
            (t == "lower" ? std::isupper(static_cast<unsigned char>(c))
                          : std::islower(static_cast<unsigned char>(c))))
          return false;
      return true;
    }
    error(line, "unknown test '" + t + "'");
  }

  // ---- globals ----
  void install_globals(Dict& g) {
    g.set("raise_exception", Value(Function([](Args& a) -> Value {
            fail("chat template: ", a.get(0, "message", Value("raise_exception called")).to_string());
          })));
    g.set("range", Value(Function([this](Args& a) -> Value {
            a.expect_at_most(3);
            for (const Value& v : a.pos)
              if (!v.is_int()) fail("chat template: range needs integers");
            int64_t b = 0, e = 0, s = 1;
            if (a.pos.size() == 1) e = std::get<int64_t>(a.pos[0].v);
            if (a.pos.size() >= 2) b = std::get<int64_t>(a.pos[0].v), e = std::get<int64_t>(a.pos[1].v);
            if (a.pos.size() == 3) s = std::get<int64_t>(a.pos[2].v);
            if (s == 0) fail("chat template: range step cannot be zero");
            List out;
            for (int64_t i = b; s > 0 ? i < e : i > e;) {
              step(0);
              out.emplace_back(i);
              if (__builtin_add_overflow(i, s, &i)) break;  // past the end of int64
            }
            return Value(std::move(out));
          })));
    g.set("namespace", Value(Function([](Args& a) -> Value {
            Value::Namespace ns{std::make_shared<Dict>()};
            for (const Value& p : a.pos)
              if (p.is_dict())
                for (const auto& [k, v] : p.dict().entries) ns.attrs->set(k, v);
            for (const auto& [k, v] : a.kw) ns.attrs->set(k, v);
            Value out;
            out.v = ns;
            return out;
          })));
    g.set("dict", Value(Function([](Args& a) -> Value {
            Dict d;
            for (const auto& [k, v] : a.kw) d.set(k, v);
            return Value(std::move(d));
          })));
    g.set("strftime_now", Value(Function([](Args& a) -> Value {
            const Value fmt = a.get(0, "format");
            if (!fmt.is_string()) fail("chat template: strftime_now needs a format string");
            const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
            std::tm tm{};
            localtime_r(&now, &tm);
            char buf[256];
            const size_t n = std::strftime(buf, sizeof buf, fmt.str().c_str(), &tm);
            return Value(std::string(buf, n));
          })));
  }

  const std::string& where_;
  std::vector<std::shared_ptr<Dict>> frames_;  // globals, context, then one per loop iteration / macro call
  std::string out_;
  int64_t steps_ = 0, bytes_ = 0;
  int call_depth_ = 0;
};

}  // namespace

Template::Template(const std::string& source, std::string where)
    : where_(std::move(where)), root_(parse_template(source, where_)) {}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;

std::string Template::render(const Dict& context) const {
  Renderer r(where_, context);
  return r.run(*root_);
}

}  // namespace braid::jinja
