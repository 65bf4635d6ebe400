// Backward of softmax attention for a sequence that starts at position 0: recomputes
// the projections, then per head the masked softmax twice (once for the output the gate
// and o_proj need, once inside the backward), so only O(T * width) is kept per layer.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "mixers/attention.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void AttentionMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const {
  const int64_t H = spec_.n_heads, KV = spec_.n_kv_heads, hd = spec_.head_dim, G = H / KV;
  const int64_t qd = H * hd, kd = KV * hd, W = spec_.sliding_window, N = W > 0 ? spec_.sink_tokens : 0;
  const bool og = spec_.output_gate;
  std::vector<float> q(static_cast<size_t>(T * qd)), k(static_cast<size_t>(T * kd)),
      v(static_cast<size_t>(T * kd));
  std::vector<float> gate(og ? static_cast<size_t>(T * qd) : 0), qg(og ? static_cast<size_t>(2 * T * qd) : 0);
  std::vector<float> q_pre(spec_.qk_norm ? static_cast<size_t>(T * qd) : 0),
      k_pre(spec_.qk_norm ? static_cast<size_t>(T * kd) : 0);
  project_qkv(x, T, 0, q.data(), k.data(), v.data(), og ? gate.data() : nullptr, og ? qg.data() : nullptr,
              spec_.qk_norm ? q_pre.data() : nullptr, spec_.qk_norm ? k_pre.data() : nullptr);
  const float scale = score_scale();
  const int nthreads = omp_get_max_threads();
  std::vector<float> scratch(static_cast<size_t>(nthreads) * static_cast<size_t>(2 * T * T));
  // P[T, T] of head h: masked (causal, sliding window with its sinks) softmax of
  // scale * q k^T.
  auto probs = [&](int64_t h, float* P) {
    const int64_t gi = h / G;
    ops::gemm(T, T, hd, scale, q.data() + h * hd, qd, k.data() + gi * hd, kd, true, 0.0f, P, T);
    for (int64_t t = 0; t < T; ++t) {
      float* row = P + t * T;
      const int64_t lo = W > 0 ? std::max<int64_t>(0, t - W + 1) : 0, ns = std::min(N, lo);
      if (ns == 0) {
        for (int64_t j = 0; j < lo; ++j) row[j] = 0.0f;
        ops::softmax_inplace(row + lo, t + 1 - lo);
      } else {
        for (int64_t j = ns; j < lo; ++j) row[j] = -INFINITY;
        ops::softmax_inplace(row, t + 1);
      }
      for (int64_t j = t + 1; j < T; ++j) row[j] = 0.0f;
    }
  };
  // Forward to the attention output O (before the gate and o_proj).
  std::vector<float> O(static_cast<size_t>(T * qd));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    float* P = scratch.data() + size_t(omp_get_thread_num()) * size_t(2 * T * T);
    probs(h, P);
    ops::gemm(T, hd, T, 1.0f, P, T, v.data() + (h / G) * hd, kd, false, 0.0f, O.data() + h * hd, qd);
  }
  // o_proj and the output gate.
  std::vector<float> gated, dO(static_cast<size_t>(T * qd));
  const float* o_in = O.data();
  if (og) {
    gated.resize(size_t(T * qd));
    for (int64_t i = 0; i < T * qd; ++i) gated[size_t(i)] = O[size_t(i)] * ops::sigmoid(gate[size_t(i)]);
    o_in = gated.data();
  }
  ops::linear_backward(o_in, T, qd, w_.wo, d_, dy, dO.data(), false, g.of(w_.wo), g.of(w_.bo));
  std::vector<float> dgate(og ? static_cast<size_t>(T * qd) : 0);
  if (og)
    for (int64_t i = 0; i < T * qd; ++i) {
      const float s = ops::sigmoid(gate[size_t(i)]);
      dgate[size_t(i)] = dO[size_t(i)] * O[size_t(i)] * s * (1.0f - s);
      dO[size_t(i)] *= s;
    }
  // Per head: dV = P^T dO, dS = softmax_backward(P, dO V^T), dq = scale dS K,
  // dK = scale dS^T q. Heads of one KV group write private dK / dV, summed after.
  std::vector<float> dq(static_cast<size_t>(T * qd)), dkh(static_cast<size_t>(H * T * hd)),
      dvh(static_cast<size_t>(H * T * hd));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    float* P = scratch.data() + size_t(omp_get_thread_num()) * size_t(2 * T * T);
    float* dP = P + T * T;
    const int64_t gi = h / G;
    probs(h, P);
    ops::gemm(T, T, hd, 1.0f, dO.data() + h * hd, qd, v.data() + gi * hd, kd, true, 0.0f, dP, T);
    ops::gemm_tn(T, hd, T, 1.0f, P, T, dO.data() + h * hd, qd, 0.0f, dvh.data() + h * T * hd, hd);
    for (int64_t t = 0; t < T; ++t) ops::softmax_backward(P + t * T, dP + t * T, t + 1, dP + t * T);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = t + 1; j < T; ++j) dP[t * T + j] = 0.0f;
    ops::gemm(T, hd, T, scale, dP, T, k.data() + gi * hd, kd, false, 0.0f, dq.data() + h * hd, qd);
    ops::gemm_tn(T, hd, T, scale, dP, T, q.data() + h * hd, qd, 0.0f, dkh.data() + h * T * hd, hd);
  }
  std::vector<float> dk(static_cast<size_t>(T * kd), 0.0f), dv(static_cast<size_t>(T * kd), 0.0f);
  for (int64_t h = 0; h < H; ++h) {
    const int64_t gi = h / G;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < hd; ++i) {
        dk[size_t(t * kd + gi * hd + i)] += dkh[size_t((h * T + t) * hd + i)];
        dv[size_t(t * kd + gi * hd + i)] += dvh[size_t((h * T + t) * hd + i)];
      }
  }
  rotate(dq.data(), dk.data(), T, 0, true);
  if (spec_.qk_norm) {
    ops::rmsnorm_backward(q_pre.data(), w_.q_norm, eps_, T * H, hd, dq.data(), dq.data(), false,
                          g.of(w_.q_norm));
    ops::rmsnorm_backward(k_pre.data(), w_.k_norm, eps_, T * KV, hd, dk.data(), dk.data(), false,
                          g.of(w_.k_norm));
  }
  if (spec_.key_multiplier != 1.0)
    for (float& d : dk) d *= float(spec_.key_multiplier);
  // dq (and the gate's gradient) in q_proj's row layout.
  const float* dqg = dq.data();
  std::vector<float> dqg_buf;
  if (og) {
    dqg_buf.resize(size_t(2 * T * qd));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        float* dst = dqg_buf.data() + t * 2 * qd + h * 2 * hd;
        std::memcpy(dst, dq.data() + t * qd + h * hd, size_t(hd) * sizeof(float));
        std::memcpy(dst + hd, dgate.data() + t * qd + h * hd, size_t(hd) * sizeof(float));
      }
    dqg = dqg_buf.data();
  }
  ops::linear_backward(x, T, d_, w_.wq, og ? 2 * qd : qd, dqg, dx, false, g.of(w_.wq), g.of(w_.bq));
  ops::linear_backward(x, T, d_, w_.wk, kd, dk.data(), dx, true, g.of(w_.wk), g.of(w_.bk));
  ops::linear_backward(x, T, d_, w_.wv, kd, dv.data(), dx, true, g.of(w_.wv), g.of(w_.bv));
}

}  // namespace braid
