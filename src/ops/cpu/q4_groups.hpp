// Q4_0's grouped code layout (core/quant.hpp) put back in block order, for the kernels that
// read a block's 16 bytes together (f32 activations, dequantization, AVX2's integer products),
// and a block's bytes as its signed codes.
// Compiled for AVX2 inside the functions that include it (the AVX2 and AVX-512 kernels).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "core/quant.hpp"

namespace braid::ops::wdot {

#define BRAID_Q4_AVX2 __attribute__((target("avx2")))

// Codes of a Q4_0 block (its 16 bytes in order) as signed bytes: elements 0..15 and 16..31.
BRAID_Q4_AVX2 inline void q4_codes(__m128i v, __m128i* lo, __m128i* hi) {
  const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
  *lo = _mm_sub_epi8(_mm_and_si128(v, m), eight);
  *hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m), eight);
}

// Blocks j0 .. j0 + 7 of a Q4_0 group of m blocks (word k of block j at word k * m + j) as four
// vectors of two blocks' 16 bytes in order each: (j0 | j0 + 4), (j0 + 1 | j0 + 5),
// (j0 + 2 | j0 + 6), (j0 + 3 | j0 + 7). The four loads hold word k of the eight blocks; a 4 x 4
// transpose of words in each 128-bit half puts each block's together.
BRAID_Q4_AVX2 inline void q4_bytes8(const uint8_t* group, int64_t m, int64_t j0, __m256i* out) {
  __m256i w[4];
  for (int k = 0; k < 4; ++k)
    w[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + 4 * (k * m + j0)));
  const __m256i t0 = _mm256_unpacklo_epi32(w[0], w[1]), t1 = _mm256_unpackhi_epi32(w[0], w[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(w[2], w[3]), t3 = _mm256_unpackhi_epi32(w[2], w[3]);
  out[0] = _mm256_unpacklo_epi64(t0, t2), out[1] = _mm256_unpackhi_epi64(t0, t2);
  out[2] = _mm256_unpacklo_epi64(t1, t3), out[3] = _mm256_unpackhi_epi64(t1, t3);
}

// Q4_0 group g of a row's codes (nb blocks) as its blocks' bytes in order, 16 per block, into
// out (256 bytes): eight blocks at a time where the group has them, the rest one by one.
BRAID_Q4_AVX2 inline void q4_group_in_order(const uint8_t* codes, int64_t nb, int64_t g, uint8_t* out) {
  const int64_t b0 = g * kQ4Group, m = std::min(kQ4Group, nb - b0);
  int64_t j = 0;
  for (; j + 8 <= m; j += 8) {
    __m256i v[4];
    q4_bytes8(codes + b0 * 16, m, j, v);
    for (int p = 0; p < 4; ++p) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * (j + p)), _mm256_castsi256_si128(v[p]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * (j + p + 4)), _mm256_extracti128_si256(v[p], 1));
    }
  }
  for (; j < m; ++j) q4_block_bytes(codes, nb, b0 + j, out + 16 * j);
}

#undef BRAID_Q4_AVX2

}  // namespace braid::ops::wdot
