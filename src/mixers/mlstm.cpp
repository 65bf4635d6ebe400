#include "mixers/mlstm.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

MlstmMixer::MlstmMixer(const MlstmSpec& spec, int64_t d_model, MlstmWeights w)
    : s_(spec), d_(d_model), w_(w) {}

void MlstmMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<MlstmState*>(&state);
  check(st != nullptr && int64_t(st->m.size()) == s_.n_heads,
        "mlstm layer was given a state of another mixer");
  for_each_chunk(T, s_.chunk, [&](int64_t t0, int64_t n) { chunk(x + t0 * d_, n, *st, y + t0 * d_, ws); });
}

void MlstmMixer::chunk(const float* x, int64_t Q, MlstmState& st, float* y, Workspace& ws) const {
  const int64_t H = s_.n_heads, QK = s_.qk_dim, V = s_.v_dim, dk = QK / H, dv = V / H;
  const int64_t E = 2 * QK + 2 * V + 2 * H;
  float* p = ws.get(Workspace::kQ, size_t(Q * E));
  float* hbuf = ws.get(Workspace::kAttnOut, size_t(Q * V));
  float *q = p, *k = q + Q * QK, *v = k + Q * QK, *o = v + Q * V, *ig = o + Q * V, *fg = ig + Q * H;
  const ops::Projection pr[6] = {{w_.q, QK, nullptr, q},        {w_.k, QK, nullptr, k},
                                 {w_.v, V, nullptr, v},         {w_.o, V, nullptr, o},
                                 {w_.igate, H, w_.igate_b, ig}, {w_.fgate, H, w_.fgate_b, fg}};
  ops::linear_multi(x, Q, d_, pr, 6);
  if (s_.gate_soft_cap > 0) {
    const float cap = float(s_.gate_soft_cap);
    for (int64_t i = 0; i < 2 * Q * H; ++i) ig[i] = cap * std::tanh(ig[i] / cap);
  }
  const float scale = float(1.0 / std::sqrt(double(dk))), eps = float(s_.eps);
  const size_t per = size_t(Q * Q + 3 * Q + Q * dk);
  float* scratch = ws.get(Workspace::kScores, size_t(omp_get_max_threads()) * per);
#pragma omp parallel for schedule(dynamic, 1) if (Q > 1)
  for (int64_t h = 0; h < H; ++h) {
    float* M = scratch + size_t(omp_get_thread_num()) * per;  // [Q][Q]
    float* b = M + Q * Q;                                     // [Q] cumulative log forget gate
    float* m = b + Q;                                         // [Q] stabiliser per position
    float* den = m + Q;                                       // [Q]
    float* qe = den + Q;                                      // [Q][dk]
    const float* qh = q + h * dk;                             // rows stride QK
    const float* kh = k + h * dk;
    const float* vh = v + h * dv;  // rows stride V
    float* C = st.C.data() + h * dk * dv;
    float* n = st.n.data() + h * dk;
    const float m0 = st.m[size_t(h)];
    float acc = 0.0f;
    for (int64_t t = 0; t < Q; ++t) {
      const float f = fg[t * H + h];
      acc += ops::log_sigmoid(f);
      b[t] = acc;
    }
    // m_t = max(b_t + m0, max_{j <= t} b_t - b_j + i_j); D[t][j] = exp(b_t - b_j + i_j - m_t).
    for (int64_t t = 0; t < Q; ++t) {
      float mt = b[t] + m0;
      for (int64_t j = 0; j <= t; ++j) mt = std::max(mt, b[t] - b[j] + ig[j * H + h]);
      m[t] = mt;
    }
    ops::gemm(Q, Q, dk, scale, qh, QK, kh, QK, true, 0.0f, M, Q);
    for (int64_t t = 0; t < Q; ++t) {
      const float e = std::exp(b[t] + m0 - m[t]);
      float rs = 0.0f;
      for (int64_t j = 0; j <= t; ++j) rs += M[t * Q + j] *= std::exp(b[t] - b[j] + ig[j * H + h] - m[t]);
      for (int64_t j = t + 1; j < Q; ++j) M[t * Q + j] = 0.0f;
      float qn = 0.0f;
      for (int64_t d = 0; d < dk; ++d) {
        qe[t * dk + d] = qh[t * QK + d] * scale * e;
        qn += qe[t * dk + d] * n[d];
      }
      den[t] = std::max(std::abs(qn + rs), std::exp(-m[t])) + eps;
    }
    float* out = hbuf + h * dv;  // rows stride V
    ops::gemm(Q, dv, Q, 1.0f, M, Q, vh, V, false, 0.0f, out, V);
    ops::gemm(Q, dv, dk, 1.0f, qe, dk, C, dv, false, 1.0f, out, V);
    for (int64_t t = 0; t < Q; ++t)
      for (int64_t j = 0; j < dv; ++j) out[t * V + j] /= den[t];
    // Carry the state to the chunk end: m' = max(b_last + m0, max_j b_last - b_j + i_j).
    const float bl = b[Q - 1];
    float mn = bl + m0;
    for (int64_t j = 0; j < Q; ++j) mn = std::max(mn, bl - b[j] + ig[j * H + h]);
    const float decay = std::exp(bl + m0 - mn);
    for (int64_t i = 0; i < dk * dv; ++i) C[i] *= decay;
    for (int64_t d = 0; d < dk; ++d) n[d] *= decay;
    for (int64_t j = 0; j < Q; ++j) {
      const float w = std::exp(bl - b[j] + ig[j * H + h] - mn);
      for (int64_t d = 0; d < dk; ++d) {
        qe[j * dk + d] = kh[j * QK + d] * w;  // reuse qe for the weighted keys
        n[d] += qe[j * dk + d];
      }
    }
    ops::gemm_tn(dk, dv, Q, 1.0f, qe, dk, vh, V, 1.0f, C, dv);
    st.m[size_t(h)] = mn;
  }
  // Per-head LayerNorm over dv, weight over all channels, times sigmoid(o).
  const float neps = float(s_.norm_eps);
  for (int64_t t = 0; t < Q; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float* r = hbuf + t * V + h * dv;
      double mean = 0, var = 0;
      for (int64_t j = 0; j < dv; ++j) mean += r[j];
      mean /= double(dv);
      for (int64_t j = 0; j < dv; ++j) var += (r[j] - mean) * (r[j] - mean);
      const float mu = float(mean), inv = float(1.0 / std::sqrt(var / double(dv) + neps));
      for (int64_t j = 0; j < dv; ++j) {
        const float gate = ops::sigmoid(o[t * V + h * dv + j]);
        r[j] = gate * ((r[j] - mu) * inv * w_.norm[h * dv + j]);
      }
    }
  st.pos += Q;
  ops::linear(hbuf, Q, V, w_.out_proj, d_, nullptr, y);
}

}  // namespace braid
