#include "mixers/lightning.hpp"

#include <omp.h>

#include <cmath>

#include "core/error.hpp"
#include "mixers/linear_attention.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

LightningMixer::LightningMixer(const LightningSpec& spec, int64_t d_model, LightningWeights w)
    : s_(spec), d_(d_model), w_(w) {
  // As the reference computes them, in f32: base^(h + 1) * factor, base = 2^(-8 / H).
  const float base = float(1.0 / std::pow(2.0, 8.0 / double(s_.n_heads)));
  for (int64_t h = 0; h < s_.n_heads; ++h)
    slope_.push_back(std::pow(base, float(h + 1)) * float(s_.slope_factor));
}

std::unique_ptr<State> LightningMixer::make_state() const {
  return std::make_unique<LinearAttentionState>(s_.n_heads, s_.head_dim, s_.head_dim);
}

void LightningMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<LinearAttentionState*>(&state);
  check(st != nullptr && int64_t(st->S.size()) == s_.n_heads * s_.head_dim * s_.head_dim,
        "lightning layer was given a state of another mixer");
  for_each_chunk(T, s_.chunk, [&](int64_t t0, int64_t n) { chunk(x + t0 * d_, n, *st, y + t0 * d_, ws); });
}

void LightningMixer::chunk(const float* x, int64_t Q, LinearAttentionState& st, float* y,
                           Workspace& ws) const {
  const int64_t H = s_.n_heads, hd = s_.head_dim, HD = H * hd;
  float* qkv = ws.get(Workspace::kQ, size_t(Q * 3 * HD));
  float* gate = ws.get(Workspace::kGate, size_t(Q * HD));
  float* out = ws.get(Workspace::kAttnOut, size_t(Q * HD));
  const ops::Projection p[2] = {{w_.qkv_proj, 3 * HD, nullptr, qkv}, {w_.output_gate, HD, nullptr, gate}};
  ops::linear_multi(x, Q, d_, p, 2);
  ops::silu_inplace(qkv, Q * 3 * HD);
  const size_t per = linear_attention_scratch(Q, hd, hd, false) + size_t(Q);
  float* scratch = ws.get(Workspace::kScores, size_t(omp_get_max_threads()) * per);
#pragma omp parallel for schedule(dynamic, 1) if (Q > 1)
  for (int64_t h = 0; h < H; ++h) {
    float* sc = scratch + size_t(omp_get_thread_num()) * per;
    float* g = sc;  // [Q] log decay, constant
    for (int64_t t = 0; t < Q; ++t) g[t] = -slope_[size_t(h)];
    LinearAttentionChunk c;
    c.Q = Q, c.dk = hd, c.dv = hd;
    c.q = qkv + h * 3 * hd, c.k = c.q + hd, c.v = c.q + 2 * hd;
    c.ldq = c.ldk = c.ldv = 3 * HD;
    c.g = g;
    c.S = st.S.data() + h * hd * hd;
    c.o = out + h * hd, c.ldo = HD;
    linear_attention(c, sc + Q);
  }
  ops::rmsnorm(out, w_.norm, float(s_.norm_eps), Q, HD, out);
  for (int64_t i = 0; i < Q * HD; ++i) out[i] *= ops::sigmoid(gate[i]);
  st.pos += Q;
  ops::linear(out, Q, HD, w_.out_proj, d_, nullptr, y);
}

}  // namespace braid
