// Backward of the Gated DeltaNet mixer for a sequence that starts from an empty state, in
// the forward's chunked (WY / UT-transform) form. Per value head and chunk, from the
// chunk-start state S0, with c the cumulative log decay inside the chunk:
//   A_ij = b_i exp(c_i - c_j) k_i.k_j (j < i),  vnew = (I + A)^-1 (b v - b exp(c) k S0),
//   o = P vnew + exp(c) q S0  (P_ij = q_i.k_j exp(c_i - c_j), j <= i),
//   S_end = exp(c_last) S0 + (exp(c_last - c) k)^T vnew,
// differentiated with GEMMs and one transposed triangular solve; the gradient of S_end is
// carried from chunk to chunk in reverse. Only the chunk-start states are kept (from a first
// sweep that also gives the outputs); each chunk's intermediates are recomputed from its
// start state by the same function the forward uses (gdn_chunk_head).
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "mixers/gated_deltanet.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

namespace {

// Backward of y = x / sqrt(|x|^2 + 1e-6) * scale: dx = scale inv (dy - xhat (xhat . dy)),
// xhat = x inv.
void l2_normalize_backward(const float* x, const float* dy, int64_t n, float scale, float* dx) {
  double ss = 0, xd = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i], xd += double(x[i]) * dy[i];
  const double inv = 1.0 / std::sqrt(ss + 1e-6);
  for (int64_t i = 0; i < n; ++i) dx[i] = float(scale * inv * (dy[i] - x[i] * xd * inv * inv));
}

}  // namespace

void GatedDeltaNetMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t NK = s_.n_k_heads, NV = s_.n_v_heads, DK = s_.head_k_dim, DV = s_.head_v_dim;
  const int64_t R = NV / NK, KD = s_.key_dim(), VD = s_.value_dim(), CD = s_.conv_dim();
  const int64_t E = 2 * KD + 2 * VD, K = s_.d_conv, C = s_.chunk, SZ = DK * DV;
  using Vec = std::vector<float>;
  auto vec = [](int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); };
  // Recompute the forward up to the recurrence's inputs.
  Vec proj = vec(T * E), ba = vec(T * 2 * NV), mixed = vec(T * CD), z = vec(T * VD), beta = vec(T * NV);
  Vec g = vec(T * NV), u = vec(T * CD), window = vec((K - 1) * CD);
  const ops::Projection p[2] = {{w_.in_proj_qkvz, E, nullptr, proj.data()},
                                {w_.in_proj_ba, 2 * NV, nullptr, ba.data()}};
  ops::linear_multi(x, T, d_, p, 2);
  unpack(proj.data(), ba.data(), T, mixed.data(), z.data(), beta.data(), g.data());
  ops::causal_conv1d(mixed.data(), CD, T, CD, w_.conv_w, nullptr, K, false, window.data(), u.data());
  Vec act(u), qkv;  // silu(u); then q, k normalised
  ops::silu_inplace(act.data(), T * CD);
  qkv = act;
  const float qscale = float(1.0 / std::sqrt(double(DK)));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t kh = 0; kh < NK; ++kh) {
      gdn_l2_normalize(&qkv[size_t(t * CD + kh * DK)], DK, qscale);
      gdn_l2_normalize(&qkv[size_t(t * CD + KD + kh * DK)], DK, 1.0f);
    }
  const int64_t nchunks = (T + C - 1) / C;
  // Sweep 1, in the forward's chunked form: outputs o and the state at each chunk start.
  Vec o = vec(T * VD), ck = vec(NV * nchunks * SZ);
  const size_t per = GdnChunkWork::floats(C, DK, DV);
  auto head = [&](int64_t h) {
    struct {
      const float *q, *k, *v;
    } p{qkv.data() + (h / R) * DK, qkv.data() + KD + (h / R) * DK, qkv.data() + 2 * KD + h * DV};
    return p;
  };
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < NV; ++h) {
    Vec S = vec(SZ), scratch(per);
    const GdnChunkWork w(scratch.data(), C, DK, DV);
    const auto hp = head(h);
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t t0 = c * C, n = std::min(C, T - t0);
      std::memcpy(&ck[size_t((h * nchunks + c) * SZ)], S.data(), size_t(SZ) * 4);
      const GdnChunkWork wn(scratch.data(), n, DK, DV);
      gdn_chunk_head(hp.q + t0 * CD, hp.k + t0 * CD, hp.v + t0 * CD, CD, &beta[size_t(t0 * NV + h)],
                     &g[size_t(t0 * NV + h)], NV, n, DK, DV, S.data(), true, &o[size_t(t0 * VD + h * DV)], VD,
                     wn);
    }
  }
  // Output: rmsnorm per head, gate silu(z), out_proj.
  Vec normed = vec(T * VD), gated = vec(T * VD), dgated = vec(T * VD);
  ops::rmsnorm(o.data(), w_.norm, float(s_.norm_eps), T * NV, DV, normed.data());
  for (int64_t i = 0; i < T * VD; ++i)
    gated[size_t(i)] = normed[size_t(i)] * z[size_t(i)] * ops::sigmoid(z[size_t(i)]);
  ops::linear_backward(gated.data(), T, VD, w_.out_proj, d_, dy, dgated.data(), false, gs.of(w_.out_proj),
                       nullptr);
  Vec dz = vec(T * VD), dnormed = vec(T * VD), dout = vec(T * VD);
  for (int64_t i = 0; i < T * VD; ++i) {
    const float zi = z[size_t(i)], sg = ops::sigmoid(zi);
    dnormed[size_t(i)] = dgated[size_t(i)] * zi * sg;
    dz[size_t(i)] = dgated[size_t(i)] * normed[size_t(i)] * sg * (1.0f + zi * (1.0f - sg));
  }
  ops::rmsnorm_backward(o.data(), w_.norm, float(s_.norm_eps), T * NV, DV, dnormed.data(), dout.data(), false,
                        gs.of(w_.norm));
  // Sweep 2, in reverse over chunks per value head (the chunked form differentiated; see
  // the header comment). q / k are shared by the R value heads of a key head, so their
  // gradients are written per value head and summed after.
  Vec dqh = vec(NV * T * DK), dkh = vec(NV * T * DK), dqkv = vec(T * CD), dbeta = vec(T * NV),
      dg = vec(T * NV);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < NV; ++h) {
    Vec scratch(per), dS = vec(SZ), dvn = vec(C * DV), dP = vec(C * C), X = vec(C * DK), Z = vec(C * DV),
                      dKd = vec(C * DK), KK = vec(C * C);
    // dL/dc: every pair (i, j) adds to c_i and subtracts from c_j, so the suffix sums below
    // cancel large terms; double keeps that cancellation exact.
    std::vector<double> dc(static_cast<size_t>(C));
    const auto hp = head(h);
    for (int64_t c = nchunks - 1; c >= 0; --c) {
      const int64_t t0 = c * C, n = std::min(C, T - t0);
      const GdnChunkWork w(scratch.data(), n, DK, DV);
      const float* S0 = &ck[size_t((h * nchunks + c) * SZ)];
      const float* q = hp.q + t0 * CD;
      const float* k = hp.k + t0 * CD;
      const float* v = hp.v + t0 * CD;
      const float* bt = &beta[size_t(t0 * NV + h)];
      gdn_chunk_head(q, k, v, CD, bt, &g[size_t(t0 * NV + h)], NV, n, DK, DV, const_cast<float*>(S0), false,
                     nullptr, 0, w);
      const float* dO = &dout[size_t(t0 * VD + h * DV)];  // rows stride VD
      float* dq = &dqh[size_t((h * T + t0) * DK)];        // rows DK
      float* dk = &dkh[size_t((h * T + t0) * DK)];
      float* dv = &dqkv[size_t(t0 * CD + 2 * KD + h * DV)];  // rows stride CD
      std::fill(dc.begin(), dc.end(), 0.0);
      const float last = w.c[n - 1], elast = std::exp(last);
      // dS holds dL/dS_end. S_end = exp(c_last) S0 + kd^T vnew.
      double dS0 = 0;
      for (int64_t i = 0; i < SZ; ++i) dS0 += double(dS[size_t(i)]) * S0[i];
      dc[size_t(n - 1)] += dS0 * elast;
      ops::gemm(n, DK, DV, 1.0f, w.vnew, DV, dS.data(), DV, true, 0.0f, dKd.data(), DK);  // vnew dS^T
      for (int64_t i = 0; i < n; ++i) {
        const float e = std::exp(last - w.c[i]);
        float s = 0.0f;
        for (int64_t j = 0; j < DK; ++j) {
          dk[i * DK + j] = e * dKd[size_t(i * DK + j)];
          s += dKd[size_t(i * DK + j)] * w.kd[i * DK + j];
        }
        dc[size_t(n - 1)] += s, dc[size_t(i)] -= s;
      }
      // dvnew = P^T dO + kd dS.
      ops::gemm_tn(n, DV, n, 1.0f, w.P, n, dO, VD, 0.0f, dvn.data(), DV);
      ops::gemm(n, DV, DK, 1.0f, w.kd, DK, dS.data(), DV, false, 1.0f, dvn.data(), DV);
      for (float& a : dS) a *= elast;  // dS0 so far: exp(c_last) dS_end
      // o = P vnew + qe S0. dP = dO vnew^T (j <= i); P = (q k^T) o exp(c_i - c_j).
      ops::gemm(n, n, DV, 1.0f, dO, VD, w.vnew, DV, true, 0.0f, dP.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j <= i; ++j) {
          const size_t ij = size_t(i * n + j);
          const float dl = dP[ij] * w.P[ij];
          dc[size_t(i)] += dl, dc[size_t(j)] -= dl;
          dP[ij] *= std::exp(w.c[i] - w.c[j]);
        }
        for (int64_t j = i + 1; j < n; ++j) dP[size_t(i * n + j)] = 0.0f;
      }
      ops::gemm(n, DK, n, 1.0f, dP.data(), n, k, CD, false, 0.0f, X.data(), DK);  // into dq below
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < DK; ++j) dq[i * DK + j] = X[size_t(i * DK + j)];
      ops::gemm_tn(n, DK, n, 1.0f, dP.data(), n, q, CD, 1.0f, dk, DK);
      ops::gemm_tn(DK, DV, n, 1.0f, w.qe, DK, dO, VD, 1.0f, dS.data(), DV);
      ops::gemm(n, DK, DV, 1.0f, dO, VD, S0, DV, true, 0.0f, X.data(), DK);  // dO S0^T
      for (int64_t i = 0; i < n; ++i) {
        float s = 0.0f;
        const float ec = std::exp(w.c[i]);
        for (int64_t j = 0; j < DK; ++j) {
          dq[i * DK + j] += ec * X[size_t(i * DK + j)];
          s += X[size_t(i * DK + j)] * w.qe[i * DK + j];
        }
        dc[size_t(i)] += s;
      }
      // vnew = (I + A)^-1 Y, Y = b v - b exp(c) k S0: dY = (I + A)^-T dvnew, dA = -dY vnew^T.
      ops::solve_unit_lower_transposed(n, DV, w.A, n, dvn.data(), DV);
      // A_ij = b_i exp(c_i - c_j) k_i . k_j (j < i): with E_ij = dA_ij b_i exp(c_i - c_j),
      // dk += E k + E^T k; d(log A_ij) = dA_ij A_ij; nothing is divided by b or exp(c).
      ops::gemm(n, n, DV, -1.0f, dvn.data(), DV, w.vnew, DV, true, 0.0f, dP.data(), n);
      ops::gemm(n, n, DK, 1.0f, k, CD, k, CD, true, 0.0f, KK.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const float b = bt[i * NV];
        float db = 0.0f;
        for (int64_t j = 0; j < i; ++j) {
          const size_t ij = size_t(i * n + j);
          const float dA = dP[ij], gam = std::exp(w.c[i] - w.c[j]);
          const float dl = dA * w.A[ij];
          dc[size_t(i)] += dl, dc[size_t(j)] -= dl;
          db += dA * gam * KK[ij];
          dP[ij] = dA * b * gam;
        }
        dbeta[size_t((t0 + i) * NV + h)] = db;
        for (int64_t j = i; j < n; ++j) dP[size_t(i * n + j)] = 0.0f;
      }
      // Y = b v - b exp(c) k S0.
      ops::gemm(n, DV, DK, 1.0f, k, CD, S0, DV, false, 0.0f, Z.data(), DV);  // k S0
      for (int64_t i = 0; i < n; ++i) {
        const float b = bt[i * NV], ec = std::exp(w.c[i]);
        float db = 0.0f, dz = 0.0f;
        for (int64_t j = 0; j < DV; ++j) {
          const float dy = dvn[size_t(i * DV + j)], zz = Z[size_t(i * DV + j)];
          dv[i * CD + j] = b * dy;
          db += dy * (v[i * CD + j] - ec * zz);
          dz += dy * zz;
          Z[size_t(i * DV + j)] = -b * ec * dy;  // dL/d(k S0)
        }
        dbeta[size_t((t0 + i) * NV + h)] += db;
        dc[size_t(i)] -= b * ec * dz;
      }
      ops::gemm(n, DK, DV, 1.0f, Z.data(), DV, S0, DV, true, 1.0f, dk, DK);
      ops::gemm_tn(DK, DV, n, 1.0f, k, CD, Z.data(), DV, 1.0f, dS.data(), DV);
      ops::gemm(n, DK, n, 1.0f, dP.data(), n, k, CD, false, 1.0f, dk, DK);
      ops::gemm_tn(n, DK, n, 1.0f, dP.data(), n, k, CD, 1.0f, dk, DK);
      // c = cumulative sum of g within the chunk.
      double suf = 0;
      for (int64_t i = n - 1; i >= 0; --i) dg[size_t((t0 + i) * NV + h)] = float(suf += dc[size_t(i)]);
    }
  }
  // q / k gradients summed over the value heads of each key head, then back through the
  // l2 normalisation (on silu(u)), the SiLU and the convolution.
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < NV; ++h) {
      float* dq = &dqkv[size_t(t * CD + (h / R) * DK)];
      float* dk = &dqkv[size_t(t * CD + KD + (h / R) * DK)];
      const float* sq = &dqh[size_t((h * T + t) * DK)];
      const float* sk = &dkh[size_t((h * T + t) * DK)];
      for (int64_t i = 0; i < DK; ++i) dq[i] += sq[i], dk[i] += sk[i];
    }
  Vec tmp = vec(DK);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t kh = 0; kh < NK; ++kh)
      for (int key = 0; key < 2; ++key) {
        const int64_t off = t * CD + (key ? KD : 0) + kh * DK;
        l2_normalize_backward(&act[size_t(off)], &dqkv[size_t(off)], DK, key ? 1.0f : qscale, tmp.data());
        std::memcpy(&dqkv[size_t(off)], tmp.data(), size_t(DK) * 4);
      }
  Vec du = vec(T * CD), dmixed = vec(T * CD);
  ops::silu_backward(u.data(), dqkv.data(), T * CD, du.data());
  ops::causal_conv1d_backward(mixed.data(), CD, T, CD, w_.conv_w, K, du.data(), dmixed.data(),
                              gs.of(w_.conv_w), nullptr);
  // Back into the projections' interleaved layout; beta = sigmoid(b), g = A softplus(alpha + dt_bias).
  Vec dproj = vec(T * E), dba = vec(T * 2 * NV);
  float* dA_log = gs.of(w_.A_log);
  float* ddt = gs.of(w_.dt_bias);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t kh = 0; kh < NK; ++kh) {
      float* dst = &dproj[size_t(t * E + kh * (2 * DK + 2 * R * DV))];
      const float* row = &dmixed[size_t(t * CD)];
      std::memcpy(dst, row + kh * DK, size_t(DK) * 4);
      std::memcpy(dst + DK, row + KD + kh * DK, size_t(DK) * 4);
      std::memcpy(dst + 2 * DK, row + 2 * KD + kh * R * DV, size_t(R * DV) * 4);
      std::memcpy(dst + 2 * DK + R * DV, &dz[size_t(t * VD + kh * R * DV)], size_t(R * DV) * 4);
      const float* b = &ba[size_t(t * 2 * NV + kh * 2 * R)];
      float* db = &dba[size_t(t * 2 * NV + kh * 2 * R)];
      for (int64_t j = 0; j < R; ++j) {
        const int64_t h = kh * R + j;
        const float bt = beta[size_t(t * NV + h)], dgt = dg[size_t(t * NV + h)];
        db[j] = dbeta[size_t(t * NV + h)] * bt * (1.0f - bt);
        const float pre = b[R + j] + w_.dt_bias[h];
        const float dpre = dgt * A(h) * (pre > 20.0f ? 1.0f : ops::sigmoid(pre));
        db[R + j] = dpre;
        if (ddt) ddt[h] += dpre;
        if (dA_log) dA_log[h] += dgt * g[size_t(t * NV + h)];  // dg / dA_log = g
      }
    }
  ops::linear_backward(x, T, d_, w_.in_proj_qkvz, E, dproj.data(), dx, false, gs.of(w_.in_proj_qkvz),
                       nullptr);
  ops::linear_backward(x, T, d_, w_.in_proj_ba, 2 * NV, dba.data(), dx, true, gs.of(w_.in_proj_ba), nullptr);
}

}  // namespace braid
