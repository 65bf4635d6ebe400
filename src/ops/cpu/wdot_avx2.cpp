// AVX2 + FMA + F16C kernels for compact weight formats (see wdot.hpp). Compiled for these
// instructions only inside the functions marked BRAID_AVX2; called only when the CPU has them.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

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

// Int8 activations, in the grouped order of wdot_impl.hpp (quantize_grouped), against the
// grouped weight words (core/quant.hpp): a group of 16 blocks as two halves of eight, lane j
// of a 256-bit vector summing block 8h + j over its words, the half's sums scaled once.
// Q8_0: each word vector's codes made signed (|w| <= 128, |q| <= 127, so maddubs's 16-bit
// pair sums, at most 32512, never saturate; the sign moved onto q) and summed into int32
// lanes at once. Q4_0: the nibbles (0 .. 15) times the activations as they are (pair sums at
// most 3810, eight of them 30480, so they add in 16 bits), one int32 step per half, and the
// block's correction -8 * (the sum of its activation codes) makes the sums signed.
BRAID_AVX2 inline __m256i signed_dot(__m256i w, __m256i q) {
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// Word vector p of half h of a group of m blocks (c: the group's first code byte), its lanes
// past the group's blocks zero.
BRAID_AVX2 inline __m256i half_words(const uint8_t* c, int64_t m, int p, int h, __m256i lanes) {
  const auto* at = reinterpret_cast<const int*>(c + 4 * (p * m + 8 * h));
  if (m == kBlockGroup) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at));
  return _mm256_maskload_epi32(at, lanes);
}

template <bool Q4>
BRAID_AVX2 float dotq_grouped(const uint8_t* w, const QBlocks& x, int64_t n) {
  const int64_t nb = n / kQuantBlock;
  const uint8_t* codes = w + 2 * nb;
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i low = _mm256_set1_epi8(0x0f), high = _mm256_set1_epi8(char(0x80));
  for (int64_t b0 = 0; b0 < nb; b0 += kBlockGroup) {
    const int64_t m = std::min(kBlockGroup, nb - b0);
    const uint8_t* c = codes + b0 * (Q4 ? 16 : 32);
    const int8_t* xq = x.q + b0 * kQuantBlock;
    for (int h = 0; 8 * h < m; ++h) {
      const int64_t first = b0 + 8 * h, count = std::min<int64_t>(8, m - 8 * h);
      const __m256i lanes =
          _mm256_cmpgt_epi32(_mm256_set1_epi32(int(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      auto xv = [&](int p) BRAID_AVX2 {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 64 * p + 32 * h));
      };
      __m256i isum;
      if constexpr (Q4) {
        __m256i s16 = _mm256_setzero_si256();
        for (int k = 0; k < 4; ++k) {
          const __m256i z = half_words(c, m, k, h, lanes);
          s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(_mm256_and_si256(z, low), xv(2 * k)));
          s16 = _mm256_add_epi16(
              s16, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(z, 4), low), xv(2 * k + 1)));
        }
        isum = _mm256_add_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)),
                                _mm256_maskload_epi32(x.corr + first, lanes));
      } else {
        isum = _mm256_setzero_si256();
        for (int p = 0; p < 8; ++p)
          isum = _mm256_add_epi32(isum,
                                  signed_dot(_mm256_xor_si256(half_words(c, m, p, h, lanes), high), xv(p)));
      }
      alignas(16) uint16_t half_scales[8] = {};
      std::memcpy(half_scales, w + 2 * first, size_t(2 * count));
      const __m256 scale =
          _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(half_scales))),
                        _mm256_maskload_ps(x.d + first, lanes));
      acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[h]);
    }
  }
  return hsum(_mm256_add_ps(acc[0], acc[1]));
}

}  // namespace

// The scalar quantizer's codes and scales laid out in the grouped order (the last group
// padded with zero codes), one correction per block when asked for.
void quantize_grouped(const float* x, int64_t n, int fmt, int8_t* q, float* d, int32_t* corr) {
  thread_local std::vector<int8_t> in_order;
  in_order.resize(size_t(n));
  quantize_activations_scalar(x, n, fmt, in_order.data(), d, corr);
  const int64_t nb = n / kQuantBlock;
  if (nb % kBlockGroup)  // the last group's lanes past its blocks stay zero
    std::memset(q + nb / kBlockGroup * kActivationGroup, 0, kActivationGroup);
  for (int64_t b = 0; b < nb; ++b) put_grouped_block(&in_order[size_t(b * kQuantBlock)], b, q);
}

Kernels avx2_kernels() {
  return {{dot_bf16, dot_f16, dot_q8, dot_q4},
          {},
          {dequant_bf16, dequant_f16, dequant_q8, dequant_q4},
          quantize_grouped,
          true,
          true,
          {dotq_grouped<false>, dotq_grouped<true>},
          {},
          {}};
}

// The AVX2 integer kernels, for AVX-512 machines without VNNI.

}  // namespace braid::ops::wdot
