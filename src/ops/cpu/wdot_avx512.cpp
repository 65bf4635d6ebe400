// AVX-512 kernels for compact weight formats (see wdot.hpp). Compiled for these instructions
// only inside the functions marked BRAID_AVX512; called only when the CPU has them.
#include <immintrin.h>

#include <cstring>

#include "core/quant.hpp"
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

// Four accumulators over 64 values per step, then 16 at a time, then a scalar tail.
template <__m512 (*Load)(const uint8_t*), float (*One)(uint16_t)>
BRAID_AVX512 inline float dot_half(const uint8_t* w, const float* x, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_fmadd_ps(Load(w + 2 * i), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(Load(w + 2 * i + 32), _mm512_loadu_ps(x + i + 16), a1);
    a2 = _mm512_fmadd_ps(Load(w + 2 * i + 64), _mm512_loadu_ps(x + i + 32), a2);
    a3 = _mm512_fmadd_ps(Load(w + 2 * i + 96), _mm512_loadu_ps(x + i + 48), a3);
  }
  for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(Load(w + 2 * i), _mm512_loadu_ps(x + i), a0);
  float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, w + 2 * i, 2);
    s += One(h) * x[i];
  }
  return s;
}

float bf16_one(uint16_t h) { return bf16_to_f32(h); }
float f16_one(uint16_t h) { return f16_to_f32(h); }

BRAID_AVX512 float dot_bf16(const uint8_t* w, const float* x, int64_t n) {
  return dot_half<bf16x16, bf16_one>(w, x, n);
}
BRAID_AVX512 float dot_f16(const uint8_t* w, const float* x, int64_t n) {
  return dot_half<f16x16, f16_one>(w, x, n);
}

BRAID_AVX512 inline __m512 q8_block(const uint8_t* q, const float* x) {
  const __m512 s =
      _mm512_mul_ps(i8x16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))), _mm512_loadu_ps(x));
  return _mm512_fmadd_ps(i8x16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16))),
                         _mm512_loadu_ps(x + 16), s);
}

// Codes of a Q4_0 block as signed bytes: elements 0..15 and 16..31.
BRAID_AVX512 inline void q4_codes(const uint8_t* q, __m128i* lo, __m128i* hi) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
  *lo = _mm_sub_epi8(_mm_and_si128(v, m), eight);
  *hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m), eight);
}

BRAID_AVX512 inline __m512 q4_block(const uint8_t* q, const float* x) {
  __m128i lo, hi;
  q4_codes(q, &lo, &hi);
  return _mm512_fmadd_ps(i8x16(hi), _mm512_loadu_ps(x + 16), _mm512_mul_ps(i8x16(lo), _mm512_loadu_ps(x)));
}

// R rows at once (sharing the loads of x and keeping R streams of codes in flight), each
// row with exactly the single-row arithmetic: its scaled block sums alternate between two
// accumulators (even blocks, odd blocks), reduced at the end.
template <__m512 (*Block)(const uint8_t*, const float*), int64_t BlockBytes, int R>
BRAID_AVX512 inline void dot_blocks(const uint8_t* w, size_t stride, const float* x, int64_t n, float* out) {
  const int64_t nb = n / kQuantBlock;
  __m512 acc[R][2];
  __m512 scales[R];  // the f32 scales of 16 consecutive blocks per row, converted at once
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m512i lane = _mm512_set1_epi32(int(b & 15));
    for (int r = 0; r < R; ++r) {
      const uint8_t* row = w + r * stride;
      const uint8_t* q = row + 2 * nb + b * BlockBytes;
      if ((b & 15) == 0) {  // the scales of blocks b .. b + 15 (masked at the row's last block)
        const __mmask16 k = nb - b >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nb - b)) - 1);
        scales[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, row + 2 * b));
      }
      _mm_prefetch(reinterpret_cast<const char*>(q) + R * stride, _MM_HINT_T0);
      acc[r][b & 1] = _mm512_fmadd_ps(_mm512_permutexvar_ps(lane, scales[r]), Block(q, x + b * kQuantBlock),
                                      acc[r][b & 1]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}

