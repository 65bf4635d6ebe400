// Backward of gated linear attention for a sequence that starts from an empty state. Per
// head, with decays a_t = exp(lg_t) (one per key channel, one per head, or fixed):
//   S_t = diag(a_t) S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t
// is differentiated in reverse; states are kept at chunk starts and a chunk's states are
// recomputed when the reverse sweep reaches it (the decay gradient needs S_{t-1}).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "mixers/gla.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void GlaMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t H = s_.n_heads, dk = s_.head_k_dim, dv = s_.head_v_dim, KD = H * dk, VD = H * dv,
                SZ = dk * dv;
  const bool per_channel = s_.gate == GlaGate::PerChannel;
  const int64_t G = per_channel ? KD : H, R = per_channel ? s_.gate_rank : 0;
  const int64_t C = s_.chunk > 0 ? s_.chunk : 64, nchunks = (T + C - 1) / C;
  using Vec = std::vector<float>;
  auto vec = [](int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); };
  Vec q = vec(T * KD), k = vec(T * KD), v = vec(T * VD), g = vec(T * VD), raw = vec(T * G), lg = vec(T * G),
      low = vec(T * R);
  const ops::Projection p[4] = {{w_.q, KD, nullptr, q.data()},
                                {w_.k, KD, nullptr, k.data()},
                                {w_.v, VD, nullptr, v.data()},
                                {w_.g, VD, nullptr, g.data()}};
  ops::linear_multi(x, T, d_, p, 4);
  const float scale = float(1.0 / std::sqrt(double(dk)));
  for (float& e : q) e *= scale;
  const float inv_norm = float(1.0 / s_.gate_normalizer);
  if (s_.gate == GlaGate::Fixed) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) lg[size_t(t * H + h)] = fixed_log_decay_[size_t(h)];
  } else {
    if (per_channel) {
      ops::linear(x, T, d_, w_.gate_a, R, nullptr, low.data());
      ops::linear(low.data(), T, R, w_.gate_b, KD, w_.gate_bias, raw.data());
    } else {
      ops::linear(x, T, d_, w_.gate_b, H, w_.gate_bias, raw.data());
    }
    for (int64_t i = 0; i < T * G; ++i) lg[size_t(i)] = ops::log_sigmoid(raw[size_t(i)]) * inv_norm;
  }
  // Decay of key channel i of head h at token t.
  auto decay = [&](int64_t t, int64_t h, int64_t i) {
    return std::exp(per_channel ? lg[size_t(t * KD + h * dk + i)] : lg[size_t(t * H + h)]);
  };
  auto step = [&](int64_t t, int64_t h, float* S) {
    const float *kt = &k[size_t(t * KD + h * dk)], *vt = &v[size_t(t * VD + h * dv)];
    for (int64_t i = 0; i < dk; ++i) {
      const float a = decay(t, h, i);
      for (int64_t j = 0; j < dv; ++j) S[i * dv + j] = a * S[i * dv + j] + kt[i] * vt[j];
    }
  };
  // Forward: outputs and the state at each chunk start.
  Vec o = vec(T * VD), ck = vec(H * nchunks * SZ);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec S = vec(SZ);
    for (int64_t t = 0; t < T; ++t) {
      if (t % C == 0) std::memcpy(&ck[size_t((h * nchunks + t / C) * SZ)], S.data(), size_t(SZ) * 4);
      step(t, h, S.data());
      const float* qt = &q[size_t(t * KD + h * dk)];
      float* ot = &o[size_t(t * VD + h * dv)];
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) ot[j] += S[size_t(i * dv + j)] * qt[i];
    }
  }
  // Output side: per-head RMSNorm, SiLU gate, o projection.
  Vec normed = vec(T * VD), gated = vec(T * VD), dgated = vec(T * VD), dn = vec(T * VD), dg = vec(T * VD),
      dout = vec(T * VD);
  ops::rmsnorm(o.data(), w_.norm, float(s_.norm_eps), T * H, dv, normed.data());
  for (int64_t i = 0; i < T * VD; ++i) {
    const float gi = g[size_t(i)];
    gated[size_t(i)] = normed[size_t(i)] * gi * ops::sigmoid(gi);
  }
  ops::linear_backward(gated.data(), T, VD, w_.o, d_, dy, dgated.data(), false, gs.of(w_.o), nullptr);
  for (int64_t i = 0; i < T * VD; ++i) {
    const float gi = g[size_t(i)], sg = ops::sigmoid(gi);
    dn[size_t(i)] = dgated[size_t(i)] * gi * sg;
    dg[size_t(i)] = dgated[size_t(i)] * normed[size_t(i)] * sg * (1.0f + gi * (1.0f - sg));
  }
  ops::rmsnorm_backward(o.data(), w_.norm, float(s_.norm_eps), T * H, dv, dn.data(), dout.data(), false,
                        gs.of(w_.norm));
  // Reverse sweep per head.
  Vec dq = vec(T * KD), dk_ = vec(T * KD), dv_ = vec(T * VD), dlg = vec(T * G);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec Sall = vec((C + 1) * SZ), dS = vec(SZ);
    for (int64_t c = nchunks - 1; c >= 0; --c) {
      const int64_t t0 = c * C, n = std::min(C, T - t0);
      replay_chunk(&ck[size_t((h * nchunks + c) * SZ)], SZ, n, Sall.data(),
                   [&](int64_t j, float* S) { step(t0 + j, h, S); });
      for (int64_t j = n - 1; j >= 0; --j) {
        const int64_t t = t0 + j;
        const float *qt = &q[size_t(t * KD + h * dk)], *kt = &k[size_t(t * KD + h * dk)],
                    *vt = &v[size_t(t * VD + h * dv)], *dot = &dout[size_t(t * VD + h * dv)];
        const float *Sp = &Sall[size_t(j * SZ)], *St = &Sall[size_t((j + 1) * SZ)];
        float *gq = &dq[size_t(t * KD + h * dk)], *gk = &dk_[size_t(t * KD + h * dk)],
              *gv = &dv_[size_t(t * VD + h * dv)];
        double head_dlg = 0;
        for (int64_t i = 0; i < dk; ++i) {
          const float a = decay(t, h, i);
          float accq = 0.0f, acck = 0.0f;
          double dli = 0;
          for (int64_t jj = 0; jj < dv; ++jj) {
            const size_t e = size_t(i * dv + jj);
            accq += St[e] * dot[jj];
            dS[e] += qt[i] * dot[jj];
            acck += dS[e] * vt[jj];
            gv[jj] += dS[e] * kt[i];
            dli += double(dS[e]) * Sp[e];
            dS[e] *= a;
          }
          gq[i] = accq * scale;  // q was scaled after its projection
          gk[i] = acck;
          if (per_channel)
            dlg[size_t(t * KD + h * dk + i)] = float(dli * a);
          else
            head_dlg += dli * a;
        }
        if (!per_channel) dlg[size_t(t * H + h)] = float(head_dlg);
      }
    }
  }
  // Decay gates: lg = log_sigmoid(raw) / normaliser, d/draw = sigmoid(-raw) / normaliser.
  if (s_.gate != GlaGate::Fixed) {
    Vec draw = vec(T * G);
    for (int64_t i = 0; i < T * G; ++i)
      draw[size_t(i)] = dlg[size_t(i)] * ops::sigmoid(-raw[size_t(i)]) * inv_norm;
    if (per_channel) {
      Vec dlow = vec(T * R);
      ops::linear_backward(low.data(), T, R, w_.gate_b, KD, draw.data(), dlow.data(), false, gs.of(w_.gate_b),
                           gs.of(w_.gate_bias));
      ops::linear_backward(x, T, d_, w_.gate_a, R, dlow.data(), dx, false, gs.of(w_.gate_a), nullptr);
    } else {
      ops::linear_backward(x, T, d_, w_.gate_b, H, draw.data(), dx, false, gs.of(w_.gate_b),
                           gs.of(w_.gate_bias));
    }
  }
  const bool have_dx = s_.gate != GlaGate::Fixed;
  ops::linear_backward(x, T, d_, w_.q, KD, dq.data(), dx, have_dx, gs.of(w_.q), nullptr);
  ops::linear_backward(x, T, d_, w_.k, KD, dk_.data(), dx, true, gs.of(w_.k), nullptr);
  ops::linear_backward(x, T, d_, w_.v, VD, dv_.data(), dx, true, gs.of(w_.v), nullptr);
  ops::linear_backward(x, T, d_, w_.g, VD, dg.data(), dx, true, gs.of(w_.g), nullptr);
}

}  // namespace braid
