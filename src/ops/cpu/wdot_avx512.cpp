// AVX-512 kernels for compact weight formats (see wdot.hpp). Compiled for these instructions
// only inside the functions marked BRAID_AVX512; called only when the CPU has them.
// GCC 12's AVX-512 header builds vectors from self-initialised "undefined" values, which its own
// -Wuninitialized then reports at every inlined use: a false positive, silenced here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/quant.hpp"
#include "ops/cpu/block_groups.hpp"
#include "ops/cpu/wdot.hpp"
#include "ops/cpu/wdot_impl.hpp"

namespace braid::ops::wdot {

namespace {

#define BRAID_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

BRAID_AVX512 inline float scale(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

BRAID_AVX512 inline __m512 bf16x16(const uint8_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

BRAID_AVX512 inline __m512 f16x16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Sixteen signed bytes to floats.
BRAID_AVX512 inline __m512 i8x16(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)); }

// The weight lines a step of R > 1 rows will need next: the same place in the next group of
// R rows. One row's step at c (its rows lie end to end, one stream in address order) asks for
// the line stream_prefetch_bytes() ahead of c, where the CPU wants it. No target of its own,
// so every kernel inlines it.
const int64_t kStreamAhead = ops::stream_prefetch_bytes();
template <int R>
inline void prefetch_ahead(const uint8_t* c, size_t stride) {
  if constexpr (R > 1)
    _mm_prefetch(reinterpret_cast<const char*>(c) + R * stride, _MM_HINT_T0);
  else
    ops::prefetch_stream(c, kStreamAhead);
}

// The lane sums of R accumulators: out[r] = sum of acc[r]'s lanes, added in one fixed order
// (halves, then pairs) whatever R is, so a row gets the same value in a group of four as alone.
template <int R>
BRAID_AVX512 inline void reduce_rows(const __m512* acc, float* out) {
  __m256 h[4];
  for (int r = 0; r < 4; ++r)
    h[r] = r < R ? _mm256_add_ps(_mm512_castps512_ps256(acc[r]),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r]), 1)))
                 : _mm256_setzero_ps();
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
  const __m128 v = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  alignas(16) float o[4];
  _mm_store_ps(o, v);
  for (int r = 0; r < R; ++r) out[r] = o[r];
}

// A bf16 / f16 row against x over its whole 16-value steps: four accumulators over 64 values
// a step, then 16 at a time, added into one vector of lane sums. Returns the values consumed.
template <__m512 (*Load)(const uint8_t*)>
BRAID_AVX512 inline int64_t half_sums(const uint8_t* w, const float* x, int64_t n, __m512* sums) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    prefetch_ahead<1>(w + 2 * i, 0);
    prefetch_ahead<1>(w + 2 * i + 64, 0);
    a0 = _mm512_fmadd_ps(Load(w + 2 * i), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(Load(w + 2 * i + 32), _mm512_loadu_ps(x + i + 16), a1);
    a2 = _mm512_fmadd_ps(Load(w + 2 * i + 64), _mm512_loadu_ps(x + i + 32), a2);
    a3 = _mm512_fmadd_ps(Load(w + 2 * i + 96), _mm512_loadu_ps(x + i + 48), a3);
  }
  // at most three 16-value steps left, one into each accumulator (no chain: short rows, such
  // as Mamba's dt_proj of 48 values, are all tail)
  if (i + 16 <= n) a0 = _mm512_fmadd_ps(Load(w + 2 * i), _mm512_loadu_ps(x + i), a0), i += 16;
  if (i + 16 <= n) a1 = _mm512_fmadd_ps(Load(w + 2 * i), _mm512_loadu_ps(x + i), a1), i += 16;
  if (i + 16 <= n) a2 = _mm512_fmadd_ps(Load(w + 2 * i), _mm512_loadu_ps(x + i), a2), i += 16;
  *sums = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
  return i;
}

// Four rows (stride apart) at once, each row's sums exactly half_sums' (the same
// accumulators in the same order), the loads of x shared: for short rows (rows_half).
template <__m512 (*Load)(const uint8_t*), int R = 4>
BRAID_AVX512 inline int64_t half_sums_rows(const uint8_t* w, size_t stride, const float* x, int64_t n,
                                           __m512* sums) {
  __m512 a[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) a[r][j] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    __m512 xv[4];
    for (int j = 0; j < 4; ++j) xv[j] = _mm512_loadu_ps(x + i + 16 * j);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      prefetch_ahead<1>(w + r * stride + 2 * i, 0);
      prefetch_ahead<1>(w + r * stride + 2 * i + 64, 0);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j)
        a[r][j] = _mm512_fmadd_ps(Load(w + r * stride + 2 * i + 32 * j), xv[j], a[r][j]);
    }
  }
  // at most three 16-value steps left, one into each accumulator (no chain: short rows, such
  // as Mamba's dt_proj of 48 values, are all tail)
  for (int j = 0; j < 3 && i + 16 <= n; ++j, i += 16) {
    const __m512 xi = _mm512_loadu_ps(x + i);
    for (int r = 0; r < R; ++r) a[r][j] = _mm512_fmadd_ps(Load(w + r * stride + 2 * i), xi, a[r][j]);
  }
  for (int r = 0; r < R; ++r)
    sums[r] = _mm512_add_ps(_mm512_add_ps(a[r][0], a[r][1]), _mm512_add_ps(a[r][2], a[r][3]));
  return i;
}