BRAID_AVX512 float dot_q8(const uint8_t* w, const float* x, int64_t n) {
  float out;
  dot_blocks<q8_block, 32, 1>(w, 0, x, n, &out);
  return out;
}
BRAID_AVX512 float dot_q4(const uint8_t* w, const float* x, int64_t n) {
  float out;
  dot_blocks<q4_block, 16, 1>(w, 0, x, n, &out);
  return out;
}
BRAID_AVX512 void dot4_q8(const uint8_t* w, size_t stride, const float* x, int64_t n, float* out) {
  dot_blocks<q8_block, 32, 4>(w, stride, x, n, out);
}
BRAID_AVX512 void dot4_q4(const uint8_t* w, size_t stride, const float* x, int64_t n, float* out) {
  dot_blocks<q4_block, 16, 4>(w, stride, x, n, out);
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

BRAID_AVX512 void dequant_q8(const uint8_t* w, int64_t n, float* out) {
  const int64_t nb = n / kQuantBlock;
  const uint8_t* q = w + 2 * nb;
  for (int64_t b = 0; b < nb; ++b, q += 32, out += 32) {
    const __m512 d = _mm512_set1_ps(scale(w + 2 * b));
    _mm512_storeu_ps(out, _mm512_mul_ps(d, i8x16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)))));
    _mm512_storeu_ps(out + 16,
                     _mm512_mul_ps(d, i8x16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16)))));
  }
}

BRAID_AVX512 void dequant_q4(const uint8_t* w, int64_t n, float* out) {
  const int64_t nb = n / kQuantBlock;
  const uint8_t* q = w + 2 * nb;
  for (int64_t b = 0; b < nb; ++b, q += 16, out += 32) {
    const __m512 d = _mm512_set1_ps(scale(w + 2 * b));
    __m128i lo, hi;
    q4_codes(q, &lo, &hi);
    _mm512_storeu_ps(out, _mm512_mul_ps(d, i8x16(lo)));
    _mm512_storeu_ps(out + 16, _mm512_mul_ps(d, i8x16(hi)));
  }
}

// Int8 activations with VNNI (vpdpbusd: unsigned bytes times signed bytes, four products
// summed into each int32 lane). Weight codes are made unsigned (Q8_0: code + 128 by flipping
// the sign bit; Q4_0: the stored nibbles, code + 8), and each lane starts from the
// activations' correction -k * (its four codes' sum), so every lane holds an exact signed sum.

#define BRAID_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

BRAID_VNNI void quantize_vnni(const float* x, int64_t n, int fmt, int8_t* q, float* d, int32_t* corr) {
  const __m256i k = _mm256_set1_epi32(fmt == kQ8 ? -128 : -8), ones = _mm256_set1_epi8(1);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, q += kQuantBlock) {
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    // x - x is 0 exactly when x is finite.
    const __mmask16 f0 = _mm512_cmp_ps_mask(_mm512_sub_ps(v0, v0), _mm512_setzero_ps(), _CMP_EQ_OQ);
    const __mmask16 f1 = _mm512_cmp_ps_mask(_mm512_sub_ps(v1, v1), _mm512_setzero_ps(), _CMP_EQ_OQ);
    const bool finite = (f0 & f1) == 0xffff;
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    float inv;
    activation_scale(amax, finite, &d[b], &inv);
    const __m512 s = _mm512_set1_ps(inv);
    __m256i codes = _mm256_setzero_si256();
    if (finite)
      codes = _mm256_set_m128i(_mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, s))),
                               _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, s))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), codes);
    const __m256i sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, codes);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(corr + 8 * b), _mm256_mullo_epi32(sums, k));
  }
}

// The unsigned weight codes of blocks b and b + 1 (Two) or of block b alone (the upper half
// zero), in the activations' element order.
template <bool Q4, bool Two>
BRAID_VNNI inline __m512i unsigned_codes(const uint8_t* c) {
  if constexpr (Q4) {
    // 16 bytes per block: low nibbles are elements 0..15, high nibbles 16..31.
    const __m256i y = Two ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c))
                          : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
    const __m512i idx = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i z = _mm512_permutex2var_epi64(_mm512_zextsi256_si512(y), idx,
                                                _mm512_zextsi256_si512(_mm256_srli_epi16(y, 4)));
    return _mm512_and_si512(z, _mm512_set1_epi8(15));
  } else {
    const __m512i w = Two ? _mm512_loadu_si512(c)
                          : _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
    return _mm512_xor_si512(w, _mm512_set1_epi8(char(0x80)));
  }
}

