// The per-path kernel tables behind wdot.hpp (one translation unit per instruction set).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.hpp"
#include "core/quant.hpp"

namespace braid::ops::wdot {

using DotFn = float (*)(const uint8_t* row, const float* x, int64_t cols);
using DequantFn = void (*)(const uint8_t* row, int64_t cols, float* out);

enum Format { kBF16, kF16, kQ8_0, kQ4_0, kFormats };

// Four rows (row stride `stride` bytes) against one x: out[i] exactly as dot gives row i.
using Dot4Fn = void (*)(const uint8_t* rows, size_t stride, const float* x, int64_t cols, float* out);

// Activations quantized to 8-bit blocks (wdot.hpp's int8 activations): per block of 32 values
// the codes q and the f32 scale d. Paths whose kernels multiply unsigned by signed bytes
// (VNNI, and AVX2's Q4_0) also take one int32 correction per block, -k * (the sum of its
// codes), that makes the products signed again (k = 128 for Q8_0 codes stored as q + 128,
// 8 for Q4_0 nibbles).
// A path may order the codes of each group of kBlockGroup blocks as its kernels read them
// (grouped_code_at), padding the last group to kActivationGroup codes; the scales and
// corrections are always in block order.
enum QFormat { kQ8, kQ4, kQFormats };
constexpr int64_t kActivationGroup = kBlockGroup * kQuantBlock;  // 512 codes
// The codes an input of n values may take (n rounded up to whole groups).
inline int64_t activation_codes(int64_t n) {
  return (n + kActivationGroup - 1) / kActivationGroup * kActivationGroup;
}
// The grouped order: per group, eight vectors of 64 codes; lane j (4 codes) of vector 2k holds
// block j's elements 4k .. 4k + 3, of vector 2k + 1 its elements 16 + 4k .. 16 + 4k + 3 (the
// order of both formats' grouped weight words, core/quant.hpp). Where element e of block b is.
inline int64_t grouped_code_at(int64_t b, int e) {
  const int64_t vector = 2 * ((e % 16) / 4) + e / 16;
  return b / kBlockGroup * kActivationGroup + 64 * vector + 4 * (b % kBlockGroup) + e % 4;
}
// Block b's 32 codes (in element order) put at their places in the grouped order of q.
inline void put_grouped_block(const int8_t* codes, int64_t b, int8_t* q) {
  for (int e = 0; e < kQuantBlock; e += 4) std::memcpy(q + grouped_code_at(b, e), codes + e, 4);
}
struct QBlocks {
  const int8_t* q;
  const float* d;
  const int32_t* corr;  // null where the path does not use it
};
using QuantizeFn = void (*)(const float* x, int64_t n, int fmt, int8_t* q, float* d, int32_t* corr);
using DotQFn = float (*)(const uint8_t* row, const QBlocks& x, int64_t n);
using Dot4QFn = void (*)(const uint8_t* rows, size_t stride, const QBlocks& x, int64_t n, float* out);
// `count` rows one after another (one input): out[i] exactly as dot gives row i.
using RowsFn = void (*)(const uint8_t* rows, size_t stride, const float* x, int64_t cols, int64_t count,
                        float* out);
// `count` rows one after another: out[i] exactly as dotq gives row i.
using RowsQFn = void (*)(const uint8_t* rows, size_t stride, const QBlocks& x, int64_t n, int64_t count,
                         float* out);

struct Kernels {
  DotFn dot[kFormats];
  Dot4Fn dot4[kFormats];  // null where the path has none (then rows go one at a time)
  DequantFn dequant[kFormats];
  QuantizeFn quantize;  // activations to 8-bit blocks: identical codes and scales on every path
  bool corrections;     // whether `quantize` is to fill QBlocks::corr
  bool grouped;         // whether `quantize` lays the codes out in the grouped order
  DotQFn dotq[kQFormats];
  Dot4QFn dot4q[kQFormats];    // null where the path has none
  RowsQFn rowsq[kQFormats];    // null where the path has none
  RowsFn rows[kFormats] = {};  // null where the path has none (then rows go one at a time)
};

// The scale of an activation block and its inverse from the block's largest magnitude, the
// same arithmetic on every path (a block holding a non-finite value gets a NaN scale and
// zero codes, so its products are NaN as they would be in f32).
inline void activation_scale(float amax, bool finite, float* d, float* inv) {
  if (!finite) {
    *d = __builtin_nanf(""), *inv = 0.0f;
    return;
  }
  *d = amax / 127.0f;
  *inv = amax > 0.0f ? 1.0f / *d : 0.0f;
}

// The scalar quantizer: codes round-to-nearest-even of x / d, in block order.
void quantize_activations_scalar(const float* x, int64_t n, int fmt, int8_t* q, float* d, int32_t* corr);
// The AVX2 path's: the scalar quantizer's codes in the grouped order.
void quantize_grouped(const float* x, int64_t n, int fmt, int8_t* q, float* d, int32_t* corr);

Kernels scalar_kernels();
Kernels avx2_kernels();
Kernels avx512_kernels();

}  // namespace braid::ops::wdot