// s plus the products of values [i, n) (the scalar tail), in order.
template <float (*One)(uint16_t)>
inline float half_tail(const uint8_t* w, const float* x, int64_t i, int64_t n, float s) {
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, w + 2 * i, 2);
    s += One(h) * x[i];
  }
  return s;
}

template <__m512 (*Load)(const uint8_t*), float (*One)(uint16_t)>
BRAID_AVX512 inline float dot_half(const uint8_t* w, const float* x, int64_t n) {
  __m512 sums;
  const int64_t i = half_sums<Load>(w, x, n, &sums);
  float s;
  reduce_rows<1>(&sums, &s);
  return half_tail<One>(w, x, i, n, s);
}

// Rows one after another (one stream of weights). Short rows (at most kShortHalfRow values,
// such as dt_proj's 48: 96 bytes) four at a time, their x loads shared and their lane sums
// reduced together (alone, such a row's few products leave the vector units idle; four at a
// time run 4.2x as fast from cache on one thread, and the four lie within 1 KB); longer rows
// one at a time, since four of them read as four streams, which came from L3 20% slower
// (768 values: 37-38 -> 30-33 GB/s on two threads; bf16 decode 4-12% slower) though 1.7x as
// fast from cache. Each row's sums are the same either way.
constexpr int64_t kShortHalfRow = 128;
template <__m512 (*Load)(const uint8_t*), float (*One)(uint16_t)>
BRAID_AVX512 void rows_half(const uint8_t* w, size_t stride, const float* x, int64_t n, int64_t rows,
                            float* out) {
  __m512 sums[4];
  int64_t r = 0;
  if (n <= kShortHalfRow)
    for (; r + 4 <= rows; r += 4) {
      const int64_t done = half_sums_rows<Load>(w + r * stride, stride, x, n, sums);
      reduce_rows<4>(sums, out + r);
      for (int i = 0; i < 4; ++i) out[r + i] = half_tail<One>(w + (r + i) * stride, x, done, n, out[r + i]);
    }
  for (; r < rows; r += 4) {
    const int k = int(std::min<int64_t>(4, rows - r));
    int64_t done[4];
    for (int i = 0; i < k; ++i) done[i] = half_sums<Load>(w + (r + i) * stride, x, n, &sums[i]);
    if (k == 4)
      reduce_rows<4>(sums, out + r);
    else
      for (int i = 0; i < k; ++i) reduce_rows<1>(&sums[i], out + r + i);
    for (int i = 0; i < k; ++i) out[r + i] = half_tail<One>(w + (r + i) * stride, x, done[i], n, out[r + i]);
  }
}

float bf16_one(uint16_t h) { return bf16_to_f32(h); }
float f16_one(uint16_t h) { return f16_to_f32(h); }

BRAID_AVX512 float dot_bf16(const uint8_t* w, const float* x, int64_t n) {
  return dot_half<bf16x16, bf16_one>(w, x, n);
}
BRAID_AVX512 float dot_f16(const uint8_t* w, const float* x, int64_t n) {
  return dot_half<f16x16, f16_one>(w, x, n);
}
BRAID_AVX512 void rows_bf16(const uint8_t* w, size_t stride, const float* x, int64_t n, int64_t rows,
                            float* out) {
  rows_half<bf16x16, bf16_one>(w, stride, x, n, rows, out);
}
BRAID_AVX512 void rows_f16(const uint8_t* w, size_t stride, const float* x, int64_t n, int64_t rows,
                           float* out) {
  rows_half<f16x16, f16_one>(w, stride, x, n, rows, out);
}

