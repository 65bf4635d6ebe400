// JSON helpers: reading files with one-line errors, and typed field access that names
// the file and field when something is missing or has the wrong type.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace braid {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;  // objects keep their keys' order

// Parses a JSON file; throws braid::Error "PATH: ..." when unreadable or malformed.
json read_json_file(const std::string& path);
// Parses JSON text; `what` names the source in errors.
json parse_json(const std::string& text, const std::string& what);
// Writes JSON atomically (temp file + rename).
void write_json_file(const std::string& path, const json& j);

// Typed view of one JSON object. `where` names it in errors, e.g. "config.json".
class JsonObject {
 public:
  JsonObject(const json& j, std::string where);
  const json& raw() const { return j_; }
  const std::string& where() const { return where_; }
  // Present and not null.
  bool has(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t dflt) const;
  // An integer >= 1 (a count, a size, a period): anything else is an error naming the field.
  int64_t get_positive_int(const std::string& key) const;
  int64_t get_positive_int(const std::string& key, int64_t dflt) const;
  // Accepts numbers and the {"__float__": "Infinity"} spelling some files use.
  double get_float(const std::string& key) const;
  double get_float(const std::string& key, double dflt) const;
  bool get_bool(const std::string& key, bool dflt) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& dflt) const;
  JsonObject get_object(const std::string& key) const;
  std::vector<std::string> get_string_list(const std::string& key) const;

 private:
  const json& field(const std::string& key) const;
  const json& j_;
  std::string where_;
};

// A number from JSON, also accepting {"__float__": "Infinity" | "-Infinity" | "NaN"}.
// Throws naming `what` when the value is neither.
double json_to_double(const json& v, const std::string& what);

}  // namespace braid
