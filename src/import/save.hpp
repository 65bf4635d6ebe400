// Writing a model directory in braid's own format: config.json (the spec) and
// model.safetensors with canonical parameter names.
#pragma once
#include <string>

#include "model/model.hpp"

namespace braid {

// Creates `dir` if needed; every file is written atomically (temp + rename).
void save_model(const std::string& dir, const ModelSpec& spec, const Weights& weights);

}  // namespace braid