// Four words of 16 blocks each (word k of the 16 at first + k * step, block i's at 4i) as four
// vectors, block 4L + p's four words in order in 128-bit lane L of o[p]: a 4 x 4 transpose of
// words in each 128-bit lane.
BRAID_AVX512 inline void words16(const uint8_t* first, int64_t step, __m512i* o) {
  __m512i w[4];
  for (int k = 0; k < 4; ++k) w[k] = _mm512_loadu_si512(first + k * step);
  const __m512i t0 = _mm512_unpacklo_epi32(w[0], w[1]), t1 = _mm512_unpackhi_epi32(w[0], w[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(w[2], w[3]), t3 = _mm512_unpackhi_epi32(w[2], w[3]);
  o[0] = _mm512_unpacklo_epi64(t0, t2), o[1] = _mm512_unpackhi_epi64(t0, t2);
  o[2] = _mm512_unpacklo_epi64(t1, t3), o[3] = _mm512_unpackhi_epi64(t1, t3);
}

// 128-bit lane L of v (L a constant once the loops around are unrolled).
BRAID_AVX512 inline __m128i lane128(__m512i v, int L) {
  switch (L) {
    case 0:
      return _mm512_castsi512_si128(v);
    case 1:
      return _mm512_extracti32x4_epi32(v, 1);
    case 2:
      return _mm512_extracti32x4_epi32(v, 2);
    default:
      return _mm512_extracti32x4_epi32(v, 3);
  }
}

// A whole group of 16 blocks (from `group`, its first code byte) in registers, block
// 4L + p's codes in 128-bit lane L of vectors p: Q4_0's 16 bytes in o[p]; Q8_0's code
// bytes of elements 0 .. 15 in o[p], of elements 16 .. 31 in o[4 + p].
template <bool Q4>
BRAID_AVX512 inline void group_regs(const uint8_t* group, __m512i* o) {
  if constexpr (Q4) {
    words16(group, 64, o);
  } else {
    words16(group, 128, o);           // words 0, 2, 4, 6
    words16(group + 64, 128, o + 4);  // words 1, 3, 5, 7
  }
}
// Block j of a group in registers: its codes' lanes.
struct BlockCodes {
  __m128i a, b;  // Q4_0: the 16 bytes (b unused); Q8_0: code bytes of elements 0 .. 15, 16 .. 31
};
template <bool Q4>
BRAID_AVX512 inline BlockCodes block_of(const __m512i* o, int j) {
  if constexpr (Q4) return {lane128(o[j & 3], j >> 2), _mm_setzero_si128()};
  return {lane128(o[j & 3], j >> 2), lane128(o[4 + (j & 3)], j >> 2)};
}
// Block j of a group put in block order in memory (q4_group_in_order / q8_group_in_order).
template <bool Q4>
BRAID_AVX512 inline BlockCodes block_at(const uint8_t* ordered, int64_t j) {
  const __m128i* p = reinterpret_cast<const __m128i*>(ordered + (Q4 ? 16 : 32) * j);
  if constexpr (Q4) return {_mm_loadu_si128(p), _mm_setzero_si128()};
  return {_mm_loadu_si128(p), _mm_loadu_si128(p + 1)};
}
// A group (g) put in block order, through memory: out holds 512 bytes.
template <bool Q4>
BRAID_AVX512 inline void group_in_order(const uint8_t* codes, int64_t nb, int64_t g, uint8_t* out) {
  if constexpr (Q4)
    q4_group_in_order(codes, nb, g, out);
  else
    q8_group_in_order(codes, nb, g, reinterpret_cast<int8_t*>(out));
}
// Q8_0 blocks gathered in memory are signed codes already; in registers they are still q + 128.
template <bool Q4, bool InOrder>
BRAID_AVX512 inline void signed_codes(const BlockCodes& c, __m128i* lo, __m128i* hi) {
  if constexpr (Q4) {
    q4_codes(c.a, lo, hi);
  } else if constexpr (InOrder) {
    *lo = c.a, *hi = c.b;
  } else {
    *lo = q8_codes16(c.a), *hi = q8_codes16(c.b);
  }
}

// One block b (its signed codes lo: elements 0 .. 15, hi: 16 .. 31) times x, scaled (scales:
// its group's 16) into acc[b & 1].
BRAID_AVX512 inline void block_step(__m128i lo, __m128i hi, const float* x, int64_t b, __m512 scales,
                                    __m512* acc) {
  const float* xb = x + b * kQuantBlock;
  const __m512 sum =
      _mm512_fmadd_ps(i8x16(hi), _mm512_loadu_ps(xb + 16), _mm512_mul_ps(i8x16(lo), _mm512_loadu_ps(xb)));
  acc[b & 1] =
      _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_set1_epi32(int(b & 15)), scales), sum, acc[b & 1]);
}

// R Q8_0 / Q4_0 rows times f32 x (sharing the loads of x and keeping R streams of codes in
// flight), each row with exactly the single-row arithmetic: its scaled block sums alternate
// between two accumulators (even blocks, odd blocks), reduced at the end. Each group's codes
// are put in block order first, a whole group's in registers (group_regs), a short one's
// through memory.
template <bool Q4, int R>
BRAID_AVX512 inline void dot_blocks(const uint8_t* w, size_t stride, const float* x, int64_t n, float* out) {
  constexpr int64_t kBytes = Q4 ? 16 : 32;  // code bytes per block
  constexpr int kRegs = Q4 ? 4 : 8;
  const int64_t nb = n / kQuantBlock;
  __m512 acc[R][2], scales[R];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t b0 = 0; b0 < nb; b0 += kBlockGroup) {
    const int64_t m = std::min(kBlockGroup, nb - b0);
    const __mmask16 k = m == kBlockGroup ? __mmask16(0xffff) : __mmask16((1u << m) - 1);
    for (int r = 0; r < R; ++r)
      scales[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, w + r * stride + 2 * b0));
    __m128i lo, hi;
    if (m < kBlockGroup) {
      alignas(64) uint8_t ordered[kBlockGroup * kBytes];
      for (int r = 0; r < R; ++r) {
        group_in_order<Q4>(w + r * stride + 2 * nb, nb, b0 / kBlockGroup, ordered);
        for (int64_t j = 0; j < m; ++j) {
          signed_codes<Q4, true>(block_at<Q4>(ordered, j), &lo, &hi);
          block_step(lo, hi, x, b0 + j, scales[r], acc[r]);
        }
      }
      continue;
    }
    __m512i o[R][kRegs];
    for (int r = 0; r < R; ++r) group_regs<Q4>(w + r * stride + 2 * nb + kBytes * b0, o[r]);
