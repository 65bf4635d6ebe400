#include "mixers/gated_deltanet.hpp"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void gdn_l2_normalize(float* x, int64_t n, float scale) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float inv = float(1.0 / std::sqrt(ss + 1e-6));
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * inv * scale;
}

GatedDeltaNetMixer::GatedDeltaNetMixer(const GatedDeltaNetSpec& spec, int64_t d_model, GatedDeltaNetWeights w)
    : s_(spec), d_(d_model), w_(w) {}

size_t GatedDeltaNetMixer::fixed_state_bytes() const {
  return size_t(s_.conv_dim() * (s_.d_conv - 1) + s_.n_v_heads * s_.head_k_dim * s_.head_v_dim) *
         sizeof(float);
}

std::unique_ptr<State> GatedDeltaNetMixer::make_state() const {
  return std::make_unique<GatedDeltaNetState>(s_);
}

void GatedDeltaNetMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<GatedDeltaNetState*>(&state);
  check(st != nullptr, "gated_deltanet layer was given a state of another mixer");
  for_each_chunk(T, s_.chunk, [&](int64_t t0, int64_t n) { chunk(x + t0 * d_, n, *st, y + t0 * d_, ws); });
}

void GatedDeltaNetMixer::unpack(const float* proj, const float* ba, int64_t Q, float* mixed, float* z,
                                float* beta, float* g) const {
  const int64_t NK = s_.n_k_heads, NV = s_.n_v_heads, DK = s_.head_k_dim, DV = s_.head_v_dim;
  const int64_t R = NV / NK, KD = s_.key_dim(), VD = s_.value_dim(), CD = s_.conv_dim();
  const int64_t E = 2 * KD + 2 * VD;
  // Per key head the projection holds [q | k | v (R heads) | z (R heads)] and [beta (R) | alpha (R)].
  for (int64_t t = 0; t < Q; ++t)
    for (int64_t kh = 0; kh < NK; ++kh) {
      const float* src = proj + t * E + kh * (2 * DK + 2 * R * DV);
      float* row = mixed + t * CD;
      std::memcpy(row + kh * DK, src, size_t(DK) * sizeof(float));
      std::memcpy(row + KD + kh * DK, src + DK, size_t(DK) * sizeof(float));
      std::memcpy(row + 2 * KD + kh * R * DV, src + 2 * DK, size_t(R * DV) * sizeof(float));
      std::memcpy(z + t * VD + kh * R * DV, src + 2 * DK + R * DV, size_t(R * DV) * sizeof(float));
      const float* b = ba + t * 2 * NV + kh * 2 * R;
      for (int64_t j = 0; j < R; ++j) {
        const int64_t h = kh * R + j;
        beta[t * NV + h] = ops::sigmoid(b[j]);
        g[t * NV + h] = A(h) * ops::softplus(b[R + j] + w_.dt_bias[h]);
      }
    }
}

