#include "mixers/gated_deltanet.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"
#include "ops/cpu/recurrence.hpp"

namespace braid {

void gdn_l2_normalize(float* x, int64_t n, float scale) {
  const double ss = ops::sum_squares(x, n);
  const float inv = float(1.0 / std::sqrt(ss + 1e-6));
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * inv * scale;
}

GdnChunkWork::GdnChunkWork(float* p, int64_t n, int64_t DK, int64_t DV)
    : c(p),
      A(c + n),
      P(A + n * n),
      UW(P + n * n),
      vnew(UW + n * (DV + DK)),
      qe(vnew + n * DV),
      kd(qe + n * DK) {}

void gdn_chunk_head(const float* q, const float* k, const float* v, int64_t ld, const float* beta,
                    const float* g, int64_t gld, int64_t n, int64_t DK, int64_t DV, float* S, bool advance,
                    float* o, int64_t ldo, const GdnChunkWork& w) {
  const int64_t luw = DV + DK;
  float acc = 0.0f;
  for (int64_t t = 0; t < n; ++t) w.c[t] = acc += g[t * gld];
  // A[i][j] = b_i exp(c_i - c_j) k_i.k_j (j < i); solve (I + A) [U | W] = [b v | b exp(c) k].
  ops::gemm(n, n, DK, 1.0f, k, ld, k, ld, true, 0.0f, w.A, n);
  for (int64_t i = 0; i < n; ++i) {
    const float bi = beta[i * gld];
    for (int64_t j = 0; j < i; ++j) w.A[i * n + j] *= bi * std::exp(w.c[i] - w.c[j]);
    const float ec = std::exp(w.c[i]);
    for (int64_t j = 0; j < DV; ++j) w.UW[i * luw + j] = bi * v[i * ld + j];
    for (int64_t j = 0; j < DK; ++j) w.UW[i * luw + DV + j] = bi * ec * k[i * ld + j];
  }
  ops::solve_unit_lower(n, luw, w.A, n, w.UW, luw);
  // New values after the carried state's prediction: vnew = U - W S.
  for (int64_t i = 0; i < n; ++i) std::memcpy(w.vnew + i * DV, w.UW + i * luw, size_t(DV) * sizeof(float));
  ops::gemm(n, DV, DK, -1.0f, w.UW + DV, luw, S, DV, false, 1.0f, w.vnew, DV);
  // P = q . k^T masked by exp(c_i - c_j), j <= i; o = P vnew + (q exp(c)) S.
  ops::gemm(n, n, DK, 1.0f, q, ld, k, ld, true, 0.0f, w.P, n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) w.P[i * n + j] *= std::exp(w.c[i] - w.c[j]);
    for (int64_t j = i + 1; j < n; ++j) w.P[i * n + j] = 0.0f;
    const float ec = std::exp(w.c[i]);
    for (int64_t j = 0; j < DK; ++j) w.qe[i * DK + j] = q[i * ld + j] * ec;
  }
  if (o) {
    ops::gemm(n, DV, n, 1.0f, w.P, n, w.vnew, DV, false, 0.0f, o, ldo);
    ops::gemm(n, DV, DK, 1.0f, w.qe, DK, S, DV, false, 1.0f, o, ldo);
  }
  // S <- exp(c_last) S + (k exp(c_last - c))^T vnew.
  const float last = w.c[n - 1];
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(last - w.c[i]);
    for (int64_t j = 0; j < DK; ++j) w.kd[i * DK + j] = k[i * ld + j] * e;
  }
  if (!advance) return;
  const float decay = std::exp(last);
  for (int64_t i = 0; i < DK * DV; ++i) S[i] *= decay;
  ops::gemm_tn(DK, DV, n, 1.0f, w.kd, DK, w.vnew, DV, 1.0f, S, DV);
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
  GatedDeltaNetState* one[1] = {st};
  for_each_chunk(T, prefill_pass(s_.chunk),
                 [&](int64_t t0, int64_t n) { chunk(x + t0 * d_, n, one, 1, y + t0 * d_, ws); });
}

void GatedDeltaNetMixer::decode_batch(const float* x, int64_t B, int64_t, State* const* states, float* y,
                                      Workspace& ws) const {
  ops::DecodeRows rows;  // the projections read their weights once for all B rows
  std::vector<GatedDeltaNetState*> sts = states_as<GatedDeltaNetState>(states, B, "gated_deltanet");
  chunk(x, B, sts.data(), B, y, ws);
}

