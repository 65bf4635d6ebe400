#include "mixers/mamba2.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/dispatch.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"
#include "ops/cpu/recurrence.hpp"

namespace braid {

Mamba2Mixer::Mamba2Mixer(const Mamba2Spec& spec, int64_t d_model, Mamba2Weights w)
    : s_(spec), d_(d_model), w_(w) {
  refresh_derived();
  for (double m : s_.proj_multipliers) scaled_ = scaled_ || m != 1.0;
}

void Mamba2Mixer::refresh_derived() {
  A_.resize(size_t(s_.n_heads));
  for (int64_t h = 0; h < s_.n_heads; ++h) A_[size_t(h)] = -std::exp(w_.A_log[h]);
}

size_t Mamba2Mixer::fixed_state_bytes() const {
  const int64_t conv_dim = s_.d_inner() + 2 * s_.n_groups * s_.d_state;
  return size_t(conv_dim * (s_.d_conv - 1) + s_.n_heads * s_.head_dim * s_.d_state) * sizeof(float);
}

std::unique_ptr<State> Mamba2Mixer::make_state() const {
  return std::make_unique<Mamba2State>(s_.d_inner() + 2 * s_.n_groups * s_.d_state, s_.d_conv, s_.n_heads,
                                       s_.head_dim, s_.d_state);
}

SsdChunkWork::SsdChunkWork(float* p, int64_t n, int64_t P, int64_t N)
    : M(p), cum(M + n * n), dt(cum + n), Bw(dt + n), Xs(Bw + n * N) {
  (void)P;
}

namespace {

// M[t][j] = cb[t][j] * exp(cum_t - cum_j) * dt_j for j <= t, else 0 (cb may be M).
BRAID_DISPATCH void decay_mask(const float* cb, const float* cum, const float* dt, int64_t n, float* M) {
  for (int64_t t = 0; t < n; ++t) {
    const float ct = cum[t];
    for (int64_t j = 0; j <= t; ++j) M[t * n + j] = cb[t * n + j] * (ops::exp_fast(ct - cum[j]) * dt[j]);
    for (int64_t j = t + 1; j < n; ++j) M[t * n + j] = 0.0f;
  }
}

}  // namespace

void ssd_chunk_head(const float* X, const float* B, const float* C, int64_t ld, const float* dt,
                    const float* la, int64_t hld, int64_t n, int64_t P, int64_t N, float D, float* S,
                    bool advance, float* Y, int64_t ldy, const SsdChunkWork& w, const float* CB) {
  float acc = 0.0f;
  for (int64_t t = 0; t < n; ++t) w.cum[t] = acc += la[t * hld], w.dt[t] = dt[t * hld];
  if (!CB) ops::gemm(n, n, N, 1.0f, C, ld, B, ld, true, 0.0f, w.M, n);
  decay_mask(CB ? CB : w.M, w.cum, w.dt, n, w.M);
  if (Y) {
    // Y = M X (intra-chunk) + diag(exp(cum)) C S^T (carried state) + D X (skip).
    ops::gemm(n, P, n, 1.0f, w.M, n, X, ld, false, 0.0f, Y, ldy);
    for (int64_t t = 0; t < n; ++t) {
      const float e = std::exp(w.cum[t]);
      for (int64_t k = 0; k < N; ++k) w.Bw[t * N + k] = C[t * ld + k] * e;  // Bw holds C * decay here
    }
    ops::gemm(n, P, N, 1.0f, w.Bw, N, S, N, true, 1.0f, Y, ldy);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t p = 0; p < P; ++p) Y[t * ldy + p] += D * X[t * ld + p];
  }
  if (!advance) return;
  // S <- exp(cum_last) S + sum_j exp(cum_last - cum_j) dt_j x_j B_j^T  (X^T diag(w) B)
  const float last = w.cum[n - 1];
  for (int64_t j = 0; j < n; ++j) {
    const float wj = std::exp(last - w.cum[j]) * dt[j * hld];
    for (int64_t k = 0; k < N; ++k) w.Bw[j * N + k] = B[j * ld + k] * wj;
    std::memcpy(w.Xs + j * P, X + j * ld, size_t(P) * sizeof(float));
  }
  const float decay = std::exp(last);
  for (int64_t i = 0; i < P * N; ++i) S[i] *= decay;
  ops::gemm_tn(P, N, n, 1.0f, w.Xs, P, w.Bw, N, 1.0f, S, N);
}

void Mamba2Mixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<Mamba2State*>(&state);
  check(st != nullptr, "mamba2 layer was given a state of another mixer");
  for_each_chunk(T, prefill_pass(s_.chunk),
                 [&](int64_t t0, int64_t n) { chunk(x + t0 * d_, n, &st, 1, y + t0 * d_, ws); });
}

void Mamba2Mixer::decode_batch(const float* x, int64_t B, int64_t, State* const* states, float* y,
                               Workspace& ws) const {
  ops::DecodeRows rows;  // the projections read their weights once for all B rows
  std::vector<Mamba2State*> sts = states_as<Mamba2State>(states, B, "mamba2");
  chunk(x, B, sts.data(), B, y, ws);
}

