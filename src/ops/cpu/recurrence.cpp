#include "ops/cpu/recurrence.hpp"

#include <algorithm>
#include <cstring>

#include "ops/cpu/dispatch.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/vec16.hpp"
#include "ops/cpu/wdot.hpp"

namespace braid::ops {

namespace {

// How far ahead of a state being updated in one pass its lines are asked for (the weight
// stream's distance, wdot.hpp): a decode step finds its state in the last-level cache, the
// weights streamed since having pushed it out of L2. With the request ahead, a Mamba-2 step's
// update of 9.4 MB of state per thread took 0.42 ms instead of 0.56, a Mamba-1 step's scan
// 0.128 ms instead of 0.150; Gated DeltaNet's 16 KB states, read twice, did not change.
const int64_t kStateAhead = stream_prefetch_bytes();

// The sum of 16 partial sums in one fixed order: k + (k + 8), then k + (k + 4), then
// (0 + 2) + (1 + 3).
inline float sum16(float* acc) {
  for (int k = 0; k < 8; ++k) acc[k] += acc[k + 8];
  for (int k = 0; k < 4; ++k) acc[k] += acc[k + 4];
  return (acc[0] + acc[2]) + (acc[1] + acc[3]);
}

// s[i] = next(i) for i in [0, n), returning the new s . c; 16 lanes of partial sums (then
// added in a fixed order) keep the loop vectorised without reassociating one sum.
template <class Next>
inline float update_dot(float* s, int64_t n, const float* c, const Next& next) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) {
      const float v = next(i + k);
      s[i + k] = v;
      acc[k] += v * c[i + k];
    }
  float r = sum16(acc);
  for (; i < n; ++i) {
    const float v = next(i);
    s[i] = v;
    r += v * c[i];
  }
  return r;
}

// One token through m <= 16 channels of state width 16 (h, A: the first channel's 16 values;
// dt, u, y: per channel), their readouts reduced together. Full (m == 16, known at compile
// time): the loop unrolls, so the 16 readout vectors stay in registers.
template <bool Full>
[[gnu::always_inline]] inline void scan16(float* __restrict h, const float* __restrict A, int64_t m,
                                          const float* __restrict dt, const float* __restrict u,
                                          const float* __restrict Bt, const float* __restrict Ct,
                                          float* __restrict y) {
  F32x16 c, p[16];
  load16(c, Ct);
  const int64_t count = Full ? 16 : m;
#pragma GCC unroll 16
  for (int64_t j = 0; j < count; ++j) {
    float* hc = h + j * 16;
    const float* Ac = A + j * 16;
    prefetch_stream(hc, kStateAhead);
    prefetch_stream(Ac, kStateAhead);
    const float d = dt[j], x = u[j];
    for (int64_t i = 0; i < 16; ++i) hc[i] = exp_fast(Ac[i] * d) * hc[i] + (d * Bt[i]) * x;
    load16(p[j], hc);
    p[j] *= c;
  }
  for (int64_t j = count; j < 16; ++j) p[j] = F32x16{};
  float out[16];
  lane_sums16(p, out);
  std::memcpy(y, out, size_t(count) * sizeof(float));
}

// decay_update_readout for rows of 16 K values: b and c stay in registers across the rows,
// and each row's 16 partial sums wait in p until 16 rows' are reduced together (lane_sums16,
// the order of sum16). Loading b and c again for every row, the loop read a state streamed
// from the last-level cache a third slower.
template <int K>
[[gnu::always_inline]] inline void decay_rows(float* __restrict S, int64_t rows, float a, float d,
                                              const float* __restrict x, const float* __restrict b,
                                              const float* __restrict c, float* __restrict y) {
  F32x16 bv[K], cv[K];
  for (int k = 0; k < K; ++k) load16(bv[k], b + 16 * k), load16(cv[k], c + 16 * k);
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t m = std::min<int64_t>(16, rows - r0);
    F32x16 p[16];
    for (int64_t j = 0; j < m; ++j) {
      float* s = S + (r0 + j) * 16 * K;
      const float ur = d * x[r0 + j];
      F32x16 acc = {};
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        prefetch_stream(s + 16 * k, kStateAhead);
        F32x16 sv;
        load16(sv, s + 16 * k);
        sv = a * sv + ur * bv[k];
        store16(s + 16 * k, sv);
        acc += sv * cv[k];
      }
      p[j] = acc;
    }
    for (int64_t j = m; j < 16; ++j) p[j] = F32x16{};
    float out[16];
    lane_sums16(p, out);
    std::memcpy(y + r0, out, size_t(m) * sizeof(float));
  }
}

}  // namespace

