// Backward of lightning attention for a sequence that starts from an empty state. Per
// head, with the fixed decay l = exp(-slope):  S_t = l S_{t-1} + k_t v_t^T,  o_t = S_t^T q_t,
// through the shared linear-attention kernel's chunked form: a first sweep keeps the state at
// each chunk start, the second runs linear_attention_backward over the chunks in reverse.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "mixers/lightning.hpp"
#include "mixers/linear_attention.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void LightningMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t H = s_.n_heads, hd = s_.head_dim, HD = H * hd, SZ = hd * hd;
  using Vec = std::vector<float>;
  auto vec = [](int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); };
  Vec pre = vec(T * 3 * HD), gate = vec(T * HD);
  const ops::Projection p[2] = {{w_.qkv_proj, 3 * HD, nullptr, pre.data()},
                                {w_.output_gate, HD, nullptr, gate.data()}};
  ops::linear_multi(x, T, d_, p, 2);
  Vec qkv(pre);
  ops::silu_inplace(qkv.data(), T * 3 * HD);
  auto q = [&](int64_t t, int64_t h) { return &qkv[size_t(t * 3 * HD + h * 3 * hd)]; };
  const int64_t C = s_.chunk > 0 ? s_.chunk : 64, nchunks = (T + C - 1) / C;
  // One head's chunk of the kernel from the state S; the per-token log decay is -slope.
  Vec logdecay = vec(H * C);
  for (int64_t h = 0; h < H; ++h)
    std::fill(logdecay.begin() + h * C, logdecay.begin() + (h + 1) * C, -slope_[size_t(h)]);
  auto chunk_of = [&](int64_t h, int64_t t0, int64_t n, float* S) {
    LinearAttentionChunk c;
    c.Q = n, c.dk = hd, c.dv = hd;
    c.q = q(t0, h), c.k = c.q + hd, c.v = c.q + 2 * hd;
    c.ldq = c.ldk = c.ldv = 3 * HD;
    c.g = &logdecay[size_t(h * C)];
    c.S = S;
    return c;
  };
  // Sweep 1: outputs and the state at each chunk start.
  Vec o = vec(T * HD), ck = vec(H * nchunks * SZ);
  linear_attention_checkpoints(H, T, C, hd, hd, false, chunk_of, o.data(), HD, ck.data());
  // Output side: RMSNorm over all heads, sigmoid gate, out_proj.
  Vec normed = vec(T * HD), gated = vec(T * HD), dgated = vec(T * HD), dgate = vec(T * HD), dn = vec(T * HD),
      dout = vec(T * HD);
  ops::rmsnorm(o.data(), w_.norm, float(s_.norm_eps), T, HD, normed.data());
  for (int64_t i = 0; i < T * HD; ++i) gated[size_t(i)] = normed[size_t(i)] * ops::sigmoid(gate[size_t(i)]);
  ops::linear_backward(gated.data(), T, HD, w_.out_proj, d_, dy, dgated.data(), false, gs.of(w_.out_proj),
                       nullptr);
  for (int64_t i = 0; i < T * HD; ++i) {
    const float sg = ops::sigmoid(gate[size_t(i)]);
    dn[size_t(i)] = dgated[size_t(i)] * sg;
    dgate[size_t(i)] = dgated[size_t(i)] * normed[size_t(i)] * sg * (1.0f - sg);
  }
  ops::rmsnorm_backward(o.data(), w_.norm, float(s_.norm_eps), T, HD, dn.data(), dout.data(), false,
                        gs.of(w_.norm));
  // Sweep 2, in reverse over chunks per head, carrying dL/dS back (the decay's gradient is
  // not needed: the slopes are fixed).
  Vec dqkv = vec(T * 3 * HD);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec dS = vec(SZ), ddecay = vec(C), scratch(linear_attention_backward_scratch(C, hd, hd, false));
    for (int64_t c = nchunks - 1; c >= 0; --c) {
      const int64_t t0 = c * C, n = std::min(C, T - t0);
      const LinearAttentionChunk ch = chunk_of(h, t0, n, &ck[size_t((h * nchunks + c) * SZ)]);
      LinearAttentionGrads gr;
      gr.dq = &dqkv[size_t(t0 * 3 * HD + h * 3 * hd)], gr.dk = gr.dq + hd, gr.dv = gr.dq + 2 * hd;
      gr.ldq = gr.ldk = gr.ldv = 3 * HD;
      gr.dg = ddecay.data(), gr.dS = dS.data();
      linear_attention_backward(ch, &dout[size_t(t0 * HD + h * hd)], HD, gr, scratch.data());
    }
  }
  Vec dpre = vec(T * 3 * HD);
  ops::silu_backward(pre.data(), dqkv.data(), T * 3 * HD, dpre.data());
  ops::linear_backward(x, T, d_, w_.qkv_proj, 3 * HD, dpre.data(), dx, false, gs.of(w_.qkv_proj), nullptr);
  ops::linear_backward(x, T, d_, w_.output_gate, HD, dgate.data(), dx, true, gs.of(w_.output_gate), nullptr);
}

}  // namespace braid
