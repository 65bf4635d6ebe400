// Jinja lexer and parser: template text -> syntax tree, with transformers' whitespace
// settings (trim_blocks, lstrip_blocks, trailing newline dropped) applied while lexing.
#include <cstring>

#include "core/error.hpp"
#include "tokenizer/jinja_ast.hpp"

namespace braid::jinja {
namespace {

constexpr int kMaxNesting = 200;  // expression and block nesting

struct Token {
  enum Type { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, Int, Float, String, Op, Eof } type;
  std::string s;
  int line = 0;
  int64_t i = 0;
  double d = 0;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

class Lexer {
 public:
  Lexer(const std::string& src, const std::string& where) : src_(src), where_(where) {
    if (!src_.empty() && src_.back() == '\n') {  // keep_trailing_newline=False
      src_.pop_back();
      if (!src_.empty() && src_.back() == '\r') src_.pop_back();
    }
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool strip_next = false;  // the previous tag ended with '-'
    while (pos < src_.size()) {
      size_t tag = find_tag(pos);
      std::string text = src_.substr(pos, tag - pos);
      if (strip_next)
        text.erase(0, text.find_first_not_of(" \t\n\r\f\v") == std::string::npos
                          ? text.size()
                          : text.find_first_not_of(" \t\n\r\f\v"));
      strip_next = false;
      if (tag == src_.size()) {
        push_text(text, pos);
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      const char mod = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (mod == '-') {
        const size_t keep = text.find_last_not_of(" \t\n\r\f\v");
        text.erase(keep == std::string::npos ? 0 : keep + 1);
      } else if (kind != '{' && mod != '+' && at_line_start(tag)) {
        const size_t nl = text.find_last_of('\n');
        const size_t from = nl == std::string::npos ? 0 : nl + 1;
        if (text.find_first_not_of(" \t", from) == std::string::npos) text.erase(from);
      }
      push_text(text, pos);
      size_t p = tag + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
      line_at(tag);
      if (kind == '#') {
        const size_t end = src_.find("#}", p);
        if (end == std::string::npos) fail(where_, ": line ", line_, ": unterminated comment");
        strip_next = end > p && src_[end - 1] == '-';
        pos = end + 2;
        if (!strip_next) pos = trim_block_newline(pos);
        continue;
      }
      const bool block = kind == '%';
      tokens_.push_back({block ? Token::BlockBegin : Token::VarBegin, "", line_});
      const size_t raw_from = tokens_.size();
      p = lex_expr(p, block ? '%' : '}', &strip_next);
      pos = p;
      if (block && !strip_next) pos = trim_block_newline(pos);
      tokens_.push_back({block ? Token::BlockEnd : Token::VarEnd, "", line_});
      if (block && tokens_.size() == raw_from + 2 && tokens_[raw_from].type == Token::Name &&
          tokens_[raw_from].s == "raw")
        pos = lex_raw(pos, &strip_next);
    }
    tokens_.push_back({Token::Eof, "", line_});
    return std::move(tokens_);
  }

 private:
  size_t find_tag(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i)
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    return src_.size();
  }
  bool at_line_start(size_t tag) const {
    size_t i = tag;
    while (i > 0 && (src_[i - 1] == ' ' || src_[i - 1] == '\t')) --i;
    return i == 0 || src_[i - 1] == '\n';
  }
  size_t trim_block_newline(size_t pos) const {  // trim_blocks
    if (pos < src_.size() && src_[pos] == '\n') return pos + 1;
    if (pos + 1 < src_.size() && src_[pos] == '\r' && src_[pos + 1] == '\n') return pos + 2;
    return pos;
  }
  void line_at(size_t pos) {
    for (; counted_ < pos && counted_ < src_.size(); ++counted_)
      if (src_[counted_] == '\n') ++line_;
  }
  void push_text(const std::string& text, size_t pos) {
    line_at(pos);
    if (!text.empty()) tokens_.push_back({Token::Text, text, line_});
  }

