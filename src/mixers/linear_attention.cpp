#include "mixers/linear_attention.hpp"

#include <cmath>
#include <vector>

#include "ops/cpu/gemm.hpp"

namespace braid {

namespace {

// The chunk's cumulative log decays cum ([Q] or [Q][dk]), masked decayed scores P [Q][Q],
// q exp(c) (qe) and k exp(c_last - c) (ke), both [Q][dk].
void chunk_terms(const LinearAttentionChunk& c, float* P, float* qe, float* ke, float* cum) {
  const int64_t Q = c.Q, dk = c.dk;
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
}

}  // namespace

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
  float* P = scratch;     // [Q][Q]
  float* qe = P + Q * Q;  // [Q][dk]  q * exp(c)
  float* ke = qe + Q * dk;
  float* cum = ke + Q * dk;
  float* last = cum + (c.per_channel ? Q * dk : Q);  // [dk] exp(c_last) per channel
  chunk_terms(c, P, qe, ke, cum);
  ops::gemm(Q, dv, Q, 1.0f, P, Q, c.v, c.ldv, false, 0.0f, c.o, c.ldo);
  ops::gemm(Q, dv, dk, 1.0f, qe, dk, S, dv, false, 1.0f, c.o, c.ldo);
  const int64_t w = c.per_channel ? dk : 1;
  for (int64_t d = 0; d < dk; ++d) last[d] = std::exp(cum[(Q - 1) * w + (c.per_channel ? d : 0)]);
  for (int64_t d = 0; d < dk; ++d)
    for (int64_t j = 0; j < dv; ++j) S[d * dv + j] *= last[d];
  ops::gemm_tn(dk, dv, Q, 1.0f, ke, dk, c.v, c.ldv, 1.0f, S, dv);
}

size_t linear_attention_backward_scratch(int64_t Q, int64_t dk, int64_t dv, bool per_channel) {
  return linear_attention_scratch(Q, dk, dv, per_channel) + size_t(Q * Q + 2 * Q * dk);
}