#pragma GCC unroll 16
    for (int j = 0; j < kBlockGroup; ++j)
      for (int r = 0; r < R; ++r) {
        if (j % (64 / kBytes) == 0) prefetch_ahead<R>(w + r * stride + 2 * nb + kBytes * (b0 + j), stride);
        signed_codes<Q4, false>(block_of<Q4>(o[r], j), &lo, &hi);
        block_step(lo, hi, x, b0 + j, scales[r], acc[r]);
      }
  }
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}

BRAID_AVX512 float dot_q8(const uint8_t* w, const float* x, int64_t n) {
  float out;
  dot_blocks<false, 1>(w, 0, x, n, &out);
  return out;
}
BRAID_AVX512 float dot_q4(const uint8_t* w, const float* x, int64_t n) {
  float out;
  dot_blocks<true, 1>(w, 0, x, n, &out);
  return out;
}
BRAID_AVX512 void dot4_q8(const uint8_t* w, size_t stride, const float* x, int64_t n, float* out) {
  dot_blocks<false, 4>(w, stride, x, n, out);
}
BRAID_AVX512 void dot4_q4(const uint8_t* w, size_t stride, const float* x, int64_t n, float* out) {
  dot_blocks<true, 4>(w, stride, x, n, out);
}

BRAID_AVX512 void dequant_bf16(const uint8_t* w, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, bf16x16(w + 2 * i));
  if (i < n) dequantize_row(DType::BF16, w + 2 * i, n - i, out + i);
}

BRAID_AVX512 void dequant_f16(const uint8_t* w, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, f16x16(w + 2 * i));
  if (i < n) dequantize_row(DType::F16, w + 2 * i, n - i, out + i);
}

// One block's values (its signed codes lo: elements 0 .. 15, hi: 16 .. 31; scale d) into
// out[0, 32).
BRAID_AVX512 inline void dequant_block(__m128i lo, __m128i hi, __m512 d, float* out) {
  _mm512_storeu_ps(out, _mm512_mul_ps(d, i8x16(lo)));
  _mm512_storeu_ps(out + 16, _mm512_mul_ps(d, i8x16(hi)));
}

// A whole group from its registers (group_regs), a short one through memory.
template <bool Q4>
BRAID_AVX512 void dequant_blocks(const uint8_t* w, int64_t n, float* out) {
  constexpr int64_t kBytes = Q4 ? 16 : 32;
  const int64_t nb = n / kQuantBlock;
  const uint8_t* codes = w + 2 * nb;
  __m128i lo, hi;
  int64_t b0 = 0;
  for (; b0 + kBlockGroup <= nb; b0 += kBlockGroup) {
    __m512i o[Q4 ? 4 : 8];
    group_regs<Q4>(codes + kBytes * b0, o);
#pragma GCC unroll 16
    for (int j = 0; j < kBlockGroup; ++j) {
      signed_codes<Q4, false>(block_of<Q4>(o, j), &lo, &hi);
      dequant_block(lo, hi, _mm512_set1_ps(scale(w + 2 * (b0 + j))), out + 32 * (b0 + j));
    }
  }
  if (b0 < nb) {
    alignas(64) uint8_t ordered[kBlockGroup * kBytes];
    group_in_order<Q4>(codes, nb, b0 / kBlockGroup, ordered);
    for (int64_t b = b0; b < nb; ++b) {
      signed_codes<Q4, true>(block_at<Q4>(ordered, b - b0), &lo, &hi);
      dequant_block(lo, hi, _mm512_set1_ps(scale(w + 2 * b)), out + 32 * b);
    }
  }
}
BRAID_AVX512 void dequant_q8(const uint8_t* w, int64_t n, float* out) { dequant_blocks<false>(w, n, out); }
BRAID_AVX512 void dequant_q4(const uint8_t* w, int64_t n, float* out) { dequant_blocks<true>(w, n, out); }

// Int8 activations with VNNI (vpdpbusd: unsigned bytes times signed bytes, four products
// summed into each int32 lane). The weights' stored codes are unsigned (Q8_0: q + 128; Q4_0:
// the nibbles, q + 8), and each block's sum starts from the activations' correction
// -k * (the block's codes' sum), so it is an exact signed sum.
//
// Both formats take a group of 16 blocks (core/quant.hpp) at a time: its 64-byte loads (Q8_0
// eight, Q4_0 four) hold one word of each of the 16 blocks, lane j of each block j of the
// group, so lane j sums block j over the whole group and the group's sums are scaled once, by
// one vector of 16 scales. The activations are stored to match, per group of 16 blocks 512
// codes in eight vectors of 64: vector 2k's lane j holds block j's elements 4k .. 4k + 3,
// vector 2k + 1's its elements 16 + 4k .. 16 + 4k + 3 (Q8_0's words 2k and 2k + 1; Q4_0 word
// k's low and high nibbles). A row's last group of m < 16 blocks holds its words at 4m-byte
// steps (core/quant.hpp); its activations keep lane j at the same place, the lanes past m
// zero. Corrections are one per block, in block order.

