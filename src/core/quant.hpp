// Weight storage formats: conversion of one row between f32 and F32 / BF16 / F16 / Q8_0 /
// Q4_0. The kernels that compute with these rows live in ops/cpu/wdot.hpp.
//
// Block formats (a row of cols values, cols a multiple of kQuantBlock = 32, as nb blocks):
//   the row starts with nb f16 scales d_b, followed by the blocks' codes, in groups of
//   kBlockGroup blocks (a row's last group holds the m = nb % 16 left over, where that is not
//   0). A block's codes are stored as 4-byte words, word s of block j of a group (m blocks)
//   at word s * m + j of the group: one 64-byte load of a whole group holds the same word of
//   16 blocks, the shape the integer kernels sum in (ops/cpu/wdot_avx512.cpp).
//   Q8_0: value = d_b * q, q in [-127, 127] stored as the byte q + 128. Eight words per block
//         (32 bytes); word s holds elements 4k .. 4k + 3 with k = s / 2 + 4 * (s % 2): words
//         0, 2, 4, 6 hold elements 0 .. 15, words 1, 3, 5, 7 elements 16 .. 31, in the order
//         of the Q4_0 nibbles below, so both formats multiply one layout of activations.
//   Q4_0: value = d_b * q, q in [-8, 7]. Four words per block (16 bytes): byte i of the
//         block (word i / 4) holds element i in its low nibble and element i + 16 in its high
//         nibble, each as q + 8.
//   A row of one block is its words in order.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/dtype.hpp"

namespace braid {

constexpr int64_t kQuantBlock = 32;
constexpr int64_t kBlockGroup = 16;

// The byte offset, from the start of a row's codes (nb blocks of `block_bytes`), of word s of
// block b.
inline int64_t block_word_at(int64_t nb, int64_t block_bytes, int64_t b, int s) {
  const int64_t g = b / kBlockGroup, m = std::min(kBlockGroup, nb - g * kBlockGroup);
  return g * kBlockGroup * block_bytes + 4 * (s * m + b % kBlockGroup);
}
// Q4_0: the byte offset of word k (bytes 4k .. 4k + 3) of block b.
inline int64_t q4_word_at(int64_t nb, int64_t b, int k) { return block_word_at(nb, 16, b, k); }
// Q4_0: block b's 16 bytes, in order, from a row's codes.
inline void q4_block_bytes(const uint8_t* codes, int64_t nb, int64_t b, uint8_t* out) {
  for (int k = 0; k < 4; ++k) std::memcpy(out + 4 * k, codes + q4_word_at(nb, b, k), 4);
}
// Q8_0: the word of a block that holds elements 4k .. 4k + 3.
constexpr int q8_word_of(int k) { return k < 4 ? 2 * k : 2 * (k - 4) + 1; }
// Q8_0: block b's 32 codes q, in element order, from a row's codes.
inline void q8_block_codes(const uint8_t* codes, int64_t nb, int64_t b, int8_t* out) {
  for (int k = 0; k < 8; ++k) {
    const uint8_t* w = codes + block_word_at(nb, 32, b, q8_word_of(k));
    for (int i = 0; i < 4; ++i) out[4 * k + i] = int8_t(int(w[i]) - 128);
  }
}

// A row of n values in the layout of files written before the grouped one: each block's
// bytes one block after another (Q4_0 bytes as above; Q8_0 codes as signed bytes q),
// rewritten in the grouped layout.
void q4_row_from_blocks_in_order(const uint8_t* in, int64_t n, uint8_t* out);
void q8_row_from_blocks_in_order(const uint8_t* in, int64_t n, uint8_t* out);

// Whether a [rows, cols] matrix can be stored as `t` (block formats need cols % 32 == 0).
bool storable_as(DType t, int64_t cols);
// Writes row_bytes(t, n) bytes. Throws naming the problem for a non-finite value or one too
// large for the format's f16 scale.
void quantize_row(DType t, const float* x, int64_t n, void* out);
// Reads row_bytes(t, n) bytes back as n floats (exactly the values the kernels use).
void dequantize_row(DType t, const void* row, int64_t n, float* out);

}  // namespace braid