void GatedDeltaNetMixer::chunk(const float* x, int64_t Q, GatedDeltaNetState& st, float* y,
                               Workspace& ws) const {
  const int64_t NK = s_.n_k_heads, NV = s_.n_v_heads, DK = s_.head_k_dim, DV = s_.head_v_dim;
  const int64_t R = NV / NK, KD = s_.key_dim(), VD = s_.value_dim(), CD = s_.conv_dim();
  const int64_t E = 2 * KD + 2 * VD;
  // One buffer: projections, de-interleaved q|k|v, conv output, z, beta, log decay, core output.
  float* proj = ws.get(Workspace::kQ, size_t(Q * (E + 2 * NV + 2 * CD + 2 * VD + 2 * NV)));
  float* ba = proj + Q * E;
  float* mixed = ba + Q * 2 * NV;
  float* qkv = mixed + Q * CD;
  float* z = qkv + Q * CD;
  float* core = z + Q * VD;
  float* beta = core + Q * VD;
  float* g = beta + Q * NV;
  const ops::Projection p[2] = {{w_.in_proj_qkvz, E, nullptr, proj}, {w_.in_proj_ba, 2 * NV, nullptr, ba}};
  ops::linear_multi(x, Q, d_, p, 2);

  unpack(proj, ba, Q, mixed, z, beta, g);
  ops::causal_conv1d(mixed, CD, Q, CD, w_.conv_w, nullptr, s_.d_conv, true, st.conv.data(), qkv);
  const float qscale = float(1.0 / std::sqrt(double(DK)));
  for (int64_t t = 0; t < Q; ++t)
    for (int64_t kh = 0; kh < NK; ++kh) {
      gdn_l2_normalize(qkv + t * CD + kh * DK, DK, qscale);
      gdn_l2_normalize(qkv + t * CD + KD + kh * DK, DK, 1.0f);
    }

  if (Q == 1) {
    // Decode: S <- a S; S += k (b (v - S^T k))^T; o = S^T q, two passes over each state.
#pragma omp parallel for schedule(static)
    for (int64_t h = 0; h < NV; ++h) {
      const int64_t kh = h / R;
      const float* q = qkv + kh * DK;
      const float* k = qkv + KD + kh * DK;
      const float* v = qkv + 2 * KD + h * DV;
      float* S = st.S.data() + h * DK * DV;
      float* o = core + h * DV;
      const float a = std::exp(g[h]), b = beta[h];
      float delta[1024];
      for (int64_t j = 0; j < DV; ++j) delta[j] = 0.0f, o[j] = 0.0f;
      for (int64_t i = 0; i < DK; ++i)
        for (int64_t j = 0; j < DV; ++j) delta[j] += S[i * DV + j] * k[i];
      for (int64_t j = 0; j < DV; ++j) delta[j] = b * (v[j] - a * delta[j]);
      for (int64_t i = 0; i < DK; ++i) {
        float* Si = S + i * DV;
        for (int64_t j = 0; j < DV; ++j) {
          Si[j] = a * Si[j] + k[i] * delta[j];
          o[j] += Si[j] * q[i];
        }
      }
    }
  } else {
    const int nthreads = omp_get_max_threads();
    const size_t per_thread = size_t(2 * Q * Q + Q * (DV + DK) + Q * DV + 2 * Q * DK + Q);
    float* scratch = ws.get(Workspace::kScores, size_t(nthreads) * per_thread);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t h = 0; h < NV; ++h) {
      float* A = scratch + size_t(omp_get_thread_num()) * per_thread;  // [Q][Q] strictly lower
      float* P = A + Q * Q;                                            // [Q][Q] q.k scores
      float* UW = P + Q * Q;                                           // [Q][DV + DK]
      float* vnew = UW + Q * (DV + DK);                                // [Q][DV]
      float* qe = vnew + Q * DV;                                       // [Q][DK]
      float* kd = qe + Q * DK;                                         // [Q][DK]
      float* c = kd + Q * DK;                                          // [Q]
      const int64_t kh = h / R, ld = DV + DK;
      const float* q = qkv + kh * DK;  // rows stride CD
      const float* k = qkv + KD + kh * DK;
      const float* v = qkv + 2 * KD + h * DV;
      float* S = st.S.data() + h * DK * DV;
      float acc = 0.0f;
      for (int64_t t = 0; t < Q; ++t) c[t] = acc += g[t * NV + h];
      // A[i][j] = b_i exp(c_i - c_j) k_i.k_j (j < i); solve (I + A) [U | W] = [b v | b exp(c) k].
      ops::gemm(Q, Q, DK, 1.0f, k, CD, k, CD, true, 0.0f, A, Q);
      for (int64_t i = 0; i < Q; ++i) {
        const float bi = beta[i * NV + h];
        for (int64_t j = 0; j < i; ++j) A[i * Q + j] *= bi * std::exp(c[i] - c[j]);
        const float ec = std::exp(c[i]);
        for (int64_t j = 0; j < DV; ++j) UW[i * ld + j] = bi * v[i * CD + j];
        for (int64_t j = 0; j < DK; ++j) UW[i * ld + DV + j] = bi * ec * k[i * CD + j];
      }
      ops::solve_unit_lower(Q, ld, A, Q, UW, ld);
      // New values after the carried state's prediction: vnew = U - W S.
      for (int64_t i = 0; i < Q; ++i) std::memcpy(vnew + i * DV, UW + i * ld, size_t(DV) * sizeof(float));
      ops::gemm(Q, DV, DK, -1.0f, UW + DV, ld, S, DV, false, 1.0f, vnew, DV);
      // o = (q . k^T masked by exp(c_i - c_j), j <= i) vnew + (q exp(c)) S.
      ops::gemm(Q, Q, DK, 1.0f, q, CD, k, CD, true, 0.0f, P, Q);
      for (int64_t i = 0; i < Q; ++i) {
        for (int64_t j = 0; j <= i; ++j) P[i * Q + j] *= std::exp(c[i] - c[j]);
        for (int64_t j = i + 1; j < Q; ++j) P[i * Q + j] = 0.0f;
        const float ec = std::exp(c[i]);
        for (int64_t j = 0; j < DK; ++j) qe[i * DK + j] = q[i * CD + j] * ec;
      }
      float* o = core + h * DV;  // rows stride VD
      ops::gemm(Q, DV, Q, 1.0f, P, Q, vnew, DV, false, 0.0f, o, VD);
      ops::gemm(Q, DV, DK, 1.0f, qe, DK, S, DV, false, 1.0f, o, VD);
      // S <- exp(c_last) S + (k exp(c_last - c))^T vnew.
      const float last = c[Q - 1];
      for (int64_t i = 0; i < Q; ++i) {
        const float e = std::exp(last - c[i]);
        for (int64_t j = 0; j < DK; ++j) kd[i * DK + j] = k[i * CD + j] * e;
      }
      const float decay = std::exp(last);
      for (int64_t i = 0; i < DK * DV; ++i) S[i] *= decay;
      ops::gemm_tn(DK, DV, Q, 1.0f, kd, DK, vnew, DV, 1.0f, S, DV);
    }
  }

  // Per-head RMSNorm (weight over head_v_dim) gated by SiLU(z), then out_proj.
  ops::rmsnorm(core, w_.norm, float(s_.norm_eps), Q * NV, DV, core);
  for (int64_t i = 0; i < Q * VD; ++i) core[i] *= z[i] * ops::sigmoid(z[i]);
  st.pos += Q;
  ops::linear(core, Q, VD, w_.out_proj, d_, nullptr, y);
}

}  // namespace braid
