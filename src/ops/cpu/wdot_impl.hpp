// The per-path kernel tables behind wdot.hpp (one translation unit per instruction set).
#pragma once
#include <cstdint>

#include "core/dtype.hpp"

namespace braid::ops::wdot {

using DotFn = float (*)(const uint8_t* row, const float* x, int64_t cols);
using DequantFn = void (*)(const uint8_t* row, int64_t cols, float* out);

enum Format { kBF16, kF16, kQ8_0, kQ4_0, kFormats };

// Four rows (row stride `stride` bytes) against one x: out[i] exactly as dot gives row i.
using Dot4Fn = void (*)(const uint8_t* rows, size_t stride, const float* x, int64_t cols, float* out);

struct Kernels {
  DotFn dot[kFormats];
  Dot4Fn dot4[kFormats];  // null where the path has none (then rows go one at a time)
  DequantFn dequant[kFormats];
};

Kernels scalar_kernels();
Kernels avx2_kernels();
Kernels avx512_kernels();

}  // namespace braid::ops::wdot
