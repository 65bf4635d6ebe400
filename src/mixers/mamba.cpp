#include "mixers/mamba.hpp"

#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"
#include "ops/cpu/recurrence.hpp"

namespace braid {

namespace {

// RMSNorm over n values of each of `rows` rows (row stride `ld`), in place; w may be null.
void rms_rows(float* x, int64_t rows, int64_t n, int64_t ld, float eps, const float* w) {
  for (int64_t r = 0; r < rows; ++r) {
    float* v = x + r * ld;
    const double ss = ops::sum_squares(v, n);
    const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    for (int64_t i = 0; i < n; ++i) v[i] = w ? w[i] * (v[i] * inv) : v[i] * inv;
  }
}

}  // namespace

MambaMixer::MambaMixer(const MambaSpec& spec, int64_t d_model, MambaWeights w)
    : s_(spec), d_(d_model), w_(w) {
  refresh_derived();
}

void MambaMixer::refresh_derived() {
  A_.resize(size_t(s_.d_inner * s_.d_state));
  for (size_t i = 0; i < A_.size(); ++i) A_[i] = -std::exp(w_.A_log[i]);
}

std::unique_ptr<State> MambaMixer::make_state() const {
  return std::make_unique<MambaState>(s_.d_inner, s_.d_state, s_.d_conv);
}

void MambaMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<MambaState*>(&state);
  check(st != nullptr, "mamba layer was given a state of another mixer");
  for_each_chunk(T, s_.chunk, [&](int64_t t0, int64_t n) { chunk(x + t0 * d_, n, *st, y + t0 * d_, ws); });
}

void MambaMixer::decode_batch(const float* x, int64_t B, int64_t, State* const* states, float* y,
                              Workspace& ws) const {
  std::vector<MambaState*> sts = states_as<MambaState>(states, B, "mamba");
  step(x, B, sts.data(), y, ws);
}

void MambaMixer::step(const float* x, int64_t B, MambaState* const* sts, float* y, Workspace& ws) const {
  const int64_t Di = s_.d_inner, N = s_.d_state, K = s_.d_conv, R = s_.dt_rank, P = R + 2 * N;
  const size_t f = sizeof(float);
  float* xz = ws.get(Workspace::kQ, size_t(B * 2 * Di));  // [x-branch (Di) | gate z (Di)] per token
  float* u = ws.get(Workspace::kK, size_t(B * Di));       // conv + SiLU
  float* dbc = ws.get(Workspace::kV, size_t(B * P));      // [dt_in (R) | B (N) | C (N)]
  float* dt = ws.get(Workspace::kAttnOut, size_t(B * Di));
  float* g = ws.get(Workspace::kScores, size_t(B * Di));  // gated scan output
  // One parallel region for the step: each thread owns a range of channels, for which it
  // computes in_proj's x-branch and gate rows and then the convolution (no barrier between:
  // nothing it reads is another thread's); the other projections share their rows among the
  // threads, the work between them splits by the same channels, and barriers order the
  // phases. Token b runs against sequence b's state; each token's values are what it gets
  // alone.
#pragma omp parallel if (Di * N * B >= 8192)
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t c0 = Di * id / nt, c1 = Di * (id + 1) / nt, n = c1 - c0;
    // This thread's channels' small operands (convolution window and weights, gate vectors),
    // asked for before its first projection, into its own cache, while the projection streams.
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k + 1 < K; ++k) ops::prefetch(sts[b]->conv.data() + k * Di + c0, size_t(n) * f);
    ops::prefetch(w_.conv_w + c0 * K, size_t(n * K) * f);
    ops::prefetch(w_.conv_b ? w_.conv_b + c0 : nullptr, size_t(n) * f);
    ops::prefetch(w_.D + c0, size_t(n) * f);
    ops::prefetch(w_.dt_proj_b ? w_.dt_proj_b + c0 : nullptr, size_t(n) * f);
    ops::linear_rows(x, B, d_, w_.in_proj, 2 * Di, w_.in_proj_b, xz, {{c0, c1}, {Di + c0, Di + c1}});
    for (int64_t b = 0; b < B; ++b)
      ops::causal_conv1d_channels(xz + b * 2 * Di, 2 * Di, 1, Di, c0, n, w_.conv_w, w_.conv_b, K, true,
                                  sts[b]->conv.data(), u + b * Di);
