// AVX2 + FMA + F16C kernels for compact weight formats (see wdot.hpp). Compiled for these
// instructions only inside the functions marked BRAID_AVX2; called only when the CPU has them.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/quant.hpp"
#include "ops/cpu/block_groups.hpp"
#include "ops/cpu/wdot_impl.hpp"

namespace braid::ops::wdot {

namespace {

#define BRAID_AVX2 __attribute__((target("avx2,fma,f16c")))

BRAID_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

BRAID_AVX2 inline float scale(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

BRAID_AVX2 inline __m256 bf16x8(const uint8_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

BRAID_AVX2 inline __m256 f16x8(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Eight signed bytes to floats.
BRAID_AVX2 inline __m256 i8x8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

// Four accumulators over 32 values per step, then 8 at a time, then a scalar tail.
template <__m256 (*Load)(const uint8_t*), float (*One)(uint16_t)>
BRAID_AVX2 inline float dot_half(const uint8_t* w, const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(Load(w + 2 * i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(Load(w + 2 * i + 16), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(Load(w + 2 * i + 32), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(Load(w + 2 * i + 48), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(Load(w + 2 * i), _mm256_loadu_ps(x + i), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, w + 2 * i, 2);
    s += One(h) * x[i];
  }
  return s;
}

float bf16_one(uint16_t h) { return bf16_to_f32(h); }
float f16_one(uint16_t h) { return f16_to_f32(h); }

BRAID_AVX2 float dot_bf16(const uint8_t* w, const float* x, int64_t n) {
  return dot_half<bf16x8, bf16_one>(w, x, n);
}
BRAID_AVX2 float dot_f16(const uint8_t* w, const float* x, int64_t n) {
  return dot_half<f16x8, f16_one>(w, x, n);
}

// A block's codes times x, unscaled: 32 products summed in 8 lanes.
BRAID_AVX2 inline __m256 q8_block(const uint8_t* q, const float* x) {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
  __m256 s = _mm256_mul_ps(i8x8(lo), _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(i8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(i8x8(hi), _mm256_loadu_ps(x + 16), s);
  return _mm256_fmadd_ps(i8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
}

// Block b's 16 bytes of Q4_0 codes, in order (its four words, core/quant.hpp).
BRAID_AVX2 inline __m128i q4_bytes(const uint8_t* codes, int64_t nb, int64_t b) {
  int32_t v[4];
  for (int k = 0; k < 4; ++k) std::memcpy(&v[k], codes + q4_word_at(nb, b, k), 4);
  return _mm_setr_epi32(v[0], v[1], v[2], v[3]);
}

BRAID_AVX2 inline __m256 q4_block(const uint8_t* q, const float* x) {
  __m128i lo, hi;
  q4_codes(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)), &lo, &hi);
  __m256 s = _mm256_mul_ps(i8x8(lo), _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(i8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(i8x8(hi), _mm256_loadu_ps(x + 16), s);
  return _mm256_fmadd_ps(i8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
}

// Group g of a row's codes in block order (Q4_0 bytes, Q8_0 signed codes; block_groups.hpp).
template <int64_t BlockBytes>
BRAID_AVX2 inline void group_in_order(const uint8_t* codes, int64_t nb, int64_t g, uint8_t* out) {
  if constexpr (BlockBytes == 16)
    q4_group_in_order(codes, nb, g, out);
  else
    q8_group_in_order(codes, nb, g, reinterpret_cast<int8_t*>(out));
}

// Scaled block sums alternate between two accumulators. Each group's codes are put in block
// order first.
template <__m256 (*Block)(const uint8_t*, const float*), int64_t BlockBytes>
BRAID_AVX2 inline float dot_blocks(const uint8_t* w, const float* x, int64_t n) {
  const int64_t nb = n / kQuantBlock;
  const uint8_t* q = w + 2 * nb;
  alignas(32) uint8_t ordered[kBlockGroup * BlockBytes];
  auto block = [&](int64_t b) {  // block b's codes in order (blocks are asked for in order)
    if ((b & 15) == 0) group_in_order<BlockBytes>(q, nb, b / 16, ordered);
    return static_cast<const uint8_t*>(ordered) + BlockBytes * (b & 15);
  };
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    a0 = _mm256_fmadd_ps(_mm256_set1_ps(scale(w + 2 * b)), Block(block(b), x + b * kQuantBlock), a0);
    a1 = _mm256_fmadd_ps(_mm256_set1_ps(scale(w + 2 * b + 2)), Block(block(b + 1), x + (b + 1) * kQuantBlock),
                         a1);
  }
  if (b < nb)
    a0 = _mm256_fmadd_ps(_mm256_set1_ps(scale(w + 2 * b)), Block(block(b), x + b * kQuantBlock), a0);
  return hsum(_mm256_add_ps(a0, a1));
}

BRAID_AVX2 float dot_q8(const uint8_t* w, const float* x, int64_t n) {
  return dot_blocks<q8_block, 32>(w, x, n);
}
BRAID_AVX2 float dot_q4(const uint8_t* w, const float* x, int64_t n) {
  return dot_blocks<q4_block, 16>(w, x, n);
}

BRAID_AVX2 void dequant_bf16(const uint8_t* w, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, bf16x8(w + 2 * i));
  if (i < n) dequantize_row(DType::BF16, w + 2 * i, n - i, out + i);
}

BRAID_AVX2 void dequant_f16(const uint8_t* w, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, f16x8(w + 2 * i));
  if (i < n) dequantize_row(DType::F16, w + 2 * i, n - i, out + i);
}

// Each group's codes put in block order first.
BRAID_AVX2 void dequant_q8(const uint8_t* w, int64_t n, float* out) {
  const int64_t nb = n / kQuantBlock;
  alignas(32) int8_t ordered[kBlockGroup * 32];
  for (int64_t b = 0; b < nb; ++b, out += 32) {
    if ((b & 15) == 0) q8_group_in_order(w + 2 * nb, nb, b / 16, ordered);
    const int8_t* q = ordered + 32 * (b & 15);
    const __m256 d = _mm256_set1_ps(scale(w + 2 * b));
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
    _mm256_storeu_ps(out, _mm256_mul_ps(d, i8x8(lo)));
    _mm256_storeu_ps(out + 8, _mm256_mul_ps(d, i8x8(_mm_srli_si128(lo, 8))));
    _mm256_storeu_ps(out + 16, _mm256_mul_ps(d, i8x8(hi)));
    _mm256_storeu_ps(out + 24, _mm256_mul_ps(d, i8x8(_mm_srli_si128(hi, 8))));
  }
}

// One Q4_0 block's values (its bytes in order, scale d) into out[0, 32).
BRAID_AVX2 inline void dequant_q4_block(__m128i bytes, __m256 d, float* out) {
  __m128i lo, hi;
  q4_codes(bytes, &lo, &hi);
  _mm256_storeu_ps(out, _mm256_mul_ps(d, i8x8(lo)));
  _mm256_storeu_ps(out + 8, _mm256_mul_ps(d, i8x8(_mm_srli_si128(lo, 8))));
  _mm256_storeu_ps(out + 16, _mm256_mul_ps(d, i8x8(hi)));
  _mm256_storeu_ps(out + 24, _mm256_mul_ps(d, i8x8(_mm_srli_si128(hi, 8))));
}

// Eight blocks of a group at a time from their registers (q4_bytes8), the rest one by one.
BRAID_AVX2 void dequant_q4(const uint8_t* w, int64_t n, float* out) {
  const int64_t nb = n / kQuantBlock;
  const uint8_t* codes = w + 2 * nb;
  for (int64_t b0 = 0; b0 < nb; b0 += kBlockGroup) {
    const int64_t m = std::min(kBlockGroup, nb - b0);
    int64_t j = 0;
    for (; j + 8 <= m; j += 8) {
      __m256i v[4];
      q4_bytes8(codes + 16 * b0, m, j, v);
      for (int p = 0; p < 4; ++p) {
        const int64_t a = b0 + j + p;
        dequant_q4_block(_mm256_castsi256_si128(v[p]), _mm256_set1_ps(scale(w + 2 * a)), out + 32 * a);
        dequant_q4_block(_mm256_extracti128_si256(v[p], 1), _mm256_set1_ps(scale(w + 2 * (a + 4))),
                         out + 32 * (a + 4));
      }
    }
    for (; j < m; ++j) {
      const int64_t b = b0 + j;
      dequant_q4_block(q4_bytes(codes, nb, b), _mm256_set1_ps(scale(w + 2 * b)), out + 32 * b);
    }
  }
}

// Int8 activations: a block's 32 signed weight codes against its 32 activation codes, as 8
// int32 lanes of exact sums (|w| <= 128 and |q| <= 127, so maddubs's 16-bit pair sums,
// at most 32512, never saturate).
BRAID_AVX2 inline __m256i codes_dot(__m256i w, __m256i q) {
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

BRAID_AVX2 inline __m256i q4_codes32(const uint8_t* codes, int64_t nb, int64_t b) {
  __m128i lo, hi;
  q4_codes(q4_bytes(codes, nb, b), &lo, &hi);
  return _mm256_set_m128i(hi, lo);
}

// Q8_0 with int8 activations: each group's codes put in block order first.
BRAID_AVX2 float dotq_q8(const uint8_t* w, const QBlocks& x, int64_t n) {
  const int64_t nb = n / kQuantBlock;
  alignas(32) int8_t ordered[kBlockGroup * 32];
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  for (int64_t b = 0; b < nb; ++b) {
    if ((b & 15) == 0) q8_group_in_order(w + 2 * nb, nb, b / 16, ordered);
    const __m256i c = _mm256_load_si256(reinterpret_cast<const __m256i*>(ordered + 32 * (b & 15)));
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + b * kQuantBlock));
    const __m256 isum = _mm256_cvtepi32_ps(codes_dot(c, q));
    __m256& a = b & 1 ? a1 : a0;
    a = _mm256_fmadd_ps(_mm256_set1_ps(scale(w + 2 * b) * x.d[b]), isum, a);
  }
  return hsum(_mm256_add_ps(a0, a1));
}

// Two Q4_0 blocks a (low half of v's bytes) and b (high half) against their activation codes:
// lanes 0-3 sum block a, lanes 4-7 block b (each exact).
BRAID_AVX2 inline __m256i q4_pair_dot(__m256i v, const int8_t* qa, const int8_t* qb) {
  const __m256i m = _mm256_set1_epi8(15), eight = _mm256_set1_epi8(8);
  const __m256i lo = _mm256_sub_epi8(_mm256_and_si256(v, m), eight);
  const __m256i hi = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), m), eight);
  const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qa));
  const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb));
  return _mm256_add_epi32(codes_dot(lo, _mm256_permute2x128_si256(xa, xb, 0x20)),
                          codes_dot(hi, _mm256_permute2x128_si256(xa, xb, 0x31)));
}

// Q4_0 with int8 activations: the blocks of each group eight at a time (two per product),
// the rest of a group one at a time.
BRAID_AVX2 float dotq_q4(const uint8_t* w, const QBlocks& x, int64_t n) {
  const int64_t nb = n / kQuantBlock;
  const uint8_t* c = w + 2 * nb;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  for (int64_t g = 0; g * kBlockGroup < nb; ++g) {
    const int64_t m = std::min(kBlockGroup, nb - g * kBlockGroup), b0 = g * kBlockGroup;
    int64_t j = 0;
    for (; j + 8 <= m; j += 8) {
      __m256i v[4];
      q4_bytes8(c + b0 * 16, m, j, v);
      for (int p = 0; p < 4; ++p) {
        const int64_t a = b0 + j + p, b = a + 4;
        const __m256 d =
            _mm256_set_m128(_mm_set1_ps(scale(w + 2 * b) * x.d[b]), _mm_set1_ps(scale(w + 2 * a) * x.d[a]));
        const __m256i isum = q4_pair_dot(v[p], x.q + a * kQuantBlock, x.q + b * kQuantBlock);
        __m256& acc = p & 1 ? a1 : a0;
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum), acc);
      }
    }
    for (; j < m; ++j) {
      const int64_t b = b0 + j;
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + b * kQuantBlock));
      const __m256 isum = _mm256_cvtepi32_ps(codes_dot(q4_codes32(c, nb, b), q));
      __m256& acc = b & 1 ? a1 : a0;
      acc = _mm256_fmadd_ps(_mm256_set1_ps(scale(w + 2 * b) * x.d[b]), isum, acc);
    }
  }
  return hsum(_mm256_add_ps(a0, a1));
}

}  // namespace

Kernels avx2_kernels() {
  return {{dot_bf16, dot_f16, dot_q8, dot_q4},
          {},
          {dequant_bf16, dequant_f16, dequant_q8, dequant_q4},
          quantize_activations_scalar,
          false,
          false,
          {dotq_q8, dotq_q4},
          {},
          {}};
}

// The AVX2 integer kernels, for AVX-512 machines without VNNI.
DotQFn avx2_dotq(int fmt) { return fmt == kQ8 ? dotq_q8 : dotq_q4; }

}  // namespace braid::ops::wdot
