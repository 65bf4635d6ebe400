// Backward of the mLSTM mixer for a sequence that starts from an empty state, in the
// forward's chunked form. Per head and chunk, from the chunk-start state (C0, n0, m0):
//   b_t = sum_{j<=t} log sigmoid(f_j),  m_t = max(b_t + m0, max_{j<=t} b_t - b_j + i_j),
//   D_tj = exp(b_t - b_j + i_j - m_t),  M = (scale Q K^T) o D,  e_t = exp(b_t + m0 - m_t),
//   num_t = scale e_t q_t C0 + sum_j M_tj v_j,  s_t = scale e_t q_t . n0 + sum_j M_tj,
//   h_t = num_t / (max(|s_t|, exp(-m_t)) + eps),
// and the chunk-end state from the same quantities. Everything is differentiated as
// written, the stabilisers m included (routed to the argument that attains each max), as
// automatic differentiation of the reference does: m cancels from h except through eps.
// Chunk-start states are kept from a first sweep; the reverse sweep recomputes a chunk's
// intermediates from its start state.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "mixers/mlstm.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

namespace {

using Vec = std::vector<float>;
Vec zeros(int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); }

// One head's view of the projections (row strides QK for q, k; V for v; H for the gates).
struct HeadIn {
  const float *q, *k, *v, *ig, *fg;
  int64_t QK, V, H, dk, dv;
  float scale, eps;
};

// A chunk's intermediates, recomputed from its start state.
struct ChunkWork {
  Vec b, m, e, s, lo, den, D, M, Qe, num;
  std::vector<int64_t> arg;  // -1: m_t = b_t + m0; else the j attaining it
  explicit ChunkWork(int64_t Q, int64_t dk, int64_t dv)
      : b(zeros(Q)),
        m(zeros(Q)),
        e(zeros(Q)),
        s(zeros(Q)),
        lo(zeros(Q)),
        den(zeros(Q)),
        D(zeros(Q * Q)),
        M(zeros(Q * Q)),
        Qe(zeros(Q * dk)),
        num(zeros(Q * dv)),
        arg(static_cast<size_t>(Q), -1) {}
};

// The stabiliser max(base, max_j top - b_j + i_j) over j < n and the j attaining it (-1: base).
float stab_max(float base, float top, const float* b, const float* ig, int64_t H, int64_t n, int64_t* arg) {
  float mx = base;
  *arg = -1;
  for (int64_t j = 0; j < n; ++j) {
    const float c = top - b[j] + ig[j * H];
    if (c > mx) mx = c, *arg = j;
  }
  return mx;
}

// Forward of tokens [t0, t0 + Q) of one head from (C0, n0, m0): fills w and writes h[t]
// (stride V).
void chunk_forward(const HeadIn& in, int64_t t0, int64_t Q, const float* C0, const float* n0, float m0,
                   ChunkWork& w, float* h) {
  const int64_t dk = in.dk, dv = in.dv, H = in.H;
  const float* q = in.q + t0 * in.QK;
  const float* k = in.k + t0 * in.QK;
  const float* v = in.v + t0 * in.V;
  const float* ig = in.ig + t0 * H;
  float acc = 0.0f;
  for (int64_t t = 0; t < Q; ++t) w.b[size_t(t)] = acc += ops::log_sigmoid(in.fg[(t0 + t) * H]);
  for (int64_t t = 0; t < Q; ++t)
    w.m[size_t(t)] =
        stab_max(w.b[size_t(t)] + m0, w.b[size_t(t)], w.b.data(), ig, H, t + 1, &w.arg[size_t(t)]);
  ops::gemm(Q, Q, dk, in.scale, q, in.QK, k, in.QK, true, 0.0f, w.M.data(), Q);
  for (int64_t t = 0; t < Q; ++t) {
    const float bt = w.b[size_t(t)], mt = w.m[size_t(t)];
    float rs = 0.0f;
    for (int64_t j = 0; j < Q; ++j) {
      const float d = j <= t ? std::exp(bt - w.b[size_t(j)] + ig[j * H] - mt) : 0.0f;
      w.D[size_t(t * Q + j)] = d;
      rs += w.M[size_t(t * Q + j)] *= d;
    }
    const float e = std::exp(bt + m0 - mt);
    w.e[size_t(t)] = e;
    float qn = 0.0f;
    for (int64_t d = 0; d < dk; ++d) {
      w.Qe[size_t(t * dk + d)] = q[t * in.QK + d] * in.scale * e;
      qn += w.Qe[size_t(t * dk + d)] * n0[d];
    }
    w.s[size_t(t)] = qn + rs;
    w.lo[size_t(t)] = std::exp(-mt);
    w.den[size_t(t)] = std::max(std::abs(w.s[size_t(t)]), w.lo[size_t(t)]) + in.eps;
  }
  ops::gemm(Q, dv, Q, 1.0f, w.M.data(), Q, v, in.V, false, 0.0f, w.num.data(), dv);
  ops::gemm(Q, dv, dk, 1.0f, w.Qe.data(), dk, C0, dv, false, 1.0f, w.num.data(), dv);
  for (int64_t t = 0; t < Q; ++t)
    for (int64_t j = 0; j < dv; ++j) h[t * in.V + j] = w.num[size_t(t * dv + j)] / w.den[size_t(t)];
}

