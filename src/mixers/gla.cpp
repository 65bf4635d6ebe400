#include "mixers/gla.hpp"

#include <omp.h>

#include <cmath>

#include "core/error.hpp"
#include "mixers/linear_attention.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

GlaMixer::GlaMixer(const GlaSpec& spec, int64_t d_model, GlaWeights w) : s_(spec), d_(d_model), w_(w) {
  for (int64_t h = 0; h < s_.n_heads; ++h)
    fixed_log_decay_.push_back(float(std::log1p(-std::pow(2.0, -5.0 - double(h)))));
}

std::unique_ptr<State> GlaMixer::make_state() const {
  return std::make_unique<LinearAttentionState>(s_.n_heads, s_.head_k_dim, s_.head_v_dim);
}

void GlaMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<LinearAttentionState*>(&state);
  check(st != nullptr && st->S.size() == size_t(s_.n_heads * s_.head_k_dim * s_.head_v_dim),
        "gla layer was given a state of another mixer");
  for_each_chunk(T, s_.chunk, [&](int64_t t0, int64_t n) { chunk(x + t0 * d_, n, *st, y + t0 * d_, ws); });
}

void GlaMixer::chunk(const float* x, int64_t Q, LinearAttentionState& st, float* y, Workspace& ws) const {
  const int64_t H = s_.n_heads, dk = s_.head_k_dim, dv = s_.head_v_dim, KD = H * dk, VD = H * dv;
  const bool per_channel = s_.gate == GlaGate::PerChannel;
  const int64_t G = per_channel ? KD : H;  // log decays per token
  const int64_t R = per_channel ? s_.gate_rank : 0;
  float* buf = ws.get(Workspace::kQ, size_t(Q * (2 * KD + 2 * VD + G + R)));
  float *q = buf, *k = q + Q * KD, *v = k + Q * KD, *g = v + Q * VD, *lg = g + Q * VD, *low = lg + Q * G;
  float* out = ws.get(Workspace::kAttnOut, size_t(Q * VD));
  const ops::Projection p[4] = {
      {w_.q, KD, nullptr, q}, {w_.k, KD, nullptr, k}, {w_.v, VD, nullptr, v}, {w_.g, VD, nullptr, g}};
  ops::linear_multi(x, Q, d_, p, 4);
  const float scale = float(1.0 / std::sqrt(double(dk)));
  for (int64_t i = 0; i < Q * KD; ++i) q[i] *= scale;
  // Log decays: log sigmoid(gate) / normaliser, or the fixed per-head values.
  if (s_.gate == GlaGate::Fixed) {
    for (int64_t t = 0; t < Q; ++t)
      for (int64_t h = 0; h < H; ++h) lg[t * H + h] = fixed_log_decay_[size_t(h)];
  } else {
    if (per_channel) {
      ops::linear(x, Q, d_, w_.gate_a, R, nullptr, low);
      ops::linear(low, Q, R, w_.gate_b, KD, w_.gate_bias, lg);
    } else {
      ops::linear(x, Q, d_, w_.gate_b, H, w_.gate_bias, lg);
    }
    const float inv = float(1.0 / s_.gate_normalizer);
    for (int64_t i = 0; i < Q * G; ++i) lg[i] = ops::log_sigmoid(lg[i]) * inv;
  }
  const size_t per = linear_attention_scratch(Q, dk, dv, per_channel) + size_t(Q);
  float* scratch = ws.get(Workspace::kScores, size_t(omp_get_max_threads()) * per);
#pragma omp parallel for schedule(dynamic, 1) if (Q > 1)
  for (int64_t h = 0; h < H; ++h) {
    float* sc = scratch + size_t(omp_get_thread_num()) * per;
    LinearAttentionChunk c;
    c.Q = Q, c.dk = dk, c.dv = dv;
    c.q = q + h * dk, c.k = k + h * dk, c.v = v + h * dv;
    c.ldq = c.ldk = KD, c.ldv = VD;
    if (per_channel) {
      c.g = lg + h * dk, c.per_channel = true, c.ldg = KD;
    } else {
      float* gh = sc;  // this head's per-token log decays, contiguous
      for (int64_t t = 0; t < Q; ++t) gh[t] = lg[t * H + h];
      c.g = gh;
    }
    c.S = st.S.data() + h * dk * dv;
    c.o = out + h * dv, c.ldo = VD;
    linear_attention(c, sc + Q);
  }
  // Per-head RMSNorm (weight over dv) times SiLU of the output gate.
  ops::rmsnorm(out, w_.norm, float(s_.norm_eps), Q * H, dv, out);
  for (int64_t i = 0; i < Q * VD; ++i) out[i] *= ops::silu(g[i]);
  st.pos += Q;
  ops::linear(out, Q, VD, w_.o, d_, nullptr, y);
}

}  // namespace braid
