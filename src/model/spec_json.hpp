// braid's own model format: a config.json with "model_type": "braid" that holds a
// ModelSpec (docs/training.md documents the fields), next to canonical-name weights.
#pragma once
#include "io/json.hpp"
#include "model/spec.hpp"

namespace braid {

// Reads a spec file or a braid config.json; `where` names it in errors.
ModelSpec spec_from_json(const json& j, const std::string& where);
// Writes the fully expanded form (one entry per layer), which spec_from_json reads back.
json spec_to_json(const ModelSpec& spec);
// Every field of any spec, including those the format cannot express yet (what a
// fingerprint hashes); not for reading back.
json spec_description(const ModelSpec& spec);

}  // namespace braid
