#include "import/quantize.hpp"

#include <omp.h>

#include <cctype>
#include <cstring>

#include "core/error.hpp"
#include "core/quant.hpp"

namespace braid {

DType parse_weight_format(const std::string& name) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0}) {
    std::string lower = dtype_name(t);  // "Q8_0" -> "q8_0"
    for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (name == lower) return t;
  }
  fail("unknown weight format '", name, "' (expected f32, bf16, f16, q8_0 or q4_0)");
}

QuantizedWeights quantize_weights(const Model& model, DType format) {
  check(storable_as(format, 0), "cannot store weights as ", dtype_name(format));
  QuantizedWeights q;
  for (const auto& [name, t] : model.weights()) {
    q.bytes_before += t.nbytes();
    const Tensor f = t.to_f32();
    const bool matrix = model.matrix_params().count(name) != 0;
    if (!matrix || format == DType::F32) {
      if (t.dtype() != DType::F32) {
        q.weights[name] = f;  // to_f32 made a copy already
      } else {                // an owned copy, so the source model's file can be released once it is gone
        Tensor c = Tensor::zeros(DType::F32, f.shape());
        std::memcpy(c.raw_mut(), f.raw(), f.nbytes());
        q.weights[name] = std::move(c);
      }
    } else {
      // A matrix whose rows are not whole 32-value blocks falls back to F16.
      const DType as = storable_as(format, t.dim(1)) ? format : DType::F16;
      if (as != format) q.fallback.push_back(name);
      Tensor out = Tensor::zeros(as, t.shape());
      const int64_t rows = t.dim(0), cols = t.dim(1);
      const size_t rb = row_bytes(as, cols);
      const float* src = f.f32();
      uint8_t* dst = out.data_mut<uint8_t>();
      std::string problem;
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        try {
          quantize_row(as, src + r * cols, cols, dst + size_t(r) * rb);
        } catch (const Error& e) {
#pragma omp critical
          if (problem.empty()) problem = std::string(e.what()) + " (row " + std::to_string(r) + ")";
        }
      }
      check(problem.empty(), name, ": ", problem);
      q.weights[name] = std::move(out);
      ++q.matrices;
    }
    q.bytes_after += q.weights[name].nbytes();
  }
  return q;
}

}  // namespace braid