#pragma omp barrier
    ops::linear_in_team(u, B, Di, w_.x_proj, P, nullptr, dbc);
    if (s_.bcdt_norm_eps > 0) {
#pragma omp single
      {
        const float eps = float(s_.bcdt_norm_eps);
        rms_rows(dbc + R, B, N, P, eps, w_.b_norm);
        rms_rows(dbc + R + N, B, N, P, eps, w_.c_norm);
        rms_rows(dbc, B, R, P, eps, w_.dt_norm);
      }
    }
    // dt = softplus(dt_in . dt_proj^T + bias): each thread its channels' rows.
    const ops::MatRef dt_rows = w_.dt_proj.from_row(c0, R);
    for (int64_t b = 0; b < B; ++b) {
      float* d = dt + b * Di + c0;
      ops::linear(dbc + b * P, 1, R, dt_rows, n, w_.dt_proj_b ? w_.dt_proj_b + c0 : nullptr, d);
      ops::softplus_inplace(d, n);
      ops::selective_scan(sts[b]->ssm.data() + c0 * N, A_.data() + c0 * N, n, N, 1, d, u + b * Di + c0, Di,
                          dbc + b * P + R, dbc + b * P + R + N, P, g + b * Di + c0);
      ops::skip_silu_gate(g + b * Di + c0, u + b * Di + c0, w_.D + c0, xz + b * 2 * Di + Di + c0, n);
    }
#pragma omp barrier
    ops::linear_in_team(g, B, Di, w_.out_proj, d_, w_.out_proj_b, y,
                        /*barrier=*/false);  // the region ends on one
  }
  for (int64_t b = 0; b < B; ++b) sts[b]->pos += 1;
}

void MambaMixer::chunk(const float* x, int64_t T, MambaState& st, float* y, Workspace& ws) const {
  if (T == 1) {  // decoding: the step's single parallel region
    MambaState* one = &st;
    return step(x, 1, &one, y, ws);
  }
  const int64_t Di = s_.d_inner, N = s_.d_state, K = s_.d_conv, R = s_.dt_rank, P = R + 2 * N;
  // xz[t] = [x-branch (Di) | gate z (Di)]
  float* xz = ws.get(Workspace::kQ, size_t(T * 2 * Di));
  ops::linear(x, T, d_, w_.in_proj, 2 * Di, w_.in_proj_b, xz);

  // Causal depthwise conv over [previous K-1 inputs | this chunk], then SiLU -> u.
  float* u = ws.get(Workspace::kK, size_t(T * Di));
  ops::causal_conv1d(xz, 2 * Di, T, Di, w_.conv_w, w_.conv_b, K, true, st.conv.data(), u);

  // x_proj -> [dt_in (R) | B (N) | C (N)] per token; optional weightless RMSNorm of each.
  float* dbc = ws.get(Workspace::kV, size_t(T * P));
  ops::linear(u, T, Di, w_.x_proj, P, nullptr, dbc);
  if (s_.bcdt_norm_eps > 0) {
    const float eps = float(s_.bcdt_norm_eps);
    rms_rows(dbc + R, T, N, P, eps, w_.b_norm);
    rms_rows(dbc + R + N, T, N, P, eps, w_.c_norm);
    rms_rows(dbc, T, R, P, eps, w_.dt_norm);
  }
  // dt = softplus(dt_in . dt_proj^T + bias), [T][Di]. dt_in rows have stride P: an f32
  // matrix multiplies them in place through a GEMM with lda = P; a compact one gathers them.
  float* dt = ws.get(Workspace::kAttnOut, size_t(T * Di));
  if (w_.dt_proj.dtype == DType::F32) {
    for (int64_t t = 0; t < T; ++t) std::memcpy(dt + t * Di, w_.dt_proj_b, size_t(Di) * sizeof(float));
    ops::gemm(T, Di, R, 1.0f, dbc, P, w_.dt_proj.f32(), R, true, 1.0f, dt, Di);
  } else {
    float* dt_in = ws.get(Workspace::kGate, size_t(T * R));
    for (int64_t t = 0; t < T; ++t) std::memcpy(dt_in + t * R, dbc + t * P, size_t(R) * sizeof(float));
    ops::linear(dt_in, T, R, w_.dt_proj, Di, w_.dt_proj_b, dt);
  }

  // dt's softplus, the selective scan and the gate, channels split across threads; gated
  // output into `g`.
  float* g = ws.get(Workspace::kScores, size_t(T * Di));
  const float* B = dbc + R;
#pragma omp parallel if (Di * N * T >= 8192)
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t c0 = Di * id / nt, c1 = Di * (id + 1) / nt;
    for (int64_t t = 0; t < T; ++t) ops::softplus_inplace(dt + t * Di + c0, c1 - c0);
    ops::selective_scan(st.ssm.data() + c0 * N, A_.data() + c0 * N, c1 - c0, N, T, dt + c0, u + c0, Di, B,
                        B + N, P, g + c0);
    for (int64_t t = 0; t < T; ++t)
      ops::skip_silu_gate(g + t * Di + c0, u + t * Di + c0, w_.D + c0, xz + t * 2 * Di + Di + c0, c1 - c0);
  }
  st.pos += T;
  ops::linear(g, T, Di, w_.out_proj, d_, w_.out_proj_b, y);
}

}  // namespace braid