#define BRAID_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

// One block's scale and codes (x - x is 0 exactly when every x is finite): 32 codes.
BRAID_VNNI inline __m256i block_codes(const float* x, float* d) {
  const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
  const __mmask16 f0 = _mm512_cmp_ps_mask(_mm512_sub_ps(v0, v0), _mm512_setzero_ps(), _CMP_EQ_OQ);
  const __mmask16 f1 = _mm512_cmp_ps_mask(_mm512_sub_ps(v1, v1), _mm512_setzero_ps(), _CMP_EQ_OQ);
  const bool finite = (f0 & f1) == 0xffff;
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
  float inv;
  activation_scale(amax, finite, d, &inv);
  if (!finite) return _mm256_setzero_si256();
  const __m512 s = _mm512_set1_ps(inv);
  return _mm256_set_m128i(_mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, s))),
                          _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, s))));
}

BRAID_VNNI void quantize_vnni(const float* x, int64_t n, int fmt, int8_t* q, float* d, int32_t* corr) {
  const int64_t nb = n / kQuantBlock;
  const int32_t k = fmt == kQ8 ? -128 : -8;
  const __m256i ones = _mm256_set1_epi8(1);
  if (nb % kBlockGroup)  // the last group's lanes past its blocks stay zero
    std::memset(q + nb / kBlockGroup * kActivationGroup, 0, kActivationGroup);
  for (int64_t b = 0; b < nb; ++b) {
    alignas(32) int8_t codes[kQuantBlock];
    const __m256i c = block_codes(x + b * kQuantBlock, &d[b]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(codes), c);
    put_grouped_block(codes, b, q);
    const __m256i sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, c);
    corr[b] = k * _mm512_reduce_add_epi32(_mm512_zextsi256_si512(sums));
  }
}

// The activations of group g (its first block b and block count m): its codes in the
// kernel's order and the blocks' corrections and scales. Loaded once for every row that
// multiplies them. Wide: 512-bit vectors (a whole group, or a last one of m > 8 blocks);
// otherwise 256-bit ones, lanes 0-7 (a last group of m <= 8, such as the 8 after the first 16
// of a 768-value row: half the work).
template <bool Wide>
struct GroupX {
  __m512i q[8], corr;
  __m512 dx;
  int64_t b, m;
};
template <>
struct GroupX<false> {
  __m256i q[8], corr;
  __m256 dx;
  int64_t b, m;
};

// A 512-bit group's corrections and scales (m blocks from b; whole: 16, plain loads, as
// the compiler keeps a mask of all ones as a masked load).
BRAID_VNNI inline void load_wide_scales(const QBlocks& x, int64_t b, int64_t m, bool whole, __m512i* corr,
                                        __m512* dx) {
  if (whole) {
    *corr = _mm512_loadu_si512(x.corr + b);
    *dx = _mm512_loadu_ps(x.d + b);
  } else {
    const __mmask16 k16 = __mmask16((uint32_t(1) << m) - 1);
    *corr = _mm512_maskz_loadu_epi32(k16, x.corr + b);
    *dx = _mm512_maskz_loadu_ps(k16, x.d + b);
  }
}

// A 256-bit group's corrections and scales (m <= 8 blocks from b, the lanes past m zero).
BRAID_VNNI inline void load_narrow_scales(const QBlocks& x, int64_t b, int64_t m, __m256i* corr, __m256* dx) {
  const __mmask8 k8 = __mmask8((1u << m) - 1);
  *corr = _mm256_maskz_loadu_epi32(k8, x.corr + b);
  *dx = _mm256_maskz_loadu_ps(k8, x.d + b);
}

template <bool Wide, bool Full = false>
BRAID_VNNI inline GroupX<Wide> group_x(const QBlocks& x, int64_t nb, int64_t g) {
  GroupX<Wide> gx;
  gx.b = g * kBlockGroup, gx.m = Full ? kBlockGroup : std::min(kBlockGroup, nb - gx.b);
  const int8_t* xq = x.q + gx.b * kQuantBlock;
  if constexpr (Wide) {
    for (int i = 0; i < 8; ++i) gx.q[i] = _mm512_loadu_si512(xq + 64 * i);
    load_wide_scales(x, gx.b, gx.m, Full, &gx.corr, &gx.dx);
  } else {
    for (int i = 0; i < 8; ++i) gx.q[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 64 * i));
    load_narrow_scales(x, gx.b, gx.m, &gx.corr, &gx.dx);
  }
  return gx;
}