void linear_attention_backward(const LinearAttentionChunk& c, const float* dO, int64_t lddo,
                               const LinearAttentionGrads& gr, float* scratch) {
  const int64_t Q = c.Q, dk = c.dk, dv = c.dv, w = c.per_channel ? dk : 1;
  float* P = scratch;
  float* qe = P + Q * Q;
  float* ke = qe + Q * dk;
  float* cum = ke + Q * dk;
  float* dP = cum + (c.per_channel ? Q * dk : Q) + dk;  // [Q][Q]
  float* dke = dP + Q * Q;                              // [Q][dk]
  float* dqe = dke + Q * dk;                            // [Q][dk]
  chunk_terms(c, P, qe, ke, cum);
  const float* S0 = c.S;
  float* dS = gr.dS;
  // dL/dcum: each pair (i, j) adds to cum_i and subtracts from cum_j, so the suffix sums at
  // the end cancel large terms; double keeps that exact.
  std::vector<double> dcum(size_t(Q * w), 0.0);
  auto dc = [&](int64_t t, int64_t d) -> double& { return dcum[size_t(t * w + (c.per_channel ? d : 0))]; };
  // S_end = exp(c_last) S0 + ke^T v.
  for (int64_t d = 0; d < dk; ++d) {
    double s = 0;
    for (int64_t j = 0; j < dv; ++j) s += double(dS[d * dv + j]) * S0[d * dv + j];
    dc(Q - 1, d) += s * std::exp(double(cum[(Q - 1) * w + (c.per_channel ? d : 0)]));
  }
  ops::gemm(Q, dk, dv, 1.0f, c.v, c.ldv, dS, dv, true, 0.0f, dke, dk);  // v dS^T
  // dv = P^T dO + ke dS.
  ops::gemm_tn(Q, dv, Q, 1.0f, P, Q, dO, lddo, 0.0f, gr.dv, gr.ldv);
  ops::gemm(Q, dv, dk, 1.0f, ke, dk, dS, dv, false, 1.0f, gr.dv, gr.ldv);
  for (int64_t t = 0; t < Q; ++t)
    for (int64_t d = 0; d < dk; ++d) {
      const float cl = cum[(Q - 1) * w + (c.per_channel ? d : 0)], ct = cum[t * w + (c.per_channel ? d : 0)];
      gr.dk[t * gr.ldk + d] = dke[t * dk + d] * std::exp(cl - ct);
      const double dl = double(dke[t * dk + d]) * ke[t * dk + d];
      dc(Q - 1, d) += dl, dc(t, d) -= dl;
    }
  for (int64_t d = 0; d < dk; ++d) {
    const float e = std::exp(cum[(Q - 1) * w + (c.per_channel ? d : 0)]);
    for (int64_t j = 0; j < dv; ++j) dS[d * dv + j] *= e;
  }
  // o = P v + qe S0.
  ops::gemm_tn(dk, dv, Q, 1.0f, qe, dk, dO, lddo, 1.0f, dS, dv);
  ops::gemm(Q, dk, dv, 1.0f, dO, lddo, S0, dv, true, 0.0f, dqe, dk);  // dO S0^T
  for (int64_t t = 0; t < Q; ++t)
    for (int64_t d = 0; d < dk; ++d) {
      gr.dq[t * gr.ldq + d] = dqe[t * dk + d] * std::exp(cum[t * w + (c.per_channel ? d : 0)]);
      dc(t, d) += double(dqe[t * dk + d]) * qe[t * dk + d];
    }
  ops::gemm(Q, Q, dv, 1.0f, dO, lddo, c.v, c.ldv, true, 0.0f, dP, Q);  // dO v^T
  if (!c.per_channel) {
    for (int64_t i = 0; i < Q; ++i) {
      for (int64_t j = 0; j <= i; ++j) {
        const size_t ij = size_t(i * Q + j);
        const double dl = double(dP[ij]) * P[ij];
        dcum[size_t(i)] += dl, dcum[size_t(j)] -= dl;
        dP[ij] *= std::exp(cum[i] - cum[j]);
      }
      for (int64_t j = i + 1; j < Q; ++j) dP[size_t(i * Q + j)] = 0.0f;
    }
    ops::gemm(Q, dk, Q, 1.0f, dP, Q, c.k, c.ldk, false, 1.0f, gr.dq, gr.ldq);
    ops::gemm_tn(Q, dk, Q, 1.0f, dP, Q, c.q, c.ldq, 1.0f, gr.dk, gr.ldk);
  } else {
    // P_ij = sum_d q_id k_jd exp(c_id - c_jd).
    for (int64_t i = 0; i < Q; ++i) {
      const float* qi = c.q + i * c.ldq;
      const float* ci = cum + i * dk;
      float* gqi = gr.dq + i * gr.ldq;
      for (int64_t j = 0; j <= i; ++j) {
        const float* kj = c.k + j * c.ldk;
        const float* cj = cum + j * dk;
        float* gkj = gr.dk + j * gr.ldk;
        const float g = dP[size_t(i * Q + j)];
        for (int64_t d = 0; d < dk; ++d) {
          const float e = g * std::exp(ci[d] - cj[d]);
          gqi[d] += e * kj[d];
          gkj[d] += e * qi[d];
          const double dl = double(e) * qi[d] * kj[d];
          dcum[size_t(i * dk + d)] += dl, dcum[size_t(j * dk + d)] -= dl;
        }
      }
    }
  }
  // cum = cumulative sum of g: dg_t = sum_{s >= t} dcum_s.
  for (int64_t d = 0; d < w; ++d) {
    double suf = 0;
    for (int64_t t = Q - 1; t >= 0; --t) {
      suf += dcum[size_t(t * w + d)];
      gr.dg[t * (c.per_channel ? gr.ldg : 1) + d] = float(suf);
    }
  }
}

}  // namespace braid