  // {% raw %}...{% endraw %}: the body is text, verbatim.
  size_t lex_raw(size_t pos, bool* strip_next) {
    tokens_.resize(tokens_.size() - 3);  // drop BlockBegin raw BlockEnd
    for (size_t p = pos;;) {
      const size_t open = src_.find("{%", p);
      if (open == std::string::npos) fail(where_, ": line ", line_, ": missing {% endraw %}");
      size_t q = open + 2;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) ++q;
      while (q < src_.size() && is_space(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") != 0) {
        p = open + 2;
        continue;
      }
      q += 6;
      while (q < src_.size() && is_space(src_[q])) ++q;
      bool strip = false;
      if (q < src_.size() && src_[q] == '-') strip = true, ++q;
      if (src_.compare(q, 2, "%}") != 0) fail(where_, ": line ", line_, ": malformed endraw tag");
      std::string body = src_.substr(pos, open - pos);
      if (src_[open + 2] == '-') {
        const size_t keep = body.find_last_not_of(" \t\n\r\f\v");
        body.erase(keep == std::string::npos ? 0 : keep + 1);
      }
      if (*strip_next) body.erase(0, std::min(body.size(), body.find_first_not_of(" \t\n\r\f\v")));
      push_text(body, pos);
      *strip_next = strip;
      return strip ? q + 2 : trim_block_newline(q + 2);
    }
  }

  // Tokens of one tag's inside, up to its closing "}}" or "%}" (with '-' before it).
  size_t lex_expr(size_t p, char close, bool* strip_next) {
    int depth = 0;  // brackets: a '}' inside {...} does not end a {{ }}
    for (;;) {
      while (p < src_.size() && is_space(src_[p])) {
        if (src_[p] == '\n') ++line_;
        ++p;
      }
      counted_ = std::max(counted_, p);
      if (p >= src_.size()) fail(where_, ": line ", line_, ": unterminated tag");
      const char c = src_[p];
      if (depth == 0 && c == '-' && p + 2 < src_.size() && src_[p + 1] == close && src_[p + 2] == '}') {
        *strip_next = true;
        return p + 3;
      }
      if (depth == 0 && c == close && p + 1 < src_.size() && src_[p + 1] == '}') {
        *strip_next = false;
        return p + 2;
      }
      if (is_name_start(c)) {
        size_t e = p;
        while (e < src_.size() && is_name_char(src_[e])) ++e;
        tokens_.push_back({Token::Name, src_.substr(p, e - p), line_});
        p = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        p = lex_number(p);
      } else if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                                     ">",  "=",  "(",  ")",  "[",  "]",  "{", "}", ",", ".", ":", "|"};
        const char* op = nullptr;
        for (const char* o : kOps)
          if (src_.compare(p, std::strlen(o), o) == 0) {
            op = o;
            break;
          }
        if (!op) fail(where_, ": line ", line_, ": unexpected character '", std::string(1, c), "'");
        if (*op == '(' || *op == '[' || *op == '{') ++depth;
        if ((*op == ')' || *op == ']' || *op == '}') && depth > 0) --depth;
        tokens_.push_back({Token::Op, op, line_});
        p += std::strlen(op);
      }
    }
  }

  size_t lex_number(size_t p) {
    size_t e = p;
    bool is_float = false;
    while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
    if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      is_float = true;
      ++e;
      while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t f = e + 1;
      if (f < src_.size() && (src_[f] == '+' || src_[f] == '-')) ++f;
      if (f < src_.size() && std::isdigit(static_cast<unsigned char>(src_[f]))) {
        is_float = true;
        e = f;
        while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
      }
    }
    std::string digits;
    for (size_t i = p; i < e; ++i)
      if (src_[i] != '_') digits += src_[i];
    Token t{is_float ? Token::Float : Token::Int, digits, line_};
    if (is_float) {
      t.d = std::strtod(digits.c_str(), nullptr);
    } else {
      errno = 0;
      t.i = std::strtoll(digits.c_str(), nullptr, 10);
      if (errno == ERANGE) fail(where_, ": line ", line_, ": integer ", digits, " is too large");
    }
    tokens_.push_back(t);
    return e;
  }