// The same group with its activation codes read where they lie, at each use (rows_direct):
// q[i] loads vector i of the group's codes; corr and dx as group_x loads them.
template <bool Wide>
struct CodesAt;
template <>
struct CodesAt<true> {
  const int8_t* p;
  BRAID_VNNI __m512i operator[](int i) const { return _mm512_loadu_si512(p + 64 * i); }
};
template <>
struct CodesAt<false> {
  const int8_t* p;
  BRAID_VNNI __m256i operator[](int i) const {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * i));
  }
};
template <bool Wide>
struct GroupAt {
  CodesAt<true> q;
  __m512i corr;
  __m512 dx;
  int64_t b, m;
};
template <>
struct GroupAt<false> {
  CodesAt<false> q;
  __m256i corr;
  __m256 dx;
  int64_t b, m;
};
template <bool Wide, bool Full = false>
BRAID_VNNI inline GroupAt<Wide> group_at(const QBlocks& x, int64_t nb, int64_t g) {
  GroupAt<Wide> gx;
  gx.b = g * kBlockGroup, gx.m = Full ? kBlockGroup : std::min(kBlockGroup, nb - gx.b);
  gx.q.p = x.q + gx.b * kQuantBlock;
  if constexpr (Wide) {
    load_wide_scales(x, gx.b, gx.m, Full, &gx.corr, &gx.dx);
  } else {
    load_narrow_scales(x, gx.b, gx.m, &gx.corr, &gx.dx);
  }
  return gx;
}

// The integer steps of a group's sums at either width (V: __m512i or __m256i).
BRAID_VNNI inline __m512i vand(__m512i a, __m512i b) { return _mm512_and_si512(a, b); }
BRAID_VNNI inline __m256i vand(__m256i a, __m256i b) { return _mm256_and_si256(a, b); }
BRAID_VNNI inline __m512i vdot(__m512i s, __m512i u, __m512i q) { return _mm512_dpbusd_epi32(s, u, q); }
BRAID_VNNI inline __m256i vdot(__m256i s, __m256i u, __m256i q) { return _mm256_dpbusd_epi32(s, u, q); }
BRAID_VNNI inline __m512i vadd(__m512i a, __m512i b) { return _mm512_add_epi32(a, b); }
BRAID_VNNI inline __m256i vadd(__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }
BRAID_VNNI inline __m512i vshift4(__m512i a) { return _mm512_srai_epi32(a, 4); }
BRAID_VNNI inline __m256i vshift4(__m256i a) { return _mm256_srai_epi32(a, 4); }

// Word vector p (z) of a row's group against the activations q into the two chains.
template <bool Q4, class V, class Q>
BRAID_VNNI inline void word_sums(V z, const Q& q, int p, V low, V high, V* s0, V* s1) {
  if constexpr (Q4) {
    *s0 = vdot(*s0, vand(z, low), q[2 * p]);
    *s1 = vdot(*s1, vand(z, high), q[2 * p + 1]);
  } else if (p % 2 == 0) {
    *s0 = vdot(*s0, z, q[p]);
  } else {
    *s1 = vdot(*s1, z, q[p]);
  }
}
// The group's integer sums from the two chains (Q4_0's second holds 16 times its value).
template <bool Q4, class V>
BRAID_VNNI inline V group_isum(V s0, V s1) {
  return vadd(s0, Q4 ? vshift4(s1) : s1);
}

// One row's part of a group (Full: 16 blocks, known at compile time; otherwise gx.m): its
// integer sums, lane j block j's, scaled and added into acc. Q8_0's eight word vectors go
// into two chains (even words from the corrections, odd from zero); Q4_0's four each put
// their low nibbles into one chain (from the corrections) and their high nibbles, left in
// place (16 times their value), into the other, shifted back at the end (exact: a sum of
// multiples of 16). R > 1: one of R rows, which asks for the next group of rows.
template <bool Q4, int R, bool Full, bool Wide, class GX>
BRAID_VNNI inline void group_row(const uint8_t* row, size_t stride, int64_t nb, const GX& gx, __m512* acc) {
  constexpr int64_t kBytes = Q4 ? 16 : 32;  // code bytes per block
  const int64_t b = gx.b, m = Full ? kBlockGroup : gx.m;
  const uint8_t* c = row + 2 * nb + b * kBytes;
  if constexpr (Wide) {
    const __mmask16 k16 = Full ? __mmask16(0xffff) : __mmask16((uint32_t(1) << m) - 1);
    const __mmask64 k64 = Full ? ~__mmask64(0) : (__mmask64(1) << (4 * m)) - 1;
    // the scales first: they lie before the codes, so the row is read in one ascending sweep
    const __m256i h = Full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * b))
                           : _mm256_maskz_loadu_epi16(k16, row + 2 * b);
    const __m512 scale = _mm512_mul_ps(_mm512_cvtph_ps(h), gx.dx);
    __m512i s0 = gx.corr, s1 = _mm512_setzero_si512();
    const __m512i low = _mm512_set1_epi8(0x0f), high = _mm512_set1_epi8(char(0xf0));
#pragma GCC unroll 8
    for (int p = 0; p < (Q4 ? 4 : 8); ++p) {
      prefetch_ahead<R>(c + 64 * p, stride);
      const __m512i z = Full ? _mm512_loadu_si512(c + 64 * p) : _mm512_maskz_loadu_epi8(k64, c + 4 * m * p);
      word_sums<Q4>(z, gx.q, p, low, high, &s0, &s1);
    }
    const __m512i isum = group_isum<Q4>(s0, s1);
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, *acc);
  } else {
    const __mmask8 k8 = __mmask8((1u << m) - 1);
    const __mmask32 k32 = __mmask32((uint64_t(1) << (4 * m)) - 1);
    const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(_mm_maskz_loadu_epi16(k8, row + 2 * b)), gx.dx);
    __m256i s0 = gx.corr, s1 = _mm256_setzero_si256();
    const __m256i low = _mm256_set1_epi8(0x0f), high = _mm256_set1_epi8(char(0xf0));