// The chunk-end state's log scale and the weights of the chunk's keys in it.
struct ChunkEnd {
  float m1, decay;
  int64_t arg;
  Vec wt;
};
ChunkEnd chunk_end(const HeadIn& in, int64_t t0, int64_t Q, const ChunkWork& w, float m0) {
  ChunkEnd ce;
  const float bl = w.b[size_t(Q - 1)];
  ce.m1 = stab_max(bl + m0, bl, w.b.data(), in.ig + t0 * in.H, in.H, Q, &ce.arg);
  ce.decay = std::exp(bl + m0 - ce.m1);
  ce.wt = zeros(Q);
  for (int64_t j = 0; j < Q; ++j)
    ce.wt[size_t(j)] = std::exp(bl - w.b[size_t(j)] + in.ig[(t0 + j) * in.H] - ce.m1);
  return ce;
}

}  // namespace

void MlstmMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t H = s_.n_heads, QK = s_.qk_dim, V = s_.v_dim, dk = QK / H, dv = V / H;
  const int64_t CS = s_.chunk > 0 ? s_.chunk : 64, nch = (T + CS - 1) / CS;
  Vec q = zeros(T * QK), k = zeros(T * QK), v = zeros(T * V), o = zeros(T * V), ig = zeros(T * H),
      fg = zeros(T * H);
  const ops::Projection pr[6] = {{w_.q, QK, nullptr, q.data()},        {w_.k, QK, nullptr, k.data()},
                                 {w_.v, V, nullptr, v.data()},         {w_.o, V, nullptr, o.data()},
                                 {w_.igate, H, w_.igate_b, ig.data()}, {w_.fgate, H, w_.fgate_b, fg.data()}};
  ops::linear_multi(x, T, d_, pr, 6);
  // Both gates are soft-capped (as in the forward).
  const float cap = float(s_.gate_soft_cap);
  Vec ig_raw, fg_raw;
  if (cap > 0) {
    ig_raw = ig, fg_raw = fg;
    for (float& a : ig) a = cap * std::tanh(a / cap);
    for (float& a : fg) a = cap * std::tanh(a / cap);
  }
  const float scale = float(1.0 / std::sqrt(double(dk))), eps = float(s_.eps);
  auto head_in = [&](int64_t h) {
    return HeadIn{q.data() + h * dk,
                  k.data() + h * dk,
                  v.data() + h * dv,
                  ig.data() + h,
                  fg.data() + h,
                  QK,
                  V,
                  H,
                  dk,
                  dv,
                  scale,
                  eps};
  };
  // Sweep 1: chunk-start states and every h_t (pre-norm).
  Vec Cs = zeros(H * nch * dk * dv), ns = zeros(H * nch * dk), ms = zeros(H * nch), hb = zeros(T * V);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    const HeadIn in = head_in(h);
    Vec C = zeros(dk * dv), n = zeros(dk);
    float m = 0.0f;
    ChunkWork w(CS, dk, dv);
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t t0 = c * CS, Q = std::min(CS, T - t0);
      std::copy(C.begin(), C.end(), Cs.begin() + (h * nch + c) * dk * dv);
      std::copy(n.begin(), n.end(), ns.begin() + (h * nch + c) * dk);
      ms[size_t(h * nch + c)] = m;
      chunk_forward(in, t0, Q, C.data(), n.data(), m, w, hb.data() + t0 * V + h * dv);
      if (c + 1 == nch) break;
      const ChunkEnd ce = chunk_end(in, t0, Q, w, m);
      for (float& a : C) a *= ce.decay;
      for (float& a : n) a *= ce.decay;
      Vec kw = zeros(Q * dk);
      for (int64_t j = 0; j < Q; ++j)
        for (int64_t d = 0; d < dk; ++d) {
          kw[size_t(j * dk + d)] = in.k[(t0 + j) * QK + d] * ce.wt[size_t(j)];
          n[size_t(d)] += kw[size_t(j * dk + d)];
        }
      ops::gemm_tn(dk, dv, Q, 1.0f, kw.data(), dk, in.v + t0 * V, V, 1.0f, C.data(), dv);
      m = ce.m1;
    }
  }
  // Output side: per-head LayerNorm (weight only) times sigmoid(o), then out_proj.
  Vec out = zeros(T * V), xhat = zeros(T * V);
  const float neps = float(s_.norm_eps);
  for (int64_t r = 0; r < T * H; ++r) {
    const float* hr = hb.data() + r * dv;
    double mean = 0, var = 0;
    for (int64_t j = 0; j < dv; ++j) mean += hr[j];
    mean /= double(dv);
    for (int64_t j = 0; j < dv; ++j) var += (hr[j] - mean) * (hr[j] - mean);
    const float mu = float(mean), inv = float(1.0 / std::sqrt(var / double(dv) + neps));
    const int64_t hh = r % H;
    for (int64_t j = 0; j < dv; ++j) {
      const size_t i = size_t(r * dv + j);
      xhat[i] = (hr[j] - mu) * inv;
      out[i] = ops::sigmoid(o[i]) * xhat[i] * w_.norm[hh * dv + j];
    }
  }
  Vec dout = zeros(T * V), dnorm = zeros(T * V), dhb = zeros(T * V), dO = zeros(T * V);
  ops::linear_backward(out.data(), T, V, w_.out_proj, d_, dy, dout.data(), false, gs.of(w_.out_proj),
                       nullptr);
  for (int64_t i = 0; i < T * V; ++i) {
    const float sg = ops::sigmoid(o[size_t(i)]), nw = xhat[size_t(i)] * w_.norm[i % V];
    dO[size_t(i)] = dout[size_t(i)] * nw * sg * (1.0f - sg);
    dnorm[size_t(i)] = dout[size_t(i)] * sg;
  }
  {
    // Rows of one head are strided; gather each head's into contiguous rows.
    Vec hx = zeros(T * dv), hg = zeros(T * dv), hd = zeros(T * dv);
    float* dnw = gs.of(w_.norm);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::memcpy(&hx[size_t(t * dv)], &hb[size_t(t * V + h * dv)], size_t(dv) * 4);
        std::memcpy(&hg[size_t(t * dv)], &dnorm[size_t(t * V + h * dv)], size_t(dv) * 4);
      }
      ops::layernorm_backward(hx.data(), w_.norm + h * dv, neps, T, dv, hg.data(), hd.data(), false,
                              dnw ? dnw + h * dv : nullptr, nullptr);
      for (int64_t t = 0; t < T; ++t)
        std::memcpy(&dhb[size_t(t * V + h * dv)], &hd[size_t(t * dv)], size_t(dv) * 4);
    }
  }
  // Sweep 2, in reverse over chunks: dC, dn, dm are the gradients of the current chunk's
  // end state (the next chunk's start state).
  Vec dq = zeros(T * QK), dk_ = zeros(T * QK), dv_ = zeros(T * V), dig = zeros(T * H), dfg = zeros(T * H);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    const HeadIn in = head_in(h);
    ChunkWork w(CS, dk, dv);
    Vec dC = zeros(dk * dv), dn = zeros(dk), hscr = zeros(CS * V);
    Vec dNum = zeros(CS * dv), dM = zeros(CS * CS), dQe = zeros(CS * dk), U = zeros(CS * dv),
        VC = zeros(CS * dk), db = zeros(CS), ds = zeros(CS), dmt = zeros(CS);
    float dm1 = 0.0f;
    for (int64_t c = nch - 1; c >= 0; --c) {
      const int64_t t0 = c * CS, Q = std::min(CS, T - t0);
      const float* C0 = Cs.data() + (h * nch + c) * dk * dv;
      const float* n0 = ns.data() + (h * nch + c) * dk;
      const float m0 = ms[size_t(h * nch + c)];
      chunk_forward(in, t0, Q, C0, n0, m0, w, hscr.data());
      const float* qc = in.q + t0 * QK;
      const float* kc = in.k + t0 * QK;
      const float* vc = in.v + t0 * V;
      float* dqc = dq.data() + t0 * QK + h * dk;
      float* dkc = dk_.data() + t0 * QK + h * dk;
      float* dvc = dv_.data() + t0 * V + h * dv;
      float* digc = dig.data() + t0 * H + h;
      std::fill(db.begin(), db.end(), 0.0f);
      std::fill(dmt.begin(), dmt.end(), 0.0f);
      float dm0 = 0.0f;
      // The chunk-end state C1 = decay C0 + sum_j w_j k_j v_j^T, n1 = decay n0 + sum_j w_j k_j.
      if (c + 1 < nch) {
        const ChunkEnd ce = chunk_end(in, t0, Q, w, m0);
        ops::gemm(Q, dv, dk, 1.0f, kc, QK, dC.data(), dv, false, 0.0f, U.data(), dv);
        ops::gemm(Q, dk, dv, 1.0f, vc, V, dC.data(), dv, true, 0.0f, VC.data(), dk);
        double ddec = 0;
        for (int64_t i = 0; i < dk * dv; ++i) ddec += double(dC[size_t(i)]) * C0[i];
        for (int64_t d = 0; d < dk; ++d) ddec += double(dn[size_t(d)]) * n0[d];
        float dl1 = dm1;  // dL/dm1
        const float xdec = float(ddec) * ce.decay;
        db[size_t(Q - 1)] += xdec, dm0 += xdec, dl1 -= xdec;
        for (int64_t j = 0; j < Q; ++j) {
          const float wj = ce.wt[size_t(j)];
          float dwj = 0.0f;
          for (int64_t e = 0; e < dv; ++e) dwj += U[size_t(j * dv + e)] * vc[j * V + e];
          for (int64_t d = 0; d < dk; ++d) {
            dwj += dn[size_t(d)] * kc[j * QK + d];
            dkc[j * QK + d] += wj * (VC[size_t(j * dk + d)] + dn[size_t(d)]);
          }
          for (int64_t e = 0; e < dv; ++e) dvc[j * V + e] += wj * U[size_t(j * dv + e)];
          const float dl = dwj * wj;
          db[size_t(Q - 1)] += dl, db[size_t(j)] -= dl, digc[j * H] += dl, dl1 -= dl;
        }
        db[size_t(Q - 1)] += dl1;  // route dm1 to the term attaining the max
        if (ce.arg < 0)
          dm0 += dl1;
        else
          db[size_t(ce.arg)] -= dl1, digc[ce.arg * H] += dl1;
        for (float& a : dC) a *= ce.decay;
        for (float& a : dn) a *= ce.decay;
      }
      // Outputs: h_t = num_t / den_t.
      for (int64_t t = 0; t < Q; ++t) {
        const float* g = dhb.data() + (t0 + t) * V + h * dv;
        const float den = w.den[size_t(t)];
        float gh = 0.0f;
        for (int64_t e = 0; e < dv; ++e) {
          dNum[size_t(t * dv + e)] = g[e] / den;
          gh += g[e] * w.num[size_t(t * dv + e)] / den;
        }
        const float dden = -gh / den;
        if (std::abs(w.s[size_t(t)]) >= w.lo[size_t(t)])
          ds[size_t(t)] = w.s[size_t(t)] >= 0 ? dden : -dden;
        else
          ds[size_t(t)] = 0.0f, dmt[size_t(t)] -= dden * w.lo[size_t(t)];
      }
      ops::gemm(Q, Q, dv, 1.0f, dNum.data(), dv, vc, V, true, 0.0f, dM.data(), Q);
      ops::gemm_tn(Q, dv, Q, 1.0f, w.M.data(), Q, dNum.data(), dv, 1.0f, dvc, V);
      ops::gemm(Q, dk, dv, 1.0f, dNum.data(), dv, C0, dv, true, 0.0f, dQe.data(), dk);
      ops::gemm_tn(dk, dv, Q, 1.0f, w.Qe.data(), dk, dNum.data(), dv, 1.0f, dC.data(), dv);
      for (int64_t t = 0; t < Q; ++t) {
        const float st = ds[size_t(t)];
        float de = 0.0f;
        for (int64_t d = 0; d < dk; ++d) {
          dn[size_t(d)] += w.Qe[size_t(t * dk + d)] * st;
          const float g = dQe[size_t(t * dk + d)] + n0[d] * st;
          de += g * qc[t * QK + d];
          dqc[t * QK + d] += g * scale * w.e[size_t(t)];
        }
        const float dle = de * scale * w.e[size_t(t)];  // through e_t = exp(b_t + m0 - m_t)
        db[size_t(t)] += dle, dm0 += dle, dmt[size_t(t)] -= dle;
        // M = S o D: dS = dM o D (into dM), dlog D = dM o M.
        for (int64_t j = 0; j <= t; ++j) {
          const size_t i = size_t(t * Q + j);
          const float g = dM[i] + st;
          const float dl = g * w.M[i];
          db[size_t(t)] += dl, db[size_t(j)] -= dl, digc[j * H] += dl, dmt[size_t(t)] -= dl;
          dM[i] = g * w.D[i];
        }
        for (int64_t j = t + 1; j < Q; ++j) dM[size_t(t * Q + j)] = 0.0f;
      }
      ops::gemm(Q, dk, Q, scale, dM.data(), Q, kc, QK, false, 1.0f, dqc, QK);
      ops::gemm_tn(Q, dk, Q, scale, dM.data(), Q, qc, QK, 1.0f, dkc, QK);
      for (int64_t t = 0; t < Q; ++t) {  // route dm_t to the term attaining the max
        const float g = dmt[size_t(t)];
        db[size_t(t)] += g;
        const int64_t j = w.arg[size_t(t)];
        if (j < 0)
          dm0 += g;
        else
          db[size_t(j)] -= g, digc[j * H] += g;
      }
      // b_t = cumsum log sigmoid(f): df_t = (sum_{t' >= t} db_t') sigmoid(-f_t).
      float suf = 0.0f;
      for (int64_t t = Q - 1; t >= 0; --t) {
        suf += db[size_t(t)];
        dfg[size_t((t0 + t) * H + h)] = suf * ops::sigmoid(-fg[size_t((t0 + t) * H + h)]);
      }
      dm1 = c > 0 ? dm0 : 0.0f;  // the first chunk starts from the constant m = 0
    }
  }
  if (cap > 0)
    for (int64_t i = 0; i < T * H; ++i) {
      const float ti = std::tanh(ig_raw[size_t(i)] / cap), tf = std::tanh(fg_raw[size_t(i)] / cap);
      dig[size_t(i)] *= 1.0f - ti * ti;
      dfg[size_t(i)] *= 1.0f - tf * tf;
    }
  struct Back {
    ops::MatRef W;
    const float* b;
    int64_t n;
    const Vec& g;
  };
  const Back back[6] = {{w_.q, nullptr, QK, dq},        {w_.k, nullptr, QK, dk_},
                        {w_.v, nullptr, V, dv_},        {w_.o, nullptr, V, dO},
                        {w_.igate, w_.igate_b, H, dig}, {w_.fgate, w_.fgate_b, H, dfg}};
  for (int i = 0; i < 6; ++i)
    ops::linear_backward(x, T, d_, back[i].W, back[i].n, back[i].g.data(), dx, i > 0, gs.of(back[i].W),
                         gs.of(back[i].b));
}

}  // namespace braid