// One step of R rows against one quantized input: blocks b and b + 1 (Two) or block b alone.
// Lanes 0-7 of a step hold block b's sums, 8-15 block b + 1's, each scaled by its d_w * d_x
// (the scales of 16 blocks are converted at once, at every 16th block).
template <bool Q4, int R, bool Two>
BRAID_VNNI inline void dotq_step(const uint8_t* w, size_t stride, const QBlocks& x, int64_t nb, int64_t b,
                                 __m512* acc, __m512* scales) {
  constexpr int64_t kBlockBytes = Q4 ? 16 : 32;
  if ((b & 15) == 0) {  // the scales of blocks b .. b + 15 (masked at the row's end)
    const __mmask16 k = nb - b >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nb - b)) - 1);
    const __m512 dx = _mm512_maskz_loadu_ps(k, x.d + b);
    for (int r = 0; r < R; ++r)
      scales[r] = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, w + r * stride + 2 * b)), dx);
  }
  // One block alone: the upper halves are zero, so its lanes 8-15 add nothing.
  const int8_t* q = x.q + b * kQuantBlock;
  const int32_t* corr = x.corr + 8 * b;
  const __m512i xq =
      Two ? _mm512_loadu_si512(q) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)q));
  const __m512i c0 =
      Two ? _mm512_loadu_si512(corr) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)corr));
  const __m512i lane = _mm512_add_epi32(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                                        _mm512_set1_epi32(int(b & 15)));
  for (int r = 0; r < R; ++r) {
    const uint8_t* c = w + r * stride + 2 * nb + b * kBlockBytes;
    _mm_prefetch(reinterpret_cast<const char*>(c) + R * stride, _MM_HINT_T0);  // the next row group
    const __m512i sums = _mm512_dpbusd_epi32(c0, unsigned_codes<Q4, Two>(c), xq);
    acc[r] = _mm512_fmadd_ps(_mm512_permutexvar_ps(lane, scales[r]), _mm512_cvtepi32_ps(sums), acc[r]);
  }
}

template <bool Q4, int R>
BRAID_VNNI inline void dotq_rows(const uint8_t* w, size_t stride, const QBlocks& x, int64_t n, float* out) {
  const int64_t nb = n / kQuantBlock;
  __m512 acc[R], scales[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) dotq_step<Q4, R, true>(w, stride, x, nb, b, acc, scales);
  if (b < nb) dotq_step<Q4, R, false>(w, stride, x, nb, b, acc, scales);
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
}

template <bool Q4>
BRAID_VNNI float dotq(const uint8_t* w, const QBlocks& x, int64_t n) {
  float out;
  dotq_rows<Q4, 1>(w, 0, x, n, &out);
  return out;
}
template <bool Q4>
BRAID_VNNI void dot4q(const uint8_t* w, size_t stride, const QBlocks& x, int64_t n, float* out) {
  dotq_rows<Q4, 4>(w, stride, x, n, out);
}

}  // namespace

Kernels avx512_kernels() {
  Kernels k{{dot_bf16, dot_f16, dot_q8, dot_q4},
            {nullptr, nullptr, dot4_q8, dot4_q4},
            {dequant_bf16, dequant_f16, dequant_q8, dequant_q4},
            quantize_vnni,
            true,
            {dotq<false>, dotq<true>},
            {dot4q<false>, dot4q<true>}};
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512vnni"))  // AVX-512 without VNNI: the AVX2 integer kernels
    k.quantize = quantize_activations_scalar, k.corrections = false, k.dotq[kQ8] = avx2_dotq(kQ8),
    k.dotq[kQ4] = avx2_dotq(kQ4), k.dot4q[kQ8] = k.dot4q[kQ4] = nullptr;
  return k;
}

}  // namespace braid::ops::wdot
