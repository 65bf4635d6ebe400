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
// Projection matrices stored as BF16 / F16 stay so unless keep_16bit is false (then every
// 16-bit tensor is widened to f32, as training and gradient checks need).
std::unique_ptr<Model> load_model(const std::string& dir, bool keep_16bit = true);

// Tensors named "<prefix><checkpoint name>" in the safetensors `file`, one per parameter
// of the model in DIR, under canonical names and sliced as the weights are (for
// gradient files such as grads.safetensors, prefix "grad.").
Weights load_param_tensors(const std::string& dir, const std::string& file, const std::string& prefix);

}  // namespace braid