// Written with vector values (through update_dot the compiler kept the 16 partial sums in
// memory, at half the speed). Every row's sum is added in the same order whichever loop runs.
BRAID_DISPATCH void decay_update_readout(float* S, int64_t rows, int64_t n, float a, float d, const float* x,
                                         const float* b, const float* c, float* y) {
  switch (n) {  // the state widths of real models
    case 16:
      return decay_rows<1>(S, rows, a, d, x, b, c, y);
    case 32:
      return decay_rows<2>(S, rows, a, d, x, b, c, y);
    case 64:
      return decay_rows<4>(S, rows, a, d, x, b, c, y);
    case 128:
      return decay_rows<8>(S, rows, a, d, x, b, c, y);
    default:
      break;
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* s = S + r * n;
    const float ur = d * x[r];
    F32x16 acc = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      prefetch_stream(s + i, kStateAhead);
      F32x16 sv, bv, cv;
      load16(sv, s + i), load16(bv, b + i), load16(cv, c + i);
      sv = a * sv + ur * bv;
      store16(s + i, sv);
      acc += sv * cv;
    }
    float lanes[16];
    std::memcpy(lanes, &acc, sizeof lanes);
    float sum = sum16(lanes);
    for (; i < n; ++i) {
      s[i] = a * s[i] + ur * b[i];
      sum += s[i] * c[i];
    }
    y[r] = sum;
  }
}

namespace {

// Columns [j, j + 16 W) of S^T k (W vectors of partial sums kept in registers; each column
// summed over the rows in order).
template <int W>
inline void column_dots(const float* S, int64_t dk, int64_t dv, int64_t j, const float* k, F32x16* e) {
  for (int w = 0; w < W; ++w) e[w] = F32x16{};
  for (int64_t i = 0; i < dk; ++i)
    for (int w = 0; w < W; ++w) {
      F32x16 s;
      load16(s, S + i * dv + j + 16 * w);
      e[w] += s * k[i];
    }
}

// Columns [j, j + 16 W) of the update S = a S + k delta^T, and of o = S^T q.
template <int W>
inline void column_update(float* S, int64_t dk, int64_t dv, int64_t j, float a, const float* q,
                          const float* k, const float* delta, float* o) {
  F32x16 dl[W], acc[W];
  for (int w = 0; w < W; ++w) load16(dl[w], delta + j + 16 * w), acc[w] = F32x16{};
  for (int64_t i = 0; i < dk; ++i)
    for (int w = 0; w < W; ++w) {
      float* p = S + i * dv + j + 16 * w;
      F32x16 s;
      load16(s, p);
      s = a * s + k[i] * dl[w];
      store16(p, s);
      acc[w] += s * q[i];
    }
  for (int w = 0; w < W; ++w) store16(o + j + 16 * w, acc[w]);
}

}  // namespace

// Columns in groups of four vectors, then single vectors, then one at a time: every column's
// sums run over the rows in order, whichever group it falls in.
BRAID_DISPATCH void delta_rule_step(float* S, int64_t dk, int64_t dv, float a, float b, const float* q,
                                    const float* k, const float* v, float* o) {
  float delta[1024];
  int64_t j = 0;
  for (; j + 64 <= dv; j += 64) {
    F32x16 e[4];
    column_dots<4>(S, dk, dv, j, k, e);
    for (int w = 0; w < 4; ++w) store16(delta + j + 16 * w, e[w]);
  }
  for (; j + 16 <= dv; j += 16) {
    F32x16 e;
    column_dots<1>(S, dk, dv, j, k, &e);
    store16(delta + j, e);
  }
  for (; j < dv; ++j) {
    float e = 0.0f;
    for (int64_t i = 0; i < dk; ++i) e += S[i * dv + j] * k[i];
    delta[j] = e;
  }
  for (int64_t c = 0; c < dv; ++c) delta[c] = b * (v[c] - a * delta[c]);
  for (j = 0; j + 64 <= dv; j += 64) column_update<4>(S, dk, dv, j, a, q, k, delta, o);
  for (; j + 16 <= dv; j += 16) column_update<1>(S, dk, dv, j, a, q, k, delta, o);
  for (; j < dv; ++j) {
    float acc = 0.0f;
    for (int64_t i = 0; i < dk; ++i) {
      float& s = S[i * dv + j];
      s = a * s + k[i] * delta[j];
      acc += s * q[i];
    }
    o[j] = acc;
  }
}

BRAID_DISPATCH void selective_scan(float* h, const float* A, int64_t channels, int64_t n, int64_t T,
                                   const float* dt, const float* u, int64_t ld, const float* B,
                                   const float* C, int64_t ldbc, float* y) {
  int64_t ch = 0;
  if (n == 16)  // Mamba-1's state width: groups of up to 16 channels share the readouts' reduction
    for (; ch < channels; ch += 16) {
      const int64_t m = std::min<int64_t>(16, channels - ch);
      for (int64_t t = 0; t < T; ++t) {
        const float *dtt = dt + t * ld + ch, *ut = u + t * ld + ch, *Bt = B + t * ldbc, *Ct = C + t * ldbc;
        float* yt = y + t * ld + ch;
        if (m == 16)
          scan16<true>(h + ch * 16, A + ch * 16, 16, dtt, ut, Bt, Ct, yt);
        else
          scan16<false>(h + ch * 16, A + ch * 16, m, dtt, ut, Bt, Ct, yt);
      }
    }
  for (; ch < channels; ++ch) {
    float* hc = h + ch * n;
    const float* Ac = A + ch * n;
    for (int64_t t = 0; t < T; ++t) {
      const float d = dt[t * ld + ch], x = u[t * ld + ch];
      const float* Bt = B + t * ldbc;
      y[t * ld + ch] = update_dot(hc, n, C + t * ldbc,
                                  [&](int64_t i) { return exp_fast(Ac[i] * d) * hc[i] + (d * Bt[i]) * x; });
    }
  }
}

}  // namespace braid::ops