void Mamba2Mixer::step(const float* x, int64_t B, Mamba2State* const* sts, float* y, Workspace& ws) const {
  const int64_t H = s_.n_heads, P = s_.head_dim, N = s_.d_state, G = s_.n_groups, Di = s_.d_inner();
  const int64_t GN = G * N, conv_dim = Di + 2 * GN, E = Di + conv_dim + H, hpg = H / G;
  const size_t f = sizeof(float);
  float* zxbcdt = ws.get(Workspace::kQ, size_t(B * E));      // [z (Di) | x B C (conv_dim) | dt (H)]
  float* xbc = ws.get(Workspace::kK, size_t(B * conv_dim));  // after conv + SiLU
  float* out = ws.get(Workspace::kAttnOut, size_t(B * Di));
  const bool normed = s_.norm != Mamba2Norm::GateOnly;
  // the norm's output, one copy per thread
  float* own_norm = normed ? ws.get(Workspace::kV, size_t(omp_get_max_threads() * B * Di)) : nullptr;
  const int64_t gs = s_.norm_group_size > 0 ? s_.norm_group_size : Di;
  // One parallel region for the step: the projections share their rows among the threads,
  // the convolution splits by channel and the recurrence by (token, head); barriers order the
  // phases. Every thread then normalizes the whole output into its own copy (the same values
  // in each), so out_proj starts without a barrier after one thread's norm. Token b runs
  // against sequence b's state, and each value is what it is alone.
#pragma omp parallel if (E * d_ * B >= 32768)
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t c0 = conv_dim * id / nt, c1 = conv_dim * (id + 1) / nt;
    // This thread's convolution window and weights (and the norm's weights), asked for into
    // its own cache while in_proj streams.
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k + 1 < s_.d_conv; ++k)
        ops::prefetch(sts[b]->conv.data() + k * conv_dim + c0, size_t(c1 - c0) * f);
    ops::prefetch(w_.conv_w + c0 * s_.d_conv, size_t((c1 - c0) * s_.d_conv) * f);
    ops::prefetch(w_.conv_b ? w_.conv_b + c0 : nullptr, size_t(c1 - c0) * f);
    ops::prefetch(normed ? w_.norm : nullptr, size_t(Di) * f);
    ops::linear_in_team(x, B, d_, w_.in_proj, E, w_.in_proj_b, zxbcdt);
    if (scaled_) {
      scale_sections(zxbcdt + B * E * id / nt, zxbcdt + B * E * (id + 1) / nt, zxbcdt, E);
#pragma omp barrier
    }
    for (int64_t b = 0; b < B; ++b)
      ops::causal_conv1d_channels(zxbcdt + b * E + Di, E, 1, conv_dim, c0, c1 - c0, w_.conv_w, w_.conv_b,
                                  s_.d_conv, true, sts[b]->conv.data(), xbc + b * conv_dim);
#pragma omp barrier
      // S = exp(dt A) S + dt x B^T; y = S C + D x, one pass over each head's state; then the
      // gate where it comes before the norm.
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, g = h / hpg;
      const float* X = xbc + b * conv_dim + h * P;
      const float* Bv = xbc + b * conv_dim + Di + g * N;
      const float* C = xbc + b * conv_dim + Di + GN + g * N;
      const float d = step_dt(zxbcdt[b * E + Di + conv_dim + h], h);
      float* o = out + b * Di + h * P;
      ops::decay_update_readout(sts[b]->ssm.data() + h * P * N, P, N, std::exp(d * A_[size_t(h)]), d, X, Bv,
                                C, o);
      for (int64_t p = 0; p < P; ++p) o[p] += w_.D[h] * X[p];
      if (s_.norm != Mamba2Norm::NormThenGate) gate(o, zxbcdt + b * E + h * P, P);
    }
    float* o = out;
    if (normed) {
      o = own_norm + id * B * Di;
      std::memcpy(o, out, size_t(B * Di) * f);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t g0 = 0; g0 < Di; g0 += gs) norm_group(o + b * Di + g0, zxbcdt + b * E + g0, g0, gs);
    }
    ops::linear_in_team(o, B, Di, w_.out_proj, d_, w_.out_proj_b, y,
                        /*barrier=*/false);  // the region ends on one
  }
  for (int64_t b = 0; b < B; ++b) sts[b]->pos += 1;
}

