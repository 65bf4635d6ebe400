// Backward of lightning attention for a sequence that starts from an empty state. Per
// head, with the fixed decay l = exp(-slope):  S_t = l S_{t-1} + k_t v_t^T,  o_t = S_t^T q_t.
// A forward sweep gives dq_t = S_t do_t; a reverse sweep carries dS (dS_{t-1} = l dS_t,
// plus q_t do_t^T at each t) and gives dk_t = dS v_t, dv_t = dS^T k_t. The decay is fixed,
// so nothing is stored per token.
#include <cmath>
#include <vector>

#include "mixers/lightning.hpp"
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
  // Forward: o_t = S_t^T q_t.
  Vec o = vec(T * HD);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec S = vec(SZ);
    const float l = std::exp(-slope_[size_t(h)]);
    for (int64_t t = 0; t < T; ++t) {
      const float *qt = q(t, h), *kt = qt + hd, *vt = qt + 2 * hd;
      float* ot = &o[size_t(t * HD + h * hd)];
      for (int64_t i = 0; i < hd; ++i)
        for (int64_t j = 0; j < hd; ++j) {
          float& s = S[size_t(i * hd + j)];
          s = l * s + kt[i] * vt[j];
          ot[j] += s * qt[i];
        }
    }
  }
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
  // Recurrence: dq forward, dk / dv in reverse.
  Vec dqkv = vec(T * 3 * HD);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec S = vec(SZ);
    const float l = std::exp(-slope_[size_t(h)]);
    for (int64_t t = 0; t < T; ++t) {
      const float *qt = q(t, h), *kt = qt + hd, *vt = qt + 2 * hd;
      const float* dot = &dout[size_t(t * HD + h * hd)];
      float* dq = &dqkv[size_t(t * 3 * HD + h * 3 * hd)];
      for (int64_t i = 0; i < hd; ++i) {
        float acc = 0.0f;
        for (int64_t j = 0; j < hd; ++j) {
          float& s = S[size_t(i * hd + j)];
          s = l * s + kt[i] * vt[j];
          acc += s * dot[j];
        }
        dq[i] = acc;
      }
    }
    Vec dS = vec(SZ);
    for (int64_t t = T - 1; t >= 0; --t) {
      const float *qt = q(t, h), *kt = qt + hd, *vt = qt + 2 * hd;
      const float* dot = &dout[size_t(t * HD + h * hd)];
      float* dk = &dqkv[size_t(t * 3 * HD + h * 3 * hd + hd)];
      float* dv = dk + hd;
      for (int64_t i = 0; i < hd; ++i) {
        float acc = 0.0f;
        for (int64_t j = 0; j < hd; ++j) {
          float& g = dS[size_t(i * hd + j)];
          g += qt[i] * dot[j];
          acc += g * vt[j];
          dv[j] += g * kt[i];
        }
        dk[i] = acc;
      }
      for (float& g : dS) g *= l;
    }
  }
  Vec dpre = vec(T * 3 * HD);
  ops::silu_backward(pre.data(), dqkv.data(), T * 3 * HD, dpre.data());
  ops::linear_backward(x, T, d_, w_.qkv_proj, 3 * HD, dpre.data(), dx, false, gs.of(w_.qkv_proj), nullptr);
  ops::linear_backward(x, T, d_, w_.output_gate, HD, dgate.data(), dx, true, gs.of(w_.output_gate), nullptr);
}

}  // namespace braid
