// Weight storage formats: conversion of one row between f32 and F32 / BF16 / F16 / Q8_0 /
// Q4_0. The kernels that compute with these rows live in ops/cpu/wdot.hpp.
//
// Block formats (a row of cols values, cols a multiple of kQuantBlock = 32, as nb blocks):
//   the row starts with nb f16 scales d_b, followed by the blocks' codes;
//   Q8_0: 32 int8 codes q per block, value = d_b * q, q in [-127, 127];
//   Q4_0: 16 bytes per block; byte j holds element j in its low nibble and element j + 16 in
//         its high nibble, each as q + 8, value = d_b * q, q in [-8, 7]. The blocks' bytes are
//         stored in groups of kQ4Group blocks (a row's last group holds the m = nb % 16 left
//         over, where that is not 0), each block as four 4-byte words (word k: its bytes
//         4k .. 4k + 3), word k of block j of a group at word k * m + j of the group (m its
//         blocks): one 64-byte load of a whole group holds the same word of 16 blocks, the
//         shape the integer kernels sum in (ops/cpu/wdot_avx512.cpp). A row of one block is
//         its 16 bytes in order.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/dtype.hpp"

namespace braid {

constexpr int64_t kQuantBlock = 32;
constexpr int64_t kQ4Group = 16;

// Q4_0: the byte offset, from the start of a row's codes (nb blocks), of word k of block b.
inline int64_t q4_word_at(int64_t nb, int64_t b, int k) {
  const int64_t g = b / kQ4Group, m = std::min(kQ4Group, nb - g * kQ4Group);
  return g * kQ4Group * 16 + 4 * (k * m + b % kQ4Group);
}
// Q4_0: block b's 16 bytes, in order, from a row's codes.
inline void q4_block_bytes(const uint8_t* codes, int64_t nb, int64_t b, uint8_t* out) {
  for (int k = 0; k < 4; ++k) std::memcpy(out + 4 * k, codes + q4_word_at(nb, b, k), 4);
}

// Q4_0: a row of n values whose blocks' 16 bytes lie one block after another (the layout of
// files written before the grouped one, core/quant.hpp) rewritten in the grouped layout.
void q4_row_from_blocks_in_order(const uint8_t* in, int64_t n, uint8_t* out);

// Whether a [rows, cols] matrix can be stored as `t` (block formats need cols % 32 == 0).
bool storable_as(DType t, int64_t cols);
// Writes row_bytes(t, n) bytes. Throws naming the problem for a non-finite value or one too
// large for the format's f16 scale.
void quantize_row(DType t, const float* x, int64_t n, void* out);
// Reads row_bytes(t, n) bytes back as n floats (exactly the values the kernels use).
void dequantize_row(DType t, const void* row, int64_t n, float* out);

}  // namespace braid