void GatedDeltaNetMixer::unpack(const float* proj, const float* ba, int64_t Q, float* mixed, float* z,
                                float* beta, float* g) const {
  for (int64_t t = 0; t < Q; ++t)
    for (int64_t kh = 0; kh < s_.n_k_heads; ++kh) unpack_head(proj, ba, t, kh, mixed, z, beta, g);
}

void GatedDeltaNetMixer::unpack_head(const float* proj, const float* ba, int64_t t, int64_t kh, float* mixed,
                                     float* z, float* beta, float* g) const {
  const int64_t NV = s_.n_v_heads, DK = s_.head_k_dim, DV = s_.head_v_dim, R = NV / s_.n_k_heads;
  const int64_t KD = s_.key_dim(), VD = s_.value_dim(), CD = s_.conv_dim(), E = 2 * KD + 2 * VD;
  // Per key head the projection holds [q | k | v (R heads) | z (R heads)] and [beta (R) | alpha (R)].
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

void GatedDeltaNetMixer::gated_norm(float* o, const float* z) const {
  const int64_t DV = s_.head_v_dim;
  ops::rmsnorm(o, w_.norm, float(s_.norm_eps), 1, DV, o);
  for (int64_t i = 0; i < DV; ++i) o[i] *= z[i] * ops::sigmoid(z[i]);
}

GatedDeltaNetMixer::Buffers GatedDeltaNetMixer::buffers(int64_t Q, Workspace& ws) const {
  const int64_t NV = s_.n_v_heads, VD = s_.value_dim(), CD = s_.conv_dim(), E = 2 * s_.key_dim() + 2 * VD;
  Buffers b;
  b.proj = ws.get(Workspace::kQ, size_t(Q * (E + 2 * NV + 2 * CD + 2 * VD + 2 * NV)));
  b.ba = b.proj + Q * E;
  b.mixed = b.ba + Q * 2 * NV;
  b.qkv = b.mixed + Q * CD;
  b.z = b.qkv + Q * CD;
  b.core = b.z + Q * VD;
  b.beta = b.core + Q * VD;
  b.g = b.beta + Q * NV;
  return b;
}

void GatedDeltaNetMixer::step(const float* x, int64_t B, GatedDeltaNetState* const* sts, float* y,
                              Workspace& ws) const {
  const int64_t NK = s_.n_k_heads, NV = s_.n_v_heads, DK = s_.head_k_dim, DV = s_.head_v_dim;
  const int64_t R = NV / NK, KD = s_.key_dim(), VD = s_.value_dim(), CD = s_.conv_dim();
  const int64_t E = 2 * KD + 2 * VD, K = s_.d_conv;
  const Buffers bf = buffers(B, ws);
  float *proj = bf.proj, *ba = bf.ba, *mixed = bf.mixed, *qkv = bf.qkv, *z = bf.z, *core = bf.core,
        *beta = bf.beta, *g = bf.g;
  const ops::Projection p[2] = {{w_.in_proj_qkvz, E, nullptr, proj}, {w_.in_proj_ba, 2 * NV, nullptr, ba}};
  const float qscale = float(1.0 / std::sqrt(double(DK)));
  // One parallel region for the step: the projections share their rows among the threads,
  // and everything between them is a key head's own (its channels of the convolution, its
  // q / k, its value heads' states and outputs), so the team splits it by (token, key head)
  // with no barrier inside. Token b runs against sequence b's state; each value is what it is
  // alone.
#pragma omp parallel if ((E + 2 * NV) * d_ * B >= 32768)
  {
    ops::linear_multi_in_team(x, B, d_, p, 2);
#pragma omp for schedule(static)
    for (int64_t job = 0; job < B * NK; ++job) {
      const int64_t b = job / NK, kh = job % NK;
      unpack_head(proj, ba, b, kh, mixed, z, beta, g);
      const int64_t ranges[3][2] = {{kh * DK, DK}, {KD + kh * DK, DK}, {2 * KD + kh * R * DV, R * DV}};
      for (const auto& r : ranges)
        ops::causal_conv1d_channels(mixed + b * CD, CD, 1, CD, r[0], r[1], w_.conv_w, nullptr, K, true,
                                    sts[b]->conv.data(), qkv + b * CD);
      float* q = qkv + b * CD + kh * DK;
      float* k = qkv + b * CD + KD + kh * DK;
      gdn_l2_normalize(q, DK, qscale);
      gdn_l2_normalize(k, DK, 1.0f);
      // S <- a S; S += k (b (v - S^T k))^T; o = S^T q, two passes over each state.
      for (int64_t h = kh * R; h < (kh + 1) * R; ++h) {
        float* o = core + b * VD + h * DV;
        ops::delta_rule_step(sts[b]->S.data() + h * DK * DV, DK, DV, std::exp(g[b * NV + h]),
                             beta[b * NV + h], q, k, qkv + b * CD + 2 * KD + h * DV, o);
        gated_norm(o, z + b * VD + h * DV);
      }
    }
    ops::linear_in_team(core, B, VD, w_.out_proj, d_, nullptr, y,
                        /*barrier=*/false);  // the region ends on one
  }
  for (int64_t b = 0; b < B; ++b) sts[b]->pos += 1;
}

// Q rows of one sequence (nseq 1), or one token of each of Q sequences (nseq == Q).
void GatedDeltaNetMixer::chunk(const float* x, int64_t Q, GatedDeltaNetState* const* sts, int64_t nseq,
                               float* y, Workspace& ws) const {
  if (nseq == Q) return step(x, Q, sts, y, ws);  // one token per sequence: the recurrence
  const int64_t NK = s_.n_k_heads, NV = s_.n_v_heads, DK = s_.head_k_dim, DV = s_.head_v_dim;
  const int64_t R = NV / NK, KD = s_.key_dim(), VD = s_.value_dim(), CD = s_.conv_dim();
  const int64_t E = 2 * KD + 2 * VD;
  const Buffers bf = buffers(Q, ws);
  float *proj = bf.proj, *ba = bf.ba, *mixed = bf.mixed, *qkv = bf.qkv, *z = bf.z, *core = bf.core,
        *beta = bf.beta, *g = bf.g;
  const ops::Projection p[2] = {{w_.in_proj_qkvz, E, nullptr, proj}, {w_.in_proj_ba, 2 * NV, nullptr, ba}};
  ops::linear_multi(x, Q, d_, p, 2);

  unpack(proj, ba, Q, mixed, z, beta, g);
  ops::causal_conv1d(mixed, CD, Q, CD, w_.conv_w, nullptr, s_.d_conv, true, sts[0]->conv.data(), qkv);
  const float qscale = float(1.0 / std::sqrt(double(DK)));
  for (int64_t t = 0; t < Q; ++t)
    for (int64_t kh = 0; kh < NK; ++kh) {
      gdn_l2_normalize(qkv + t * CD + kh * DK, DK, qscale);
      gdn_l2_normalize(qkv + t * CD + KD + kh * DK, DK, 1.0f);
    }

  // Per value head, WY chunk by chunk from the carried state.
  const int64_t C = std::min(Q, s_.chunk);
  const size_t per_thread = GdnChunkWork::floats(C, DK, DV);
  float* scratch = ws.get(Workspace::kScores, size_t(omp_get_max_threads()) * per_thread);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < NV; ++h) {
    float* own = scratch + size_t(omp_get_thread_num()) * per_thread;
    const int64_t kh = h / R;
    for_each_chunk(Q, C, [&](int64_t t0, int64_t n) {
      const float* row = qkv + t0 * CD;
      gdn_chunk_head(row + kh * DK, row + KD + kh * DK, row + 2 * KD + h * DV, CD, beta + t0 * NV + h,
                     g + t0 * NV + h, NV, n, DK, DV, sts[0]->S.data() + h * DK * DV, true,
                     core + t0 * VD + h * DV, VD, GdnChunkWork(own, n, DK, DV));
    });
  }

  // Per-head RMSNorm (weight over head_v_dim) gated by SiLU(z), then out_proj.
  for (int64_t th = 0; th < Q * NV; ++th) gated_norm(core + th * DV, z + th * DV);
  sts[0]->pos += Q;
  ops::linear(core, Q, VD, w_.out_proj, d_, nullptr, y);
}

}  // namespace braid
