// Converting a model's weights to a compact storage format (braid quantize).
#pragma once
#include <string>
#include <vector>

#include "model/model.hpp"

namespace braid {

struct QuantizedWeights {
  Weights weights;
  int64_t matrices = 0;               // converted (to the format, or to the fallback)
  std::vector<std::string> fallback;  // stored as F16: rows not whole blocks of a block format
  size_t bytes_before = 0, bytes_after = 0;
};

// The model's weights with every matrix that only linear() reads (Model::matrix_params)
// stored as `format` (F32, BF16, F16, Q8_0 or Q4_0; a block format's matrices whose rows are
// not whole 32-value blocks as F16), and every other parameter as f32.
QuantizedWeights quantize_weights(const Model& model, DType format);

// Parses a format name as the command line spells it: f32, bf16, f16, q8_0, q4_0.
DType parse_weight_format(const std::string& name);

}  // namespace braid