  size_t lex_string(size_t p) {
    const char q = src_[p];
    std::string out;
    size_t i = p + 1;
    for (;; ++i) {
      if (i >= src_.size()) fail(where_, ": line ", line_, ": unterminated string");
      const char c = src_[i];
      if (c == q) break;
      if (c == '\n') ++line_;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (++i >= src_.size()) fail(where_, ": line ", line_, ": unterminated string");
      switch (src_[i]) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case '0':
          out += '\0';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case '\n':
          ++line_;
          break;  // line continuation
        default:
          out += '\\', out += src_[i];  // unknown escapes stay, as in Python
      }
    }
    tokens_.push_back({Token::String, out, line_});
    return i + 1;
  }

  std::string src_;
  const std::string& where_;
  std::vector<Token> tokens_;
  int line_ = 1;
  size_t counted_ = 0;
};

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& where) : t_(std::move(tokens)), where_(where) {}

  std::unique_ptr<Node> parse_all() {
    auto root = std::make_unique<Node>();
    root->kind = Node::Block;
    std::string end = parse_body(root.get(), {});
    if (!end.empty()) error("unexpected {% " + end + " %}");
    return root;
  }

 private:
  const Token& peek(size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const Token& next() { return t_[std::min(i_++, t_.size() - 1)]; }
  [[noreturn]] void error(const std::string& msg) const { fail(where_, ": line ", peek().line, ": ", msg); }
  bool at_op(const char* op) const { return peek().type == Token::Op && peek().s == op; }
  bool at_name(const char* n) const { return peek().type == Token::Name && peek().s == n; }
  void expect_op(const char* op) {
    if (!at_op(op)) error(std::string("expected '") + op + "'" + found());
    ++i_;
  }
  std::string found() const {
    const Token& t = peek();
    switch (t.type) {
      case Token::BlockEnd:
        return ", found the end of the tag";
      case Token::VarEnd:
        return ", found '}}'";
      case Token::Eof:
        return ", found the end of the template";
      case Token::Text:
        return ", found text";
      default:
        return ", found '" + t.s + "'";
    }
  }
  std::string expect_name() {
    if (peek().type != Token::Name) error("expected a name" + found());
    return next().s;
  }
  void expect_block_end() {
    if (peek().type != Token::BlockEnd) error("expected the end of the tag" + found());
    ++i_;
  }
  void enter() {
    if (++depth_ > kMaxNesting) error("template nested too deeply");
  }

  // Parses nodes into `into` until a block tag whose keyword is in `ends` (returned, the
  // tag's remaining tokens left unread) or the end of the template ("").
  std::string parse_body(Node* into, std::initializer_list<const char*> ends) {
    enter();
    for (;;) {
      const Token& t = peek();
      if (t.type == Token::Eof) {
        --depth_;
        return "";
      }
      if (t.type == Token::Text) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Text, n->line = t.line, n->text = t.s;
        into->bodies.push_back(std::move(n));
        ++i_;
      } else if (t.type == Token::VarBegin) {
        ++i_;
        auto n = std::make_unique<Node>();
        n->kind = Node::Output, n->line = t.line;
        n->exprs.push_back(parse_expr());
        if (peek().type != Token::VarEnd) error("expected '}}'" + found());
        ++i_;
        into->bodies.push_back(std::move(n));
      } else if (t.type == Token::BlockBegin) {
        ++i_;
        const std::string kw = expect_name();
        for (const char* e : ends)
          if (kw == e) {
            --depth_;
            return kw;
          }
        into->bodies.push_back(parse_statement(kw, t.line));
      } else {
        error("unexpected token" + found());
      }
    }
  }

  std::unique_ptr<Node> parse_statement(const std::string& kw, int line) {
    auto n = std::make_unique<Node>();
    n->line = line;
    auto body = [&](std::initializer_list<const char*> ends) {
      auto b = std::make_unique<Node>();
      b->kind = Node::Block;
      const std::string end = parse_body(b.get(), ends);
      if (end.empty()) error("{% " + kw + " %} at line " + std::to_string(line) + " is never closed");
      n->bodies.push_back(std::move(b));
      return end;
    };
    if (kw == "if") {
      n->kind = Node::If;
      n->exprs.push_back(parse_expr());
      expect_block_end();
      for (std::string end = body({"elif", "else", "endif"});;) {
        if (end == "endif") break;
        if (end == "elif") {
          n->exprs.push_back(parse_expr());
          expect_block_end();
          end = body({"elif", "else", "endif"});
        } else {
          expect_block_end();
          if (body({"endif"}) != "endif") error("expected {% endif %}");
          break;
        }
      }
      expect_block_end();
    } else if (kw == "for") {
      n->kind = Node::For;
      n->targets.push_back(expect_name());
      while (at_op(",")) ++i_, n->targets.push_back(expect_name());
      if (!at_name("in")) error("expected 'in'" + found());
      ++i_;
      n->exprs.push_back(parse_or_cond(false));
      if (at_name("if")) ++i_, n->exprs.push_back(parse_or_cond(false));
      if (at_name("recursive")) error("recursive loops are not supported");
      expect_block_end();
      std::string end = body({"else", "endfor"});
      if (end == "else") {
        expect_block_end();
        end = body({"endfor"});
      }
      expect_block_end();
    } else if (kw == "set") {
      n->kind = Node::Set;
      std::string target = expect_name();
      if (at_op(".")) ++i_, target += "." + expect_name();
      n->targets.push_back(target);
      while (at_op(",")) ++i_, n->targets.push_back(expect_name());
      if (at_op("=")) {
        ++i_;
        n->exprs.push_back(parse_expr());
        expect_block_end();
      } else {
        if (n->targets.size() != 1 || target.find('.') != std::string::npos)
          error("a block set takes one name");
        expect_block_end();
        body({"endset"});
        expect_block_end();
      }
    } else if (kw == "macro") {
      n->kind = Node::Macro;
      n->text = expect_name();
      expect_op("(");
      while (!at_op(")")) {
        n->targets.push_back(expect_name());
        if (at_op("=")) {
          ++i_;
          n->exprs.push_back(parse_expr());
        } else {
          n->exprs.push_back(nullptr);
        }
        if (!at_op(")")) expect_op(",");
      }
      ++i_;
      expect_block_end();
      body({"endmacro"});
      if (peek().type == Token::Name) ++i_;  // {% endmacro name %}
      expect_block_end();
    } else if (kw == "generation") {  // transformers' assistant-mask marker: its body renders as is
      expect_block_end();
      n->kind = Node::Block;
      auto b = std::make_unique<Node>();
      b->kind = Node::Block;
      if (parse_body(b.get(), {"endgeneration"}).empty()) error("{% generation %} is never closed");
      expect_block_end();
      return b;
    } else if (kw == "break" || kw == "continue") {
      n->kind = kw == "break" ? Node::Break : Node::Continue;
      expect_block_end();
    } else {
      error("unsupported tag '" + kw + "'");
    }
    return n;
  }

  std::unique_ptr<Expr> make(Expr::Kind k, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = k, e->line = line;
    return e;
  }

  // A full expression; a bare comma list is a tuple (as in `{% set a = 1, 2 %}`).
  std::unique_ptr<Expr> parse_expr() {
    auto first = parse_or_cond(true);
    if (!at_op(",")) return first;
    auto t = make(Expr::TupleLit, first->line);
    t->kids.push_back(std::move(first));
    while (at_op(",")) {
      ++i_;
      if (peek().type == Token::BlockEnd || peek().type == Token::VarEnd) break;
      t->kids.push_back(parse_or_cond(true));
    }
    return t;
  }

  // or-expression, optionally with a trailing `if cond [else other]`.
  std::unique_ptr<Expr> parse_or_cond(bool allow_cond) {
    enter();
    auto e = parse_or();
    while (allow_cond && at_name("if")) {
      ++i_;
      auto c = make(Expr::Cond, e->line);
      c->kids.push_back(parse_or());
      c->kids.push_back(std::move(e));
      if (at_name("else")) {
        ++i_;
        c->kids.push_back(parse_or());
      } else {
        c->kids.push_back(nullptr);
      }
      e = std::move(c);
    }
    --depth_;
    return e;
  }
  std::unique_ptr<Expr> binary(const char* op, std::unique_ptr<Expr> a, std::unique_ptr<Expr> b) {
    auto e = make(Expr::Binary, a->line);
    e->name = op;
    e->kids.push_back(std::move(a));
    e->kids.push_back(std::move(b));
    return e;
  }
  std::unique_ptr<Expr> parse_or() {
    auto e = parse_and();
    while (at_name("or")) ++i_, e = binary("or", std::move(e), parse_and());
    return e;
  }
  std::unique_ptr<Expr> parse_and() {
    auto e = parse_not();
    while (at_name("and")) ++i_, e = binary("and", std::move(e), parse_not());
    return e;
  }
  std::unique_ptr<Expr> parse_not() {
    if (at_name("not")) {
      const int line = next().line;
      enter();
      auto e = make(Expr::Unary, line);
      e->name = "not";
      e->kids.push_back(parse_not());
      --depth_;
      return e;
    }
    return parse_compare();
  }
  std::unique_ptr<Expr> parse_compare() {
    auto first = parse_math1();
    std::unique_ptr<Expr> cmp;
    for (;;) {
      std::string op;
      if (peek().type == Token::Op && (peek().s == "==" || peek().s == "!=" || peek().s == "<" ||
                                       peek().s == ">" || peek().s == "<=" || peek().s == ">=")) {
        op = next().s;
      } else if (at_name("in")) {
        ++i_, op = "in";
      } else if (at_name("not") && peek(1).type == Token::Name && peek(1).s == "in") {
        i_ += 2, op = "not in";
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(Expr::Compare, first->line);
        cmp->kids.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->kids.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  std::unique_ptr<Expr> parse_math1() {
    auto e = parse_concat();
    while (at_op("+") || at_op("-")) {
      const char* op = at_op("+") ? "+" : "-";
      ++i_;
      e = binary(op, std::move(e), parse_concat());
    }
    return e;
  }
  std::unique_ptr<Expr> parse_concat() {
    auto e = parse_math2();
    while (at_op("~")) ++i_, e = binary("~", std::move(e), parse_math2());
    return e;
  }
  std::unique_ptr<Expr> parse_math2() {
    auto e = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const std::string op = next().s;
      e = binary(op == "*" ? "*" : op == "/" ? "/" : op == "//" ? "//" : "%", std::move(e), parse_pow());
    }
    return e;
  }
  std::unique_ptr<Expr> parse_pow() {
    auto e = parse_unary(true);
    while (at_op("**")) ++i_, e = binary("**", std::move(e), parse_unary(true));
    return e;
  }
  std::unique_ptr<Expr> parse_unary(bool with_filter) {
    enter();
    std::unique_ptr<Expr> e;
    if (at_op("-") || at_op("+")) {
      const Token& t = next();
      e = make(Expr::Unary, t.line);
      e->name = t.s;
      e->kids.push_back(parse_unary(false));
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) e = parse_filters(std::move(e));
    --depth_;
    return e;
  }

  std::unique_ptr<Expr> parse_primary() {
    const Token& t = peek();
    switch (t.type) {
      case Token::Name: {
        ++i_;
        if (t.s == "true" || t.s == "True") return literal(Value(true), t.line);
        if (t.s == "false" || t.s == "False") return literal(Value(false), t.line);
        if (t.s == "none" || t.s == "None") return literal(Value(nullptr), t.line);
        auto e = make(Expr::Name, t.line);
        e->name = t.s;
        return e;
      }
      case Token::Int:
        ++i_;
        return literal(Value(t.i), t.line);
      case Token::Float:
        ++i_;
        return literal(Value(t.d), t.line);
      case Token::String: {
        std::string s;
        const int line = t.line;
        while (peek().type == Token::String) s += next().s;  // adjacent literals concatenate
        return literal(Value(std::move(s)), line);
      }
      case Token::Op:
        if (t.s == "(") {
          ++i_;
          if (at_op(")")) {
            ++i_;
            return make(Expr::TupleLit, t.line);
          }
          auto e = parse_or_cond(true);
          if (at_op(",")) {
            auto tup = make(Expr::TupleLit, t.line);
            tup->kids.push_back(std::move(e));
            while (at_op(",")) {
              ++i_;
              if (at_op(")")) break;
              tup->kids.push_back(parse_or_cond(true));
            }
            e = std::move(tup);
          }
          expect_op(")");
          return e;
        }
        if (t.s == "[") {
          ++i_;
          auto e = make(Expr::ListLit, t.line);
          while (!at_op("]")) {
            e->kids.push_back(parse_or_cond(true));
            if (!at_op("]")) expect_op(",");
          }
          ++i_;
          return e;
        }
        if (t.s == "{") {
          ++i_;
          auto e = make(Expr::DictLit, t.line);
          while (!at_op("}")) {
            e->kids.push_back(parse_or_cond(true));
            expect_op(":");
            e->kids.push_back(parse_or_cond(true));
            if (!at_op("}")) expect_op(",");
          }
          ++i_;
          return e;
        }
        break;
      default:
        break;
    }
    error("expected an expression" + found());
  }
  std::unique_ptr<Expr> literal(Value v, int line) {
    auto e = make(Expr::Literal, line);
    e->value = std::move(v);
    return e;
  }

  // Call arguments after '(' up to ')': positional kids, then keyword ones.
  void parse_call_args(Expr* e) {
    expect_op("(");
    while (!at_op(")")) {
      if (peek().type == Token::Name && peek(1).type == Token::Op && peek(1).s == "=") {
        e->keywords.push_back(next().s);
        ++i_;
        e->kids.push_back(parse_or_cond(true));
      } else {
        if (!e->keywords.empty()) error("positional argument after a keyword argument");
        e->kids.push_back(parse_or_cond(true));
      }
      if (!at_op(")")) expect_op(",");
    }
    ++i_;
  }

  std::unique_ptr<Expr> parse_postfix(std::unique_ptr<Expr> e) {
    for (;;) {
      if (at_op(".")) {
        ++i_;
        auto a = make(Expr::Attr, e->line);
        if (peek().type == Token::Int) {  // x.0 is x[0]
          a->kind = Expr::Item;
          a->kids.push_back(std::move(e));
          a->kids.push_back(literal(Value(next().i), a->line));
        } else {
          a->name = expect_name();
          a->kids.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (at_op("[")) {
        ++i_;
        std::unique_ptr<Expr> parts[3];
        int colons = 0;
        for (;;) {
          if (at_op("]")) break;
          if (at_op(":")) {
            if (++colons > 2) error("too many ':' in a slice");
            ++i_;
            continue;
          }
          if (parts[colons]) error("expected ']' or ':'" + found());
          parts[colons] = parse_or_cond(true);
        }
        ++i_;
        auto s = make(colons ? Expr::Slice : Expr::Item, e->line);
        s->kids.push_back(std::move(e));
        if (!colons && !parts[0]) error("empty subscript");
        s->kids.push_back(std::move(parts[0]));
        if (colons) {
          s->kids.push_back(std::move(parts[1]));
          s->kids.push_back(std::move(parts[2]));
        }
        e = std::move(s);
      } else if (at_op("(")) {
        auto c = make(Expr::Call, e->line);
        c->kids.push_back(std::move(e));
        parse_call_args(c.get());
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  std::unique_ptr<Expr> parse_filters(std::unique_ptr<Expr> e) {
    for (;;) {
      if (at_op("|")) {
        ++i_;
        auto f = make(Expr::Filter, e->line);
        f->name = expect_name();
        f->kids.push_back(std::move(e));
        if (at_op("(")) parse_call_args(f.get());
        e = parse_postfix(std::move(f));
      } else if (at_name("is")) {
        ++i_;
        auto t = make(Expr::Test, e->line);
        if (at_name("not")) ++i_, t->negated = true;
        t->name = expect_name();
        t->kids.push_back(std::move(e));
        if (at_op("(")) {
          parse_call_args(t.get());
        } else if (peek().type == Token::Int || peek().type == Token::Float || peek().type == Token::String ||
                   (peek().type == Token::Name && peek().s != "and" && peek().s != "or" && peek().s != "if" &&
                    peek().s != "else" && peek().s != "in" && peek().s != "not" && peek().s != "is")) {
          t->kids.push_back(parse_unary(false));  // `x is divisibleby 3`, `x is sameas none`
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
  const std::string& where_;
};

}  // namespace

std::unique_ptr<Node> parse_template(const std::string& source, const std::string& where) {
  Lexer lexer(source, where);
  Parser parser(lexer.run(), where);
  return parser.parse_all();
}

}  // namespace braid::jinja
