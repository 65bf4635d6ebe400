// Weight storage formats: conversion of one row between f32 and F32 / BF16 / F16 / Q8_0 /
// Q4_0. The kernels that compute with these rows live in ops/cpu/wdot.hpp.
//
// Block formats (a row of cols values, cols a multiple of kQuantBlock = 32, as nb blocks):
//   the row starts with nb f16 scales d_b, followed by the blocks' codes;
//   Q8_0: 32 int8 codes q per block, value = d_b * q, q in [-127, 127];
//   Q4_0: 16 bytes per block; byte j holds element j in its low nibble and element j + 16 in
//         its high nibble, each as q + 8, value = d_b * q, q in [-8, 7].
#pragma once
#include <cstdint>

#include "core/dtype.hpp"

namespace braid {

constexpr int64_t kQuantBlock = 32;

// Whether a [rows, cols] matrix can be stored as `t` (block formats need cols % 32 == 0).
bool storable_as(DType t, int64_t cols);
// Writes row_bytes(t, n) bytes. Throws naming the problem for a non-finite value or one too
// large for the format's f16 scale.
void quantize_row(DType t, const float* x, int64_t n, void* out);
// Reads row_bytes(t, n) bytes back as n floats (exactly the values the kernels use).
void dequantize_row(DType t, const void* row, int64_t n, float* out);

}  // namespace braid
