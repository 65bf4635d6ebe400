// The syntax tree of a parsed Jinja template (internal to jinja_parse.cpp and
// jinja_render.cpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/jinja.hpp"

namespace braid::jinja {

struct Expr {
  enum Kind {
    Literal,   // value
    Name,      // name
    Attr,      // kids[0].name
    Item,      // kids[0][kids[1]]
    Slice,     // kids[0][kids[1]:kids[2]:kids[3]] (null kids are absent bounds)
    Call,      // kids[0](kids[1..], keywords)
    Filter,    // kids[0] | name(kids[1..], keywords)
    Test,      // kids[0] is [not] name(kids[1..])
    Unary,     // op kids[0]: "not", "-", "+"
    Binary,    // kids[0] op kids[1]: arithmetic, "~", "and", "or"
    Compare,   // kids[0] ops[0] kids[1] ops[1] kids[2] ...
    Cond,      // kids[1] if kids[0] else kids[2] (kids[2] may be null)
    ListLit,   // [kids...]
    TupleLit,  // (kids...)
    DictLit,   // {kids[0]: kids[1], ...}
  };
  Kind kind;
  int line = 0;
  std::string name;              // Name, Attr, Call/Filter/Test name, Unary / Binary op
  std::vector<std::string> ops;  // Compare
  Value value;                   // Literal
  bool negated = false;          // Test
  std::vector<std::unique_ptr<Expr>> kids;
  std::vector<std::string> keywords;  // Call / Filter: names of the last keywords.size() kids
};

struct Node {
  enum Kind {
    Block,   // children in order
    Text,    // text
    Output,  // {{ expr }}
    If,      // conds[i] -> bodies[i]; bodies.back() is the else branch when size > conds
    For,     // for targets in exprs[0] [if exprs[1]]: bodies[0], else bodies[1]
    Set,     // targets (name or "ns.attr", or several names) = exprs[0]; or = bodies[0] rendered
    Macro,   // name(params with defaults in exprs): bodies[0]
    Break,
    Continue,
  };
  Kind kind;
  int line = 0;
  std::string text;                           // Text; Macro name
  std::vector<std::string> targets;           // For / Set targets; Macro parameters
  std::vector<std::unique_ptr<Expr>> exprs;   // Output: [expr]; If: conditions; For: [iter, filter]; Set:
                                              // [value]; Macro: defaults (null: none)
  std::vector<std::unique_ptr<Node>> bodies;  // If / For / Set / Macro bodies; Block children
};

std::unique_ptr<Node> parse_template(const std::string& source, const std::string& where);

}  // namespace braid::jinja