void Mamba2Mixer::chunk(const float* x, int64_t Q, Mamba2State* const* sts, int64_t nseq, float* y,
                        Workspace& ws) const {
  if (nseq == Q) return step(x, Q, sts, y, ws);  // one token per sequence: the recurrent form
  const int64_t H = s_.n_heads, P = s_.head_dim, N = s_.d_state, G = s_.n_groups, Di = s_.d_inner();
  const int64_t GN = G * N, conv_dim = Di + 2 * GN, E = Di + conv_dim + H, hpg = H / G;
  Mamba2State& st = *sts[0];
  // in_proj -> [z (Di) | x B C (conv_dim) | dt (H)] per token.
  float* zxbcdt = ws.get(Workspace::kQ, size_t(Q * E));
  ops::linear(x, Q, d_, w_.in_proj, E, w_.in_proj_b, zxbcdt);
  if (scaled_) scale_sections(zxbcdt, zxbcdt + Q * E, zxbcdt, E);
  float* xbc = ws.get(Workspace::kK, size_t(Q * conv_dim));  // after conv + SiLU
  ops::causal_conv1d(zxbcdt + Di, E, Q, conv_dim, w_.conv_w, w_.conv_b, s_.d_conv, true, st.conv.data(), xbc);

  // dt[t][h] = clamp(softplus(dt_raw + dt_bias)); la[t][h] = dt * A (log decay, <= 0).
  float* dt = ws.get(Workspace::kV, size_t(2 * Q * H));
  float* la = dt + Q * H;
  for (int64_t t = 0; t < Q; ++t)
    for (int64_t h = 0; h < H; ++h) {
      dt[t * H + h] = step_dt(zxbcdt[t * E + Di + conv_dim + h], h);
      la[t * H + h] = dt[t * H + h] * A_[size_t(h)];
    }

  // C_t . B_j within each chunk, per group (its heads share them).
  const int64_t C = std::min(Q, s_.chunk), chunks = (Q + C - 1) / C;
  float* cb = ws.get(Workspace::kChunkProducts, size_t(G * chunks * C * C));
#pragma omp parallel for schedule(static)
  for (int64_t gc = 0; gc < G * chunks; ++gc) {
    const int64_t g = gc / chunks, t0 = gc % chunks * C, n = std::min(C, Q - t0);
    const float* row = xbc + t0 * conv_dim + Di;
    ops::gemm(n, n, N, 1.0f, row + GN + g * N, conv_dim, row + g * N, conv_dim, true, 0.0f, cb + gc * C * C,
              n);
  }

  // Per head, SSD chunk by chunk: intra-chunk dual form + contribution of the carried state,
  // then the new state.
  float* out = ws.get(Workspace::kAttnOut, size_t(Q * Di));
  const size_t per_thread = SsdChunkWork::floats(C, P, N);
  float* scratch = ws.get(Workspace::kScores, size_t(omp_get_max_threads()) * per_thread);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    float* own = scratch + size_t(omp_get_thread_num()) * per_thread;
    const int64_t g = h / hpg;
    for_each_chunk(Q, C, [&](int64_t t0, int64_t n) {
      const float* row = xbc + t0 * conv_dim;
      ssd_chunk_head(row + h * P, row + Di + g * N, row + Di + GN + g * N, conv_dim, dt + t0 * H + h,
                     la + t0 * H + h, H, n, P, N, w_.D[h], st.ssm.data() + h * P * N, true,
                     out + t0 * Di + h * P, Di, SsdChunkWork(own, n, P, N),
                     cb + (g * chunks + t0 / C) * C * C);
    });
  }

  // Output gate and norm: rmsnorm(y * silu(z)), rmsnorm(y) * silu(z) or y * silu(z); the
  // norm works per group of channels.
  const int64_t gs = s_.norm_group_size > 0 ? s_.norm_group_size : Di;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < Q; ++t) {
    float* v = out + t * Di;
    const float* z = zxbcdt + t * E;
    if (s_.norm != Mamba2Norm::NormThenGate) gate(v, z, Di);
    if (s_.norm == Mamba2Norm::GateOnly) continue;
    for (int64_t g0 = 0; g0 < Di; g0 += gs) norm_group(v + g0, z + g0, g0, gs);
  }
  st.pos += Q;
  ops::linear(out, Q, Di, w_.out_proj, d_, w_.out_proj_b, y);
}

float Mamba2Mixer::step_dt(float raw, int64_t h) const {
  float d = ops::softplus(raw + w_.dt_bias[h]);
  d = std::max(d, float(s_.dt_min));
  if (s_.dt_max > 0) d = std::min(d, float(s_.dt_max));
  return d;
}

void Mamba2Mixer::scale_sections(float* from, float* to, const float* rows, int64_t E) const {
  const int64_t Di = s_.d_inner(), GN = s_.n_groups * s_.d_state;
  const int64_t bounds[6] = {0, Di, 2 * Di, 2 * Di + GN, 2 * Di + 2 * GN, E};
  for (float* v = from; v < to; ++v) {
    const int64_t i = (v - rows) % E;
    int sec = 0;
    while (i >= bounds[sec + 1]) ++sec;
    *v *= float(s_.proj_multipliers[size_t(sec)]);
  }
}

void Mamba2Mixer::gate(float* v, const float* z, int64_t n) {
  ops::swiglu(z, v, n, v);  // silu(z) * v, through the dispatched kernel
}

void Mamba2Mixer::norm_group(float* v, const float* z, int64_t g0, int64_t gs) const {
  const double ss = ops::sum_squares(v, gs);
  const float inv = float(1.0 / std::sqrt(ss / double(gs) + s_.norm_eps));
  for (int64_t i = 0; i < gs; ++i) v[i] = w_.norm[g0 + i] * (v[i] * inv);
  if (s_.norm == Mamba2Norm::NormThenGate) gate(v, z, gs);
}

}  // namespace braid
