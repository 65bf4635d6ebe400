// The grouped code layout of Q8_0 and Q4_0 rows (core/quant.hpp) put back in block order, for
// the kernels that read a block's codes together (f32 activations, dequantization), and a
// block's bytes as its signed codes.
// Compiled for AVX2 inside the functions that include it (the AVX2 and AVX-512 kernels).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "core/quant.hpp"

namespace braid::ops::wdot {

#define BRAID_GROUPS_AVX2 __attribute__((target("avx2")))

// Codes of a Q4_0 block (its 16 bytes in order) as signed bytes: elements 0..15 and 16..31.
BRAID_GROUPS_AVX2 inline void q4_codes(__m128i v, __m128i* lo, __m128i* hi) {
  const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
  *lo = _mm_sub_epi8(_mm_and_si128(v, m), eight);
  *hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m), eight);
}
// Sixteen Q8_0 code bytes (q + 128) as signed codes q.
BRAID_GROUPS_AVX2 inline __m128i q8_codes16(__m128i v) { return _mm_xor_si128(v, _mm_set1_epi8(char(0x80))); }

// Four words of eight blocks each (word k of the eight at first + k * step, block i's at
// 4i) as four vectors of two blocks' four words in order each: blocks (0 | 4), (1 | 5),
// (2 | 6), (3 | 7). A 4 x 4 transpose of words in each 128-bit half.
BRAID_GROUPS_AVX2 inline void words8(const uint8_t* first, int64_t step, __m256i* out) {
  __m256i w[4];
  for (int k = 0; k < 4; ++k) w[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(first + k * step));
  const __m256i t0 = _mm256_unpacklo_epi32(w[0], w[1]), t1 = _mm256_unpackhi_epi32(w[0], w[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(w[2], w[3]), t3 = _mm256_unpackhi_epi32(w[2], w[3]);
  out[0] = _mm256_unpacklo_epi64(t0, t2), out[1] = _mm256_unpackhi_epi64(t0, t2);
  out[2] = _mm256_unpacklo_epi64(t1, t3), out[3] = _mm256_unpackhi_epi64(t1, t3);
}

// Blocks j0 .. j0 + 7 of a group of m blocks (group: its first code byte) in block order:
// Q4_0: out[p] holds the 16 bytes of blocks (j0 + p | j0 + p + 4);
// Q8_0: lo[p] the code bytes of elements 0 .. 15 of those blocks, hi[p] elements 16 .. 31.
BRAID_GROUPS_AVX2 inline void q4_bytes8(const uint8_t* group, int64_t m, int64_t j0, __m256i* out) {
  words8(group + 4 * j0, 4 * m, out);
}
BRAID_GROUPS_AVX2 inline void q8_bytes8(const uint8_t* group, int64_t m, int64_t j0, __m256i* lo,
                                        __m256i* hi) {
  words8(group + 4 * j0, 8 * m, lo);        // words 0, 2, 4, 6
  words8(group + 4 * (m + j0), 8 * m, hi);  // words 1, 3, 5, 7
}

// Group g of a row's codes (nb blocks) in block order, eight blocks at a time where the group
// has them, the rest one by one: Q4_0 as each block's 16 bytes (out: 256 bytes), Q8_0 as
// each block's 32 signed codes (out: 512 bytes).
BRAID_GROUPS_AVX2 inline void q4_group_in_order(const uint8_t* codes, int64_t nb, int64_t g, uint8_t* out) {
  const int64_t b0 = g * kBlockGroup, m = std::min(kBlockGroup, nb - b0);
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
BRAID_GROUPS_AVX2 inline void q8_group_in_order(const uint8_t* codes, int64_t nb, int64_t g, int8_t* out) {
  const int64_t b0 = g * kBlockGroup, m = std::min(kBlockGroup, nb - b0);
  int64_t j = 0;
  auto put = [&](int64_t block, __m128i lo, __m128i hi) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32 * block), q8_codes16(lo));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32 * block + 16), q8_codes16(hi));
  };
  for (; j + 8 <= m; j += 8) {
    __m256i lo[4], hi[4];
    q8_bytes8(codes + b0 * 32, m, j, lo, hi);
    for (int p = 0; p < 4; ++p) {
      put(j + p, _mm256_castsi256_si128(lo[p]), _mm256_castsi256_si128(hi[p]));
      put(j + p + 4, _mm256_extracti128_si256(lo[p], 1), _mm256_extracti128_si256(hi[p], 1));
    }
  }
  for (; j < m; ++j) q8_block_codes(codes, nb, b0 + j, out + 32 * j);
}

#undef BRAID_GROUPS_AVX2

}  // namespace braid::ops::wdot