#pragma GCC unroll 8
    for (int p = 0; p < (Q4 ? 4 : 8); ++p) {
      if (p % 2 == 0) prefetch_ahead<R>(c + 32 * p, stride);  // at most 32 bytes per word vector
      const __m256i z = _mm256_maskz_loadu_epi8(k32, c + 4 * m * p);
      word_sums<Q4>(z, gx.q, p, low, high, &s0, &s1);
    }
    const __m256i isum = group_isum<Q4>(s0, s1);
    *acc = _mm512_add_ps(*acc, _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(isum), scale)));
  }
}

// Group g of R rows, added into acc[r].
template <bool Q4, int R, bool Full, bool Wide>
BRAID_VNNI inline void group(const uint8_t* w, size_t stride, const QBlocks& x, int64_t nb, int64_t g,
                             __m512* acc) {
  const GroupX<Wide> gx = group_x<Wide, Full>(x, nb, g);
  for (int r = 0; r < R; ++r) group_row<Q4, R, Full, Wide>(w + r * stride, stride, nb, gx, &acc[r]);
}

// R rows through their groups from g on, each row's products added into sums[r].
template <bool Q4, int R>
BRAID_VNNI inline void groups_from(const uint8_t* w, size_t stride, const QBlocks& x, int64_t nb, int64_t g,
                                   __m512* sums) {
  for (; (g + 1) * kBlockGroup <= nb; ++g) group<Q4, R, true, true>(w, stride, x, nb, g, sums);
  if (nb - g * kBlockGroup > 8)
    group<Q4, R, false, true>(w, stride, x, nb, g, sums);
  else if (g * kBlockGroup < nb)
    group<Q4, R, false, false>(w, stride, x, nb, g, sums);
}

// R rows through all their groups, each row's products summed into sums[r] (16 lanes).
template <bool Q4, int R>
BRAID_VNNI inline void dotq_sums(const uint8_t* w, size_t stride, const QBlocks& x, int64_t n, __m512* sums) {
  for (int r = 0; r < R; ++r) sums[r] = _mm512_setzero_ps();
  groups_from<Q4, R>(w, stride, x, n / kQuantBlock, 0, sums);
}

// `rows` rows from w (stride apart) through row_sums (a row's 16 lane sums), their lane sums
// reduced four rows at a time.
template <class RowSums>
BRAID_VNNI inline void rows_loop(const uint8_t* w, size_t stride, int64_t rows, float* out,
                                 const RowSums& row_sums) {
  __m512 sums[4];
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    for (int i = 0; i < 4; ++i) sums[i] = row_sums(w + (r + i) * stride);
    reduce_rows<4>(sums, out + r);
  }
  for (; r < rows; ++r) {
    sums[0] = row_sums(w + r * stride);
    reduce_rows<1>(sums, out + r);
  }
}

// Rows one after another with the activations of their first two groups in registers across
// the rows (Full whole groups, then Tail: 0 none, 1 a last group of <= 8 blocks, 2 one of
// 9 .. 15; More: groups beyond the first two, which each row takes as dotq_sums does), each
// row's sums exactly dotq_sums' (the same steps in the same order). Q4_0 rows of three whole
// groups or more, and Q8_0 rows of three or four, take rows_direct.
template <bool Q4, int Full, int Tail, bool More>
BRAID_VNNI void rows_resident(const uint8_t* w, size_t stride, const QBlocks& x, int64_t nb, int64_t rows,
                              float* out) {
  static_assert(Full + (Tail > 0) <= 2 && (!More || (Full == 2 && Tail == 0)), "two groups in registers");
  GroupX<true> whole[Full > 0 ? Full : 1];
  for (int i = 0; i < Full; ++i) whole[i] = group_x<true>(x, nb, i);
  const GroupX<true> partial = Tail == 2 ? group_x<true>(x, nb, Full) : GroupX<true>{};
  const GroupX<false> last = Tail == 1 ? group_x<false>(x, nb, Full) : GroupX<false>{};
  rows_loop(w, stride, rows, out, [&](const uint8_t* row) BRAID_VNNI {
    __m512 sums = _mm512_setzero_ps();
    for (int i = 0; i < Full; ++i) group_row<Q4, 1, true, true>(row, 0, nb, whole[i], &sums);
    if constexpr (Tail == 2) group_row<Q4, 1, false, true>(row, 0, nb, partial, &sums);
    if constexpr (Tail == 1) group_row<Q4, 1, false, false>(row, 0, nb, last, &sums);
    if constexpr (More) groups_from<Q4, 1>(row, 0, x, nb, 2, &sums);
    return sums;
  });
}

