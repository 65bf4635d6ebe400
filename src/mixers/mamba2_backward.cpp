// Backward of the Mamba-2 (SSD) mixer for a sequence that starts from an empty state, in
// the forward's chunked (state-space dual) form. Per head and chunk, from the chunk-start
// state S0 [P][N], with cum the cumulative log decay (dt A) inside the chunk:
//   y = M X + diag(exp(cum)) C S0^T + D X,  M_tj = (C_t . B_j) exp(cum_t - cum_j) dt_j (j <= t),
//   S_end = exp(cum_last) S0 + X^T diag(exp(cum_last - cum) dt) B,
// differentiated with GEMMs; the gradient of S_end is carried from chunk to chunk in
// reverse. Then the gate / grouped RMSNorm and out_proj. Only chunk-start states are kept;
// each chunk's intermediates are recomputed by the function the forward uses.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "mixers/mamba2.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void Mamba2Mixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t H = s_.n_heads, P = s_.head_dim, N = s_.d_state, G = s_.n_groups, Di = s_.d_inner();
  const int64_t GN = G * N, CD = Di + 2 * GN, E = Di + CD + H, hpg = H / G, SZ = P * N;
  const int64_t C = s_.chunk > 0 ? s_.chunk : 64, nchunks = (T + C - 1) / C;
  using Vec = std::vector<float>;
  auto vec = [](int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); };

  // Recompute the forward up to the scan's inputs.
  Vec zx = vec(T * E), pre = vec(T * CD), window = vec((s_.d_conv - 1) * CD);
  ops::linear(x, T, d_, w_.in_proj, E, w_.in_proj_b, zx.data());
  if (scaled_) scale_sections(zx.data(), zx.data() + T * E, zx.data(), E);
  ops::causal_conv1d(zx.data() + Di, E, T, CD, w_.conv_w, w_.conv_b, s_.d_conv, false, window.data(),
                     pre.data());
  Vec xbc(pre);
  ops::silu_inplace(xbc.data(), T * CD);
  Vec dtv = vec(T * H), dt = vec(T * H);  // softplus input, clamped dt
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const float v = zx[size_t(t * E + Di + CD + h)] + w_.dt_bias[h];
      float d = std::max(ops::softplus(v), float(s_.dt_min));
      if (s_.dt_max > 0) d = std::min(d, float(s_.dt_max));
      dtv[size_t(t * H + h)] = v, dt[size_t(t * H + h)] = d;
    }
  Vec la = vec(T * H);
  for (int64_t i = 0; i < T * H; ++i) la[size_t(i)] = dt[size_t(i)] * A_[size_t(i % H)];
  auto X = [&](int64_t t, int64_t h) { return &xbc[size_t(t * CD + h * P)]; };
  auto Bp = [&](int64_t t, int64_t h) { return &xbc[size_t(t * CD + Di + (h / hpg) * N)]; };
  auto Cp = [&](int64_t t, int64_t h) { return &xbc[size_t(t * CD + Di + GN + (h / hpg) * N)]; };
  const size_t per = SsdChunkWork::floats(C, P, N);
  // Sweep 1, in the forward's chunked form: y (before the gate) and the state at each chunk start.
  Vec yv = vec(T * Di), ck = vec(H * nchunks * SZ);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec S = vec(SZ), scratch(per);
    for (int64_t k = 0; k < nchunks; ++k) {
      const int64_t t0 = k * C, n = std::min(C, T - t0);
      std::memcpy(&ck[size_t((h * nchunks + k) * SZ)], S.data(), size_t(SZ) * 4);
      const SsdChunkWork w(scratch.data(), n, P, N);
      ssd_chunk_head(X(t0, h), Bp(t0, h), Cp(t0, h), CD, &dt[size_t(t0 * H + h)], &la[size_t(t0 * H + h)], H,
                     n, P, N, w_.D[h], S.data(), true, &yv[size_t(t0 * Di + h * P)], Di, w);
    }
  }

  // Gate and grouped RMSNorm, forward then backward, per token.
  const int64_t gsz = s_.norm_group_size > 0 ? s_.norm_group_size : Di;
  Vec outv = vec(T * Di), dout = vec(T * Di), dyv = vec(T * Di), dz = vec(T * Di);
  float* dnorm = s_.norm == Mamba2Norm::GateOnly ? nullptr : gs.of(w_.norm);
  // rms[t * (Di / gsz) + group] of the normed input, kept for the backward.
  Vec inv = vec(T * (Di / gsz)), normin = vec(T * Di);
  for (int64_t t = 0; t < T; ++t) {
    const float* z = &zx[size_t(t * E)];
    const float* y = &yv[size_t(t * Di)];
    float* v = &normin[size_t(t * Di)];
    for (int64_t i = 0; i < Di; ++i)
      v[i] = s_.norm == Mamba2Norm::GateThenNorm ? y[i] * z[i] * ops::sigmoid(z[i]) : y[i];
    float* o = &outv[size_t(t * Di)];
    if (s_.norm == Mamba2Norm::GateOnly) {
      for (int64_t i = 0; i < Di; ++i) o[i] = y[i] * z[i] * ops::sigmoid(z[i]);
      continue;
    }
    for (int64_t g0 = 0, gi = 0; g0 < Di; g0 += gsz, ++gi) {
      const double ss = ops::sum_squares(v + g0, gsz);
      const float r = float(1.0 / std::sqrt(ss / double(gsz) + s_.norm_eps));
      inv[size_t(t * (Di / gsz) + gi)] = r;
      for (int64_t i = g0; i < g0 + gsz; ++i) o[i] = w_.norm[i] * (v[i] * r);
    }
    if (s_.norm == Mamba2Norm::NormThenGate)
      for (int64_t i = 0; i < Di; ++i) o[i] *= z[i] * ops::sigmoid(z[i]);
  }
  ops::linear_backward(outv.data(), T, Di, w_.out_proj, d_, dy, dout.data(), false, gs.of(w_.out_proj),
                       gs.of(w_.out_proj_b));
  for (int64_t t = 0; t < T; ++t) {
    const float* z = &zx[size_t(t * E)];
    const float* y = &yv[size_t(t * Di)];
    const float* v = &normin[size_t(t * Di)];
    float* go = &dout[size_t(t * Di)];
    float* gz = &dz[size_t(t * Di)];
    float* gy = &dyv[size_t(t * Di)];
    auto dsilu = [](float zi) {
      const float sg = ops::sigmoid(zi);
      return sg * (1.0f + zi * (1.0f - sg));
    };
    if (s_.norm == Mamba2Norm::GateOnly) {
      for (int64_t i = 0; i < Di; ++i)
        gz[i] = go[i] * y[i] * dsilu(z[i]), gy[i] = go[i] * z[i] * ops::sigmoid(z[i]);
      continue;
    }
    Vec dn(go, go + Di);  // gradient of the norm's output
    if (s_.norm == Mamba2Norm::NormThenGate)
      for (int64_t i = 0; i < Di; ++i) {
        const float r = inv[size_t(t * (Di / gsz) + i / gsz)];
        gz[i] = go[i] * w_.norm[i] * v[i] * r * dsilu(z[i]);
        dn[size_t(i)] = go[i] * z[i] * ops::sigmoid(z[i]);
      }
    Vec dv = vec(Di);
    for (int64_t g0 = 0, gi = 0; g0 < Di; g0 += gsz, ++gi) {
      const double r = inv[size_t(t * (Di / gsz) + gi)];
      double dot = 0;
      for (int64_t i = g0; i < g0 + gsz; ++i) dot += double(dn[size_t(i)]) * w_.norm[i] * v[i];
      for (int64_t i = g0; i < g0 + gsz; ++i) {
        if (dnorm) dnorm[i] += float(dn[size_t(i)] * v[i] * r);
        dv[size_t(i)] = float(r * dn[size_t(i)] * w_.norm[i] - v[i] * r * r * r * dot / double(gsz));
      }
    }
    if (s_.norm == Mamba2Norm::GateThenNorm)
      for (int64_t i = 0; i < Di; ++i)
        gz[i] = dv[size_t(i)] * y[i] * dsilu(z[i]), gy[i] = dv[size_t(i)] * z[i] * ops::sigmoid(z[i]);
    else
      std::memcpy(gy, dv.data(), size_t(Di) * 4);
  }

  // Sweep 2, in reverse over chunks per head: the dual form differentiated with GEMMs, the
  // gradient of each chunk's end state carried back. B and C are shared by the heads of a
  // group, so their gradients are kept per head and summed after.
  Vec dxbc = vec(T * CD), dBh = vec(H * T * N), dCh = vec(H * T * N), ddt = vec(T * H), dD = vec(H),
      dA = vec(H);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec scratch(per), dS = vec(SZ), dM = vec(C * C), CB = vec(C * C), tP = vec(C * P), tN = vec(C * N),
                      Ce = vec(C * N);
    // dL/dcum: every pair (t, j) adds to cum_t and subtracts from cum_j, so the suffix sums
    // below cancel large terms; double keeps that cancellation exact.
    std::vector<double> dcum(static_cast<size_t>(C));
    double dAh = 0, dDh = 0;
    for (int64_t k = nchunks - 1; k >= 0; --k) {
      const int64_t t0 = k * C, n = std::min(C, T - t0);
      const SsdChunkWork w(scratch.data(), n, P, N);
      const float* S0 = &ck[size_t((h * nchunks + k) * SZ)];
      const float *Xc = X(t0, h), *Bc = Bp(t0, h), *Cc = Cp(t0, h), *dtc = &dt[size_t(t0 * H + h)];
      ssd_chunk_head(Xc, Bc, Cc, CD, dtc, &la[size_t(t0 * H + h)], H, n, P, N, w_.D[h],
                     const_cast<float*>(S0), false, nullptr, 0, w);
      const float* gy = &dyv[size_t(t0 * Di + h * P)];  // rows stride Di
      float* gx = &dxbc[size_t(t0 * CD + h * P)];       // rows stride CD
      float* gB = &dBh[size_t((h * T + t0) * N)];       // rows N
      float* gC = &dCh[size_t((h * T + t0) * N)];
      float* gdt = &ddt[size_t(t0 * H + h)];  // stride H
      std::fill(dcum.begin(), dcum.end(), 0.0);
      // D skip.
      for (int64_t t = 0; t < n; ++t)
        for (int64_t p = 0; p < P; ++p) {
          dDh += double(gy[t * Di + p]) * Xc[t * CD + p];
          gx[t * CD + p] = w_.D[h] * gy[t * Di + p];
        }
      // S_end = exp(cum_last) S0 + X^T diag(wt) B, wt_j = exp(cum_last - cum_j) dt_j.
      const float last = w.cum[n - 1], elast = std::exp(last);
      double dS0 = 0;
      for (int64_t i = 0; i < SZ; ++i) dS0 += double(dS[size_t(i)]) * S0[i];
      dcum[size_t(n - 1)] += dS0 * elast;
      ops::gemm(n, P, N, 1.0f, Bc, CD, dS.data(), N, true, 0.0f, tP.data(), P);   // dS B_j
      ops::gemm(n, N, P, 1.0f, Xc, CD, dS.data(), N, false, 0.0f, tN.data(), N);  // x_j^T dS
      for (int64_t j = 0; j < n; ++j) {
        const float e = std::exp(last - w.cum[j]), wt = e * dtc[j * H];
        float dw = 0.0f;
        for (int64_t p = 0; p < P; ++p) {
          dw += Xc[j * CD + p] * tP[size_t(j * P + p)];
          gx[j * CD + p] += wt * tP[size_t(j * P + p)];
        }
        for (int64_t m = 0; m < N; ++m) gB[j * N + m] = wt * tN[size_t(j * N + m)];
        gdt[j * H] = dw * e;
        const float dl = dw * wt;
        dcum[size_t(n - 1)] += dl, dcum[size_t(j)] -= dl;
      }
      for (float& a : dS) a *= elast;
      // y = M X + diag(exp(cum)) C S0^T: dM = dy X^T (j <= t), M = (C B^T) o exp(cum_t - cum_j) dt_j.
      ops::gemm(n, n, P, 1.0f, gy, Di, Xc, CD, true, 0.0f, dM.data(), n);
      ops::gemm_tn(n, P, n, 1.0f, w.M, n, gy, Di, 1.0f, gx, CD);
      ops::gemm(n, n, N, 1.0f, Cc, CD, Bc, CD, true, 0.0f, CB.data(), n);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t j = 0; j <= t; ++j) {
          const size_t tj = size_t(t * n + j);
          const float gam = std::exp(w.cum[t] - w.cum[j]);
          const float dl = dM[tj] * w.M[tj];
          dcum[size_t(t)] += dl, dcum[size_t(j)] -= dl;
          gdt[j * H] += dM[tj] * CB[tj] * gam;
          dM[tj] *= gam * dtc[j * H];  // dL/d(C_t . B_j)
        }
        for (int64_t j = t + 1; j < n; ++j) dM[size_t(t * n + j)] = 0.0f;
      }
      ops::gemm(n, N, n, 1.0f, dM.data(), n, Bc, CD, false, 0.0f, gC, N);
      ops::gemm_tn(n, N, n, 1.0f, dM.data(), n, Cc, CD, 1.0f, gB, N);
      ops::gemm(n, N, P, 1.0f, gy, Di, S0, N, false, 0.0f, tN.data(), N);  // dL/d(C exp(cum))
      for (int64_t t = 0; t < n; ++t) {
        const float e = std::exp(w.cum[t]);
        float s = 0.0f;
        for (int64_t m = 0; m < N; ++m) {
          const float g = tN[size_t(t * N + m)];
          gC[t * N + m] += e * g;
          s += g * Cc[t * CD + m];
          Ce[size_t(t * N + m)] = Cc[t * CD + m] * e;
        }
        dcum[size_t(t)] += e * s;
      }
      ops::gemm_tn(P, N, n, 1.0f, gy, Di, Ce.data(), N, 1.0f, dS.data(), N);
      // cum = cumulative sum of la = dt A.
      double suf = 0;
      for (int64_t t = n - 1; t >= 0; --t) {
        suf += dcum[size_t(t)];
        gdt[t * H] += float(suf * A_[size_t(h)]);
        dAh += suf * dtc[t * H];
      }
    }
    dA[size_t(h)] = float(dAh), dD[size_t(h)] = float(dDh);
  }
  if (float* g = gs.of(w_.A_log))
    for (int64_t h = 0; h < H; ++h) g[h] += dA[size_t(h)] * A_[size_t(h)];  // dA/dA_log = A
  if (float* g = gs.of(w_.D))
    for (int64_t h = 0; h < H; ++h) g[h] += dD[size_t(h)];
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t m = 0; m < N; ++m) {
        dxbc[size_t(t * CD + Di + (h / hpg) * N + m)] += dBh[size_t((h * T + t) * N + m)];
        dxbc[size_t(t * CD + Di + GN + (h / hpg) * N + m)] += dCh[size_t((h * T + t) * N + m)];
      }

  // Back into in_proj's output: z, the conv (through SiLU) for x B C, and dt.
  Vec dzx = vec(T * E), dpre = vec(T * CD);
  ops::silu_backward(pre.data(), dxbc.data(), T * CD, dpre.data());
  ops::causal_conv1d_backward(zx.data() + Di, E, T, CD, w_.conv_w, s_.d_conv, dpre.data(), dzx.data() + Di,
                              gs.of(w_.conv_w), gs.of(w_.conv_b));
  float* gdtb = gs.of(w_.dt_bias);
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(&dzx[size_t(t * E)], &dz[size_t(t * Di)], size_t(Di) * 4);
    for (int64_t h = 0; h < H; ++h) {
      const float v = dtv[size_t(t * H + h)], sp = ops::softplus(v);
      const bool clamped = sp < float(s_.dt_min) || (s_.dt_max > 0 && sp > float(s_.dt_max));
      const float g = clamped ? 0.0f : ddt[size_t(t * H + h)] * ops::sigmoid(v);
      dzx[size_t(t * E + Di + CD + h)] = g;
      if (gdtb) gdtb[h] += g;
    }
  }
  if (scaled_) scale_sections(dzx.data(), dzx.data() + T * E, dzx.data(), E);
  ops::linear_backward(x, T, d_, w_.in_proj, E, dzx.data(), dx, false, gs.of(w_.in_proj),
                       gs.of(w_.in_proj_b));
}

}  // namespace braid
