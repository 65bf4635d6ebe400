// Backward of the Mamba-2 (SSD) mixer for a sequence that starts from an empty state,
// through the recurrent form of the same map. Per head, with a_t = exp(dt_t A):
//   S_t = a_t S_{t-1} + dt_t x_t B_t^T;   y_t = S_t C_t + D x_t
// then the gate / grouped RMSNorm and out_proj. Each head keeps its state only at chunk
// starts and recomputes a chunk's states when the reverse sweep reaches it.
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
  const int64_t bounds[6] = {0, Di, 2 * Di, 2 * Di + GN, 2 * Di + 2 * GN, E};

  // Recompute the forward up to the scan's inputs.
  Vec zx = vec(T * E), pre = vec(T * CD), window = vec((s_.d_conv - 1) * CD);
  ops::linear(x, T, d_, w_.in_proj, E, w_.in_proj_b, zx.data());
  if (scaled_)
    for (int64_t t = 0; t < T; ++t)
      for (int sec = 0; sec < 5; ++sec)
        for (int64_t i = bounds[sec]; i < bounds[sec + 1]; ++i)
          zx[size_t(t * E + i)] *= float(s_.proj_multipliers[size_t(sec)]);
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
  auto X = [&](int64_t t, int64_t h) { return &xbc[size_t(t * CD + h * P)]; };
  auto Bp = [&](int64_t t, int64_t h) { return &xbc[size_t(t * CD + Di + (h / hpg) * N)]; };
  auto Cp = [&](int64_t t, int64_t h) { return &xbc[size_t(t * CD + Di + GN + (h / hpg) * N)]; };
  // One step S <- a S + dt x B^T in place.
  auto step = [&](int64_t t, int64_t h, float* S) {
    const float a = std::exp(dt[size_t(t * H + h)] * A_[size_t(h)]), d = dt[size_t(t * H + h)];
    const float *xv = X(t, h), *B = Bp(t, h);
    for (int64_t p = 0; p < P; ++p)
      for (int64_t n = 0; n < N; ++n) S[p * N + n] = a * S[p * N + n] + d * xv[p] * B[n];
  };
  // Forward scan: y (before the gate) and the state at each chunk start.
  Vec yv = vec(T * Di), ck = vec(H * nchunks * SZ);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec S = vec(SZ);
    for (int64_t t = 0; t < T; ++t) {
      if (t % C == 0) std::memcpy(&ck[size_t((h * nchunks + t / C) * SZ)], S.data(), size_t(SZ) * 4);
      step(t, h, S.data());
      const float *Cv = Cp(t, h), *xv = X(t, h);
      for (int64_t p = 0; p < P; ++p) {
        float acc = 0.0f;
        for (int64_t n = 0; n < N; ++n) acc += S[size_t(p * N + n)] * Cv[n];
        yv[size_t(t * Di + h * P + p)] = acc + w_.D[h] * xv[p];
      }
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
      double ss = 0;
      for (int64_t i = g0; i < g0 + gsz; ++i) ss += double(v[i]) * v[i];
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

  // Reverse scan per head. B and C are shared by the heads of a group, so their
  // gradients are kept per head and summed after.
  Vec dxbc = vec(T * CD), dBh = vec(H * T * N), dCh = vec(H * T * N), ddt = vec(T * H), dD = vec(H),
      dA = vec(H);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec Sall = vec((C + 1) * SZ), dS = vec(SZ);
    double dAh = 0, dDh = 0;
    for (int64_t k = nchunks - 1; k >= 0; --k) {
      const int64_t t0 = k * C, n = std::min(C, T - t0);
      replay_chunk(&ck[size_t((h * nchunks + k) * SZ)], SZ, n, Sall.data(),
                   [&](int64_t j, float* S) { step(t0 + j, h, S); });
      for (int64_t j = n - 1; j >= 0; --j) {
        const int64_t t = t0 + j;
        const float d = dt[size_t(t * H + h)], a = std::exp(d * A_[size_t(h)]);
        const float *xv = X(t, h), *B = Bp(t, h), *Cv = Cp(t, h);
        const float* gy = &dyv[size_t(t * Di + h * P)];
        const float* Sp = &Sall[size_t(j * SZ)];
        const float* St = &Sall[size_t((j + 1) * SZ)];
        float* gx = &dxbc[size_t(t * CD + h * P)];
        float* gB = &dBh[size_t((h * T + t) * N)];
        float* gC = &dCh[size_t((h * T + t) * N)];
        double dla = 0, dd = 0;
        for (int64_t p = 0; p < P; ++p) {
          dDh += double(gy[p]) * xv[p];
          float gxp = gy[p] * w_.D[h];
          for (int64_t m = 0; m < N; ++m) {
            const size_t i = size_t(p * N + m);
            gC[m] += St[i] * gy[p];
            const float g = dS[i] + gy[p] * Cv[m];  // dL/dS_t
            dla += double(g) * Sp[i];
            dd += double(g) * xv[p] * B[m];
            gxp += g * d * B[m];
            gB[m] += g * d * xv[p];
            dS[i] = g * a;  // dL/dS_{t-1}
          }
          gx[p] = gxp;
        }
        dla *= a;  // d a / d la = a
        ddt[size_t(t * H + h)] = float(dd + dla * A_[size_t(h)]);
        dAh += dla * d;
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
  if (scaled_)
    for (int64_t t = 0; t < T; ++t)
      for (int sec = 0; sec < 5; ++sec)
        for (int64_t i = bounds[sec]; i < bounds[sec + 1]; ++i)
          dzx[size_t(t * E + i)] *= float(s_.proj_multipliers[size_t(sec)]);
  ops::linear_backward(x, T, d_, w_.in_proj, E, dzx.data(), dx, false, gs.of(w_.in_proj),
                       gs.of(w_.in_proj_b));
}

}  // namespace braid
