#include "mixers/linear_attention.hpp"

#include <cmath>

#include "ops/cpu/gemm.hpp"

namespace braid {

size_t linear_attention_scratch(int64_t Q, int64_t dk, int64_t dv, bool per_channel) {
  (void)dv;
  const int64_t gc = per_channel ? Q * dk : Q;
  return size_t(Q * Q + 2 * Q * dk + gc + dk);
}

void linear_attention(const LinearAttentionChunk& c, float* scratch) {
  const int64_t Q = c.Q, dk = c.dk, dv = c.dv;
  float* S = c.S;
  if (Q == 1) {
    for (int64_t j = 0; j < dv; ++j) c.o[j] = 0.0f;
    for (int64_t i = 0; i < dk; ++i) {
      const float a = std::exp(c.per_channel ? c.g[i] : c.g[0]), ki = c.k[i], qi = c.q[i];
      float* Si = S + i * dv;
      for (int64_t j = 0; j < dv; ++j) {
        Si[j] = a * Si[j] + ki * c.v[j];
        c.o[j] += Si[j] * qi;
      }
    }
    return;
  }
  float* P = scratch;                                // [Q][Q]
  float* qe = P + Q * Q;                             // [Q][dk]  q * exp(c)
  float* ke = qe + Q * dk;                           // [Q][dk]  k * exp(c_last - c)
  float* cum = ke + Q * dk;                          // [Q] or [Q][dk]
  float* last = cum + (c.per_channel ? Q * dk : Q);  // [dk] exp(c_last) per channel
  const int64_t w = c.per_channel ? dk : 1;
  for (int64_t d = 0; d < w; ++d) {
    float acc = 0.0f;
    for (int64_t t = 0; t < Q; ++t) cum[t * w + d] = acc += c.g[t * (c.per_channel ? c.ldg : 1) + d];
  }
  // Intra-chunk scores, masked by the decay between the two positions.
  if (!c.per_channel) {
    ops::gemm(Q, Q, dk, 1.0f, c.q, c.ldq, c.k, c.ldk, true, 0.0f, P, Q);
    for (int64_t i = 0; i < Q; ++i) {
      for (int64_t j = 0; j <= i; ++j) P[i * Q + j] *= std::exp(cum[i] - cum[j]);
      for (int64_t j = i + 1; j < Q; ++j) P[i * Q + j] = 0.0f;
    }
  } else {
    for (int64_t i = 0; i < Q; ++i) {
      const float* qi = c.q + i * c.ldq;
      const float* ci = cum + i * dk;
      for (int64_t j = 0; j <= i; ++j) {
        const float* kj = c.k + j * c.ldk;
        const float* cj = cum + j * dk;
        float s = 0.0f;
        for (int64_t d = 0; d < dk; ++d) s += qi[d] * kj[d] * std::exp(ci[d] - cj[d]);
        P[i * Q + j] = s;
      }
      for (int64_t j = i + 1; j < Q; ++j) P[i * Q + j] = 0.0f;
    }
  }
  for (int64_t t = 0; t < Q; ++t)
    for (int64_t d = 0; d < dk; ++d) {
      const float ct = cum[t * w + (c.per_channel ? d : 0)], cl = cum[(Q - 1) * w + (c.per_channel ? d : 0)];
      qe[t * dk + d] = c.q[t * c.ldq + d] * std::exp(ct);
      ke[t * dk + d] = c.k[t * c.ldk + d] * std::exp(cl - ct);
    }
  ops::gemm(Q, dv, Q, 1.0f, P, Q, c.v, c.ldv, false, 0.0f, c.o, c.ldo);
  ops::gemm(Q, dv, dk, 1.0f, qe, dk, S, dv, false, 1.0f, c.o, c.ldo);
  for (int64_t d = 0; d < dk; ++d) last[d] = std::exp(cum[(Q - 1) * w + (c.per_channel ? d : 0)]);
  for (int64_t d = 0; d < dk; ++d)
    for (int64_t j = 0; j < dv; ++j) S[d * dv + j] *= last[d];
  ops::gemm_tn(dk, dv, Q, 1.0f, ke, dk, c.v, c.ldv, 1.0f, S, dv);
}

}  // namespace braid
