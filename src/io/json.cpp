#include "io/json.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.hpp"
#include "io/text_file.hpp"

namespace braid {

json parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // malformed, or a number beyond double's range
    std::string m = e.what();
    // nlohmann messages look like "[json.exception.parse_error.101] parse error at line 1, ..."
    auto p = m.find("] ");
    fail(what, ": invalid JSON: ", p == std::string::npos ? m : m.substr(p + 2));
  }
}

json read_json_file(const std::string& path) { return parse_json(read_text_file(path), path); }

void write_json_file(const std::string& path, const json& j) { write_text_file(path, j.dump(2) + "\n"); }

static const char* type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

double json_to_double(const json& v, const std::string& what) {
  if (v.is_number()) return v.get<double>();
  if (v.is_object() && v.size() == 1 && v.contains("__float__") && v["__float__"].is_string()) {
    std::string s = v["__float__"].get<std::string>();
    if (s == "Infinity" || s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity" || s == "-inf") return -std::numeric_limits<double>::infinity();
    if (s == "NaN" || s == "nan") return std::numeric_limits<double>::quiet_NaN();
    fail(what, ": unknown __float__ value \"", s, "\"");
  }
  fail(what, ": expected a number, found ", type_name(v));
}

JsonObject::JsonObject(const json& j, std::string where) : j_(j), where_(std::move(where)) {
  check(j_.is_object(), where_, ": expected a JSON object, found ", type_name(j_));
}

bool JsonObject::has(const std::string& key) const {
  auto it = j_.find(key);
  return it != j_.end() && !it->is_null();
}

const json& JsonObject::field(const std::string& key) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) fail(where_, ": field '", key, "' is missing");
  return *it;
}

// Integers in these files are sizes, counts, ids and periods: they must fit in 32 bits, so
// that products of two of them (a matrix's element count) cannot overflow.
constexpr int64_t kMaxJsonInt = (int64_t(1) << 31) - 1;

int64_t JsonObject::get_int(const std::string& key) const {
  const json& v = field(key);
  bool integral = false;
  double d = 0;
  if (v.is_number_integer() || v.is_number_unsigned()) {
    integral = true;
    d = v.is_number_unsigned() ? double(v.get<uint64_t>()) : double(v.get<int64_t>());
  } else if (v.is_number_float()) {
    d = v.get<double>();
    integral = std::floor(d) == d;
  }
  if (!integral) fail(where_, ": field '", key, "' should be an integer, found ", type_name(v));
  if (std::abs(d) > double(kMaxJsonInt))
    fail(where_, ": field '", key, "' = ", v.dump(), " is out of range (at most 2^31 - 1 in magnitude)");
  return int64_t(d);
}

int64_t JsonObject::get_int(const std::string& key, int64_t dflt) const {
  return has(key) ? get_int(key) : dflt;
}

int64_t JsonObject::get_positive_int(const std::string& key) const {
  const int64_t v = get_int(key);
  if (v < 1) fail(where_, ": field '", key, "' should be a positive integer, found ", v);
  return v;
}

int64_t JsonObject::get_positive_int(const std::string& key, int64_t dflt) const {
  return has(key) ? get_positive_int(key) : dflt;
}

double JsonObject::get_float(const std::string& key) const {
  return json_to_double(field(key), where_ + ": field '" + key + "'");
}

double JsonObject::get_float(const std::string& key, double dflt) const {
  return has(key) ? get_float(key) : dflt;
}

bool JsonObject::get_bool(const std::string& key, bool dflt) const {
  if (!has(key)) return dflt;
  const json& v = field(key);
  check(v.is_boolean(), where_, ": field '", key, "' should be a boolean, found ", type_name(v));
  return v.get<bool>();
}

std::string JsonObject::get_string(const std::string& key) const {
  const json& v = field(key);
  check(v.is_string(), where_, ": field '", key, "' should be a string, found ", type_name(v));
  return v.get<std::string>();
}

std::string JsonObject::get_string(const std::string& key, const std::string& dflt) const {
  return has(key) ? get_string(key) : dflt;
}

JsonObject JsonObject::get_object(const std::string& key) const {
  const json& v = field(key);
  check(v.is_object(), where_, ": field '", key, "' should be an object, found ", type_name(v));
  return JsonObject(v, where_ + ": " + key);
}

std::vector<std::string> JsonObject::get_string_list(const std::string& key) const {
  const json& v = field(key);
  check(v.is_array(), where_, ": field '", key, "' should be an array, found ", type_name(v));
  std::vector<std::string> out;
  for (const auto& e : v) {
    check(e.is_string(), where_, ": field '", key, "' should hold strings, found ", type_name(e));
    out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace braid
