// AVX-512 f32 GEMV for one or several inputs (see gemv_f32.hpp); called only when the CPU has
// the instructions (ops::active_isa()).
// GCC 12's AVX-512 header builds vectors from self-initialised "undefined" values, which its own
// -Wuninitialized then reports at every inlined use: a false positive, silenced here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cmath>

#include "ops/cpu/gemv_f32.hpp"
#include "ops/cpu/wdot.hpp"

namespace braid::ops::gemv {

namespace {

#define BRAID_AVX512 __attribute__((target("avx512f,avx2,fma")))

// How far ahead one input's stream of rows asks for lines (wdot.hpp).
const int64_t kStreamAhead = stream_prefetch_bytes();

// acc[r][b] += A[r, at .. at + 16) * x[b, at .. at + 16), lane by lane.
template <int R, int NB>
BRAID_AVX512 inline void lane_step(const float* a, int64_t lda, const float* x, int64_t ldx, int64_t at,
                                   __m512 (&acc)[R][NB]) {
  __m512 w[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) w[r] = _mm512_loadu_ps(a + r * lda + at);
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) {
    const __m512 v = _mm512_loadu_ps(x + b * ldx + at);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r][b] = _mm512_fmadd_ps(w[r], v, acc[r][b]);
  }
}

// out[r * NB + b] = the four lane chains acc[j][r][b] summed as (0 + 1) + (2 + 3), then across
// lanes, plus the products of columns [from, n) one at a time.
template <int R, int NB>
BRAID_AVX512 inline void finish(const __m512 (&acc)[4][R][NB], const float* a, int64_t lda, const float* x,
                                int64_t ldx, int64_t from, int64_t n, float* out) {
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) {
      float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0][r][b], acc[1][r][b]),
                                                   _mm512_add_ps(acc[2][r][b], acc[3][r][b])));
      for (int64_t k = from; k < n; ++k) s = std::fma(a[r * lda + k], x[b * ldx + k], s);
      out[r * NB + b] = s;
    }
}

// out[r * NB + b] = A[r, :] . x[b, :] for R rows (stride lda) and NB inputs (stride ldx).
// Each value has four lane chains, acc[j] over columns 64 i + 16 j, the 16-wide chunks after
// the last 64 in chain 0; the chains are then summed as (0 + 1) + (2 + 3) and across lanes.
template <int R, int NB>
BRAID_AVX512 inline void block(const float* a, int64_t lda, const float* x, int64_t ldx, int64_t n,
                               float* out) {
  __m512 acc[4][R][NB];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) acc[j][r][b] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      if (R == 1 && NB == 1) prefetch_stream(a + i + 16 * j, kStreamAhead);
      lane_step<R, NB>(a, lda, x, ldx, i + 16 * j, acc[j]);
    }
  for (; i + 16 <= n; i += 16) lane_step<R, NB>(a, lda, x, ldx, i, acc[0]);
  finish<R, NB>(acc, a, lda, x, ldx, i, n, out);
}

// The same values as block<R, NB> (each of a value's four lane accumulators sums the same
// products in the same order, and they are combined the same way), computed one accumulator
// at a time: R x NB sums in registers instead of R x NB x 4, so a block can be wide in both
// rows and inputs (each loaded vector of the matrix used NB times, of x R times).
template <int R, int NB>
BRAID_AVX512 inline void block_by_lane_group(const float* a, int64_t lda, const float* x, int64_t ldx,
                                             int64_t n, float* out) {
  __m512 part[4][R][NB];
  const int64_t n64 = n / 64 * 64;
#pragma GCC unroll 1
  for (int j = 0; j < 4; ++j) {
    __m512 acc[R][NB];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_setzero_ps();
    for (int64_t i = 16 * j; i < n64; i += 64) lane_step<R, NB>(a, lda, x, ldx, i, acc);
    if (j == 0)  // the 16-wide chunks after the last 64 go to the first accumulator
      for (int64_t i = n64; i + 16 <= n; i += 16) lane_step<R, NB>(a, lda, x, ldx, i, acc);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b) part[j][r][b] = acc[r][b];
  }
  finish<R, NB>(part, a, lda, x, ldx, n / 16 * 16, n, out);
}

