// Backward of gated linear attention for a sequence that starts from an empty state, in
// the chunked form of the shared decayed linear-attention kernel (per key channel, per head
// or fixed decays): a first sweep keeps the state at each chunk start, the second runs
// linear_attention_backward over the chunks in reverse, carrying dL/dS from chunk to chunk.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "mixers/gla.hpp"
#include "mixers/linear_attention.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void GlaMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t H = s_.n_heads, dk = s_.head_k_dim, dv = s_.head_v_dim, KD = H * dk, VD = H * dv,
                SZ = dk * dv;
  const bool per_channel = s_.gate == GlaGate::PerChannel;
  const int64_t G = per_channel ? KD : H, R = per_channel ? s_.gate_rank : 0;
  // Per-channel decays make the chunk's scores cost O(chunk^2 dk) exponentials, so that case
  // runs its backward over chunks of 8 (the same function: only where states are kept moves).
  const int64_t C = std::min<int64_t>(s_.chunk > 0 ? s_.chunk : 64, per_channel ? 8 : 1 << 30);
  const int64_t nchunks = (T + C - 1) / C;
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
  // One head's chunk of the kernel, from the state S.
  Vec lgh = vec(per_channel ? 0 : H * T);  // per-head gates, contiguous per head
  if (!per_channel)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) lgh[size_t(h * T + t)] = lg[size_t(t * H + h)];
  auto chunk_of = [&](int64_t h, int64_t t0, int64_t n, float* S) {
    LinearAttentionChunk c;
    c.Q = n, c.dk = dk, c.dv = dv;
    c.q = &q[size_t(t0 * KD + h * dk)], c.k = &k[size_t(t0 * KD + h * dk)],
    c.v = &v[size_t(t0 * VD + h * dv)];
    c.ldq = c.ldk = KD, c.ldv = VD;
    if (per_channel)
      c.g = &lg[size_t(t0 * KD + h * dk)], c.per_channel = true, c.ldg = KD;
    else
      c.g = &lgh[size_t(h * T + t0)];
    c.S = S;
    return c;
  };
  // Sweep 1: outputs and the state at each chunk start.
  Vec o = vec(T * VD), ck = vec(H * nchunks * SZ);
  linear_attention_checkpoints(H, T, C, dk, dv, per_channel, chunk_of, o.data(), VD, ck.data());
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
  // Sweep 2, in reverse over chunks per head, carrying dL/dS back.
  Vec dq = vec(T * KD), dk_ = vec(T * KD), dv_ = vec(T * VD), dlg = vec(T * G),
      dlgh = vec(per_channel ? 0 : H * T);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec dS = vec(SZ), scratch(linear_attention_backward_scratch(C, dk, dv, per_channel));
    for (int64_t c = nchunks - 1; c >= 0; --c) {
      const int64_t t0 = c * C, n = std::min(C, T - t0);
      const LinearAttentionChunk ch = chunk_of(h, t0, n, &ck[size_t((h * nchunks + c) * SZ)]);
      LinearAttentionGrads gr;
      gr.dq = &dq[size_t(t0 * KD + h * dk)], gr.dk = &dk_[size_t(t0 * KD + h * dk)];
      gr.dv = &dv_[size_t(t0 * VD + h * dv)], gr.dS = dS.data();
      gr.ldq = gr.ldk = KD, gr.ldv = VD;
      if (per_channel)
        gr.dg = &dlg[size_t(t0 * KD + h * dk)], gr.ldg = KD;
      else
        gr.dg = &dlgh[size_t(h * T + t0)];
      linear_attention_backward(ch, &dout[size_t(t0 * VD + h * dv)], VD, gr, scratch.data());
    }
  }
  for (float& e : dq) e *= scale;  // q was scaled after its projection
  if (!per_channel)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) dlg[size_t(t * H + h)] = dlgh[size_t(h * T + t)];
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
