// Element types and scalar conversions (bf16 / f16 <-> f32).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace braid {

// Q8_0 and Q4_0 are braid's block-quantized weight formats (core/quant.hpp): a tensor of
// shape [rows, cols] stores each row as cols / 32 blocks of 32 values with a scale per block.
enum class DType : uint8_t { F32, F16, BF16, I32, I64, U8, Q8_0, Q4_0 };

// Bytes per element; 0 for the block formats, whose size is per row (row_bytes).
size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: "F32", "BF16", ...; "Q8_0", "Q4_0"
bool is_block_quantized(DType t);
// Bytes of one row of `cols` values (cols a multiple of kQuantBlock for the block formats).
size_t row_bytes(DType t, int64_t cols);
// Parses a safetensors dtype name; returns false for names braid does not handle.
bool parse_dtype(const std::string& name, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN stays NaN (as torch does).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace braid