// y[(b0 + b) * ldy + r + i] (+)= v[i * nb + b] for R rows and nb inputs.
inline void store_block(int R, int nb, const float* v, int64_t r, int64_t b0, bool accumulate, float* y,
                        int64_t ldy) {
  for (int i = 0; i < R; ++i)
    for (int b = 0; b < nb; ++b) {
      float& o = y[(b0 + b) * ldy + r + i];
      o = accumulate ? o + v[i * nb + b] : v[i * nb + b];
    }
}

// One block of R rows x NB inputs, by either kernel (the same values).
template <int R, int NB, bool ByLaneGroup>
BRAID_AVX512 inline void any_block(const float* a, int64_t lda, const float* x, int64_t n, float* out) {
  if constexpr (ByLaneGroup)
    block_by_lane_group<R, NB>(a, lda, x, n, n, out);
  else
    block<R, NB>(a, lda, x, n, n, out);
}

// Rows [r, r + R) against every input, NB at a time; the rest one at a time, or by lane group
// in one block of the inputs left.
template <int R, int NB, bool ByLaneGroup>
BRAID_AVX512 inline void rows_block(const float* A, const float* x, int64_t B, int64_t r, int64_t cols,
                                    bool accumulate, float* y, int64_t ldy) {
  const float* a = A + r * cols;
  float v[R * NB];
  int64_t b = 0;
  for (; b + NB <= B; b += NB) {
    any_block<R, NB, ByLaneGroup>(a, cols, x + b * cols, cols, v);
    store_block(R, NB, v, r, b, accumulate, y, ldy);
  }
  if constexpr (ByLaneGroup) {
    static_assert(NB <= 6, "the inputs left are at most 5");
    const int left = int(B - b);
    const float* xb = x + b * cols;
    if (left == 0) return;
    if (left == 1) any_block<R, 1, true>(a, cols, xb, cols, v);
    if (left == 2) any_block<R, 2, true>(a, cols, xb, cols, v);
    if (left == 3) any_block<R, 3, true>(a, cols, xb, cols, v);
    if (left == 4) any_block<R, 4, true>(a, cols, xb, cols, v);
    if (left == 5) any_block<R, 5, true>(a, cols, xb, cols, v);
    store_block(R, left, v, r, b, accumulate, y, ldy);
  } else {
    for (; b < B; ++b) {
      any_block<R, 1, false>(a, cols, x + b * cols, cols, v);
      store_block(R, 1, v, r, b, accumulate, y, ldy);
    }
  }
}

// Every row, R at a time (asking for the next block's lines while multiplying these), then
// the last rows one at a time.
template <int R, int NB, bool ByLaneGroup>
BRAID_AVX512 inline void all_rows(const float* A, const float* x, int64_t B, int64_t rows, int64_t cols,
                                  bool accumulate, float* y, int64_t ldy) {
  int64_t r = 0;
  for (; r + R <= rows; r += R) {
    for (int64_t p = r + R; p < r + 2 * R && p < rows; ++p)
      for (int64_t c = 0; c < cols; c += 16) __builtin_prefetch(A + p * cols + c);
    rows_block<R, NB, ByLaneGroup>(A, x, B, r, cols, accumulate, y, ldy);
  }
  for (; r < rows; ++r) rows_block<1, NB, ByLaneGroup>(A, x, B, r, cols, accumulate, y, ldy);
}

}  // namespace

BRAID_AVX512 void rows_avx512(const float* A, const float* x, int64_t B, int64_t rows, int64_t cols,
                              bool accumulate, float* y, int64_t ldy) {
  if (B == 1) {
    // One input: the matrix streams from memory, so a row at a time in address order, its
    // lines asked for stream_prefetch_bytes() ahead where the CPU wants it (wdot.hpp).
    for (int64_t r = 0; r < rows; ++r) {
      rows_block<1, 1, false>(A, x, 1, r, cols, accumulate, y, ldy);
    }
    return;
  }
  // Six inputs or more: blocks of 4 rows x 6 inputs, one lane group at a time (about 1.4x the
  // 3 x 2 blocks for 16 inputs on one core). Fewer: 3 x 2 blocks with all four lane groups at
  // once, which read the matrix in order (faster there).
  if (B >= 6)
    all_rows<4, 6, true>(A, x, B, rows, cols, accumulate, y, ldy);
  else
    all_rows<3, 2, false>(A, x, B, rows, cols, accumulate, y, ldy);
}

}  // namespace braid::ops::gemv
