// Jinja values: conversion from JSON, truthiness, and Python's str() / repr() /
// json.dumps() spellings, which chat templates print.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.hpp"
#include "tokenizer/jinja.hpp"

namespace braid::jinja {

const Value* Dict::find(const std::string& key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

void Dict::set(const std::string& key, Value v) {
  for (auto& [k, old] : entries)
    if (k == key) {
      old = std::move(v);
      return;
    }
  entries.emplace_back(key, std::move(v));
}

Value Value::from_json(const ordered_json& j) {
  switch (j.type()) {
    case ordered_json::value_t::null:
      return Value(nullptr);
    case ordered_json::value_t::boolean:
      return Value(j.get<bool>());
    case ordered_json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      return u <= uint64_t(INT64_MAX) ? Value(int64_t(u)) : Value(double(u));
    }
    case ordered_json::value_t::number_float:
      return Value(j.get<double>());
    case ordered_json::value_t::string:
      return Value(j.get<std::string>());
    case ordered_json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(from_json(e));
      return Value(std::move(l));
    }
    case ordered_json::value_t::object: {
      Dict d;
      for (const auto& [k, e] : j.items()) d.entries.emplace_back(k, from_json(e));
      return Value(std::move(d));
    }
    default:
      fail("chat template: unsupported JSON value");
  }
}

bool Value::truthy() const {
  if (is_undefined() || is_none()) return false;
  if (is_bool()) return std::get<bool>(v);
  if (is_int()) return std::get<int64_t>(v) != 0;
  if (is_float()) return std::get<double>(v) != 0;
  if (is_string()) return !str().empty();
  if (is_list()) return !list().empty();
  if (is_dict()) return !dict().entries.empty();
  return true;
}

namespace {

// Python's repr(float): the shortest digits that round-trip, in fixed notation when the
// decimal exponent is in [-4, 16), else d.ddde+XX.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // [-]D[.DDD]e[+-]XX
  const size_t e = sci.find('e');
  const int exp10 = std::atoi(sci.c_str() + e + 1);
  const bool negative = sci[0] == '-';
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e; ++i)
    if (sci[i] != '.') digits.push_back(sci[i]);
  std::string out = negative ? "-" : "";
  if (exp10 >= -4 && exp10 < 16) {
    const size_t int_digits = size_t(std::max(exp10 + 1, 0));
    if (exp10 < 0) {
      out.append("0.").append(size_t(-exp10 - 1), '0').append(digits);
    } else if (int_digits >= digits.size()) {
      out.append(digits).append(int_digits - digits.size(), '0').append(".0");
    } else {
      out.append(digits, 0, int_digits).append(".").append(digits, int_digits);
    }
    return out;
  }
  out.append(digits, 0, 1);
  if (digits.size() > 1) out.append(".").append(digits, 1);
  char ex[16];
  std::snprintf(ex, sizeof ex, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
  return out.append(ex);
}

std::string string_repr(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (const unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == q) {
      out += '\\', out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += char(c);
    }
  }
  return out + q;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          out += b;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

void dump_json(const Value& x, int indent, bool sort_keys, int depth, std::string& out) {
  if (depth > 512) fail("chat template: tojson: value nested too deeply");
  const auto newline = [&](int level) {
    if (indent >= 0) out.append(1, '\n').append(size_t(indent * level), ' ');
  };
  const char* item_sep = indent >= 0 ? "," : ", ";
  if (x.is_undefined() || x.is_none()) {
    out += "null";
  } else if (x.is_bool()) {
    out += std::get<bool>(x.v) ? "true" : "false";
  } else if (x.is_int()) {
    out += std::to_string(std::get<int64_t>(x.v));
  } else if (x.is_float()) {
    const double d = std::get<double>(x.v);
    out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
  } else if (x.is_string()) {
    out += json_string(x.str());
  } else if (x.is_list()) {
    const List& l = x.list();
    if (l.empty()) {
      out += "[]";
      return;
    }
    out += "[";
    for (size_t i = 0; i < l.size(); ++i) {
      if (i) out += item_sep;
      newline(depth + 1);
      dump_json(l[i], indent, sort_keys, depth + 1, out);
    }
    newline(depth);
    out += "]";
  } else if (x.is_dict() || x.is_namespace()) {
    const Dict& d = x.is_dict() ? x.dict() : *std::get<Value::Namespace>(x.v).attrs;
    if (d.entries.empty()) {
      out += "{}";
      return;
    }
    std::vector<const std::pair<std::string, Value>*> order;
    for (const auto& e : d.entries) order.push_back(&e);
    if (sort_keys)
      std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->first < b->first; });
    out += "{";
    for (size_t i = 0; i < order.size(); ++i) {
      if (i) out += item_sep;
      newline(depth + 1);
      out += json_string(order[i]->first) + ": ";
      dump_json(order[i]->second, indent, sort_keys, depth + 1, out);
    }
    newline(depth);
    out += "}";
  } else {
    fail("chat template: tojson: a function is not JSON serializable");
  }
}

}  // namespace

std::string Value::repr() const {
  if (is_string()) return string_repr(str());
  if (is_float()) return float_repr(std::get<double>(v));
  if (is_list()) {
    std::string out = "[";
    for (size_t i = 0; i < list().size(); ++i) out += (i ? ", " : "") + list()[i].repr();
    return out + "]";
  }
  if (is_dict() || is_namespace()) {
    const Dict& d = is_dict() ? dict() : *std::get<Namespace>(v).attrs;
    std::string out = "{";
    for (size_t i = 0; i < d.entries.size(); ++i)
      out += (i ? ", " : "") + string_repr(d.entries[i].first) + ": " + d.entries[i].second.repr();
    return out + "}";
  }
  return to_string();
}

std::string Value::to_string() const {
  if (is_undefined()) return "";
  if (is_none()) return "None";
  if (is_bool()) return std::get<bool>(v) ? "True" : "False";
  if (is_int()) return std::to_string(std::get<int64_t>(v));
  if (is_float()) return float_repr(std::get<double>(v));
  if (is_string()) return str();
  if (is_callable()) return "<function>";
  return repr();
}

std::string Value::to_json(int indent, bool sort_keys) const {
  std::string out;
  dump_json(*this, indent, sort_keys, 0, out);
  return out;
}

Value Args::get(size_t i, const std::string& name, Value dflt) const {
  if (i < pos.size()) return pos[i];
  for (const auto& [k, v] : kw)
    if (k == name) return v;
  return dflt;
}

void Args::expect_at_most(size_t n) const {
  check(pos.size() + kw.size() <= n, "chat template: ", what, " takes at most ", n, " arguments, got ",
        pos.size() + kw.size());
}

}  // namespace braid::jinja
