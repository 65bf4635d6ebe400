// Loading a model directory: config.json (a Hugging Face family or braid's own format)
// plus safetensors weights (single or sharded).
#pragma once
#include <memory>
#include <string>

#include "model/model.hpp"

namespace braid {

// Reads DIR/config.json and maps it to a ModelSpec without loading weights.
ModelSpec load_spec(const std::string& dir);
// Loads spec and weights; every problem is a braid::Error naming the file and field.
std::unique_ptr<Model> load_model(const std::string& dir);

}  // namespace braid