// Rows one after another, each through its groups in order (Full whole groups, known at
// compile time where Full >= 0, else nb / 16 at run time; then Tail as above), each row's
// sums exactly dotq_sums'. The activations are loaded at each use, from L1 (memory operands
// of the products), rather than two groups' held in registers, which spilled: from cache on
// one thread, Q4_0 rows of 1536-4096 values 1.1-1.35x as fast, Q8_0 rows of 1536 and 2048
// 1.05-1.3x (of 3072 and 4096, 3-5% slower: those keep rows_resident). A group count known at
// compile time unrolls the row.
template <bool Q4, int Full, int Tail>
BRAID_VNNI void rows_direct(const uint8_t* w, size_t stride, const QBlocks& x, int64_t nb, int64_t rows,
                            float* out) {
  const int64_t full = Full >= 0 ? Full : nb / kBlockGroup;
  rows_loop(w, stride, rows, out, [&](const uint8_t* row) BRAID_VNNI {
    __m512 sums = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int64_t g = 0; g < full; ++g)
      group_row<Q4, 1, true, true>(row, 0, nb, group_at<true, true>(x, nb, g), &sums);
    if constexpr (Tail == 2) group_row<Q4, 1, false, true>(row, 0, nb, group_at<true>(x, nb, full), &sums);
    if constexpr (Tail == 1) group_row<Q4, 1, false, false>(row, 0, nb, group_at<false>(x, nb, full), &sums);
    return sums;
  });
}

// The loop of rows_resident / rows_direct for rows of nb blocks (rows_direct's whole groups
// counted at compile time for three and four, rows of 1536 to 2559 values, at run time past:
// Q4_0 only).
using RowsQLoop = void (*)(const uint8_t*, size_t, const QBlocks&, int64_t, int64_t, float*);
template <bool Q4, int Tail>
BRAID_VNNI inline RowsQLoop rows_direct_for(int64_t full) {
  return full == 3   ? rows_direct<Q4, 3, Tail>
         : full == 4 ? rows_direct<Q4, 4, Tail>
                     : rows_direct<Q4, -1, Tail>;
}
template <bool Q4>
BRAID_VNNI inline RowsQLoop rows_for(int64_t nb) {
  const int64_t full = nb / kBlockGroup, left = nb % kBlockGroup;
  const int tail = left == 0 ? 0 : left <= 8 ? 1 : 2;
  if (full == 0) return tail == 1 ? rows_resident<Q4, 0, 1, false> : rows_resident<Q4, 0, 2, false>;
  if (full == 1)
    return tail == 0   ? rows_resident<Q4, 1, 0, false>
           : tail == 1 ? rows_resident<Q4, 1, 1, false>
                       : rows_resident<Q4, 1, 2, false>;
  if (full == 2 && tail == 0) return rows_resident<Q4, 2, 0, false>;
  if (full == 2 || (!Q4 && full > 4)) return rows_resident<Q4, 2, 0, true>;
  return tail == 0   ? rows_direct_for<Q4, 0>(full)
         : tail == 1 ? rows_direct_for<Q4, 1>(full)
                     : rows_direct_for<Q4, 2>(full);
}

template <bool Q4>
BRAID_VNNI float dotq(const uint8_t* w, const QBlocks& x, int64_t n) {
  __m512 sums;
  float out;
  dotq_sums<Q4, 1>(w, 0, x, n, &sums);
  reduce_rows<1>(&sums, &out);
  return out;
}
template <bool Q4>
BRAID_VNNI void dot4q(const uint8_t* w, size_t stride, const QBlocks& x, int64_t n, float* out) {
  __m512 sums[4];
  dotq_sums<Q4, 4>(w, stride, x, n, sums);
  reduce_rows<4>(sums, out);
}
// Rows one after another (one stream of weights), through rows_resident (row by row, the
// first two groups' activations in registers).
template <bool Q4>
BRAID_VNNI void rowsq(const uint8_t* w, size_t stride, const QBlocks& x, int64_t n, int64_t rows,
                      float* out) {
  rows_for<Q4>(n / kQuantBlock)(w, stride, x, n / kQuantBlock, rows, out);
}

}  // namespace

Kernels avx512_kernels() {
  Kernels k{{dot_bf16, dot_f16, dot_q8, dot_q4},
            {nullptr, nullptr, dot4_q8, dot4_q4},
            {dequant_bf16, dequant_f16, dequant_q8, dequant_q4},
            quantize_vnni,
            true,
            true,
            {dotq<false>, dotq<true>},
            {dot4q<false>, dot4q<true>},
            {rowsq<false>, rowsq<true>}};
  k.rows[kBF16] = rows_bf16, k.rows[kF16] = rows_f16;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512vnni")) {  // AVX-512 without VNNI: the AVX2 integer kernels
    const Kernels a = avx2_kernels();
    k.quantize = a.quantize, k.corrections = a.corrections, k.grouped = a.grouped;
    for (int f = 0; f < kQFormats; ++f)
      k.dotq[f] = a.dotq[f], k.dot4q[f] = a.dot4q[f], k.rowsq[f] = a.rowsq[f];
  }
  return k;
}

}  // namespace braid::ops::wdot
