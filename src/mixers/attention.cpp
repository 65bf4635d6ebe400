#include "mixers/attention.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

std::unique_ptr<State> KVState::clone_with_room(int64_t more) const {
  auto c = std::make_unique<KVState>(n_kv_, hd_, pinned_);
  c->start_ = start_;
  // At most as much room as the rows held: what growing by doubling would give, and no
  // more than a sliding window keeps.
  c->reserve(len_ + std::clamp<int64_t>(more, 0, rows(len_)));
  const int64_t n = rows(len_);
  for (int64_t g = 0; g < n_kv_; ++g) {
    std::memcpy(c->k_.data() + g * c->cap_ * hd_, k_.data() + g * cap_ * hd_,
                size_t(n * hd_) * sizeof(float));
    std::memcpy(c->v_.data() + g * c->cap_ * hd_, v_.data() + g * cap_ * hd_,
                size_t(n * hd_) * sizeof(float));
  }
  c->len_ = len_;
  return c;
}

void KVState::fields(StateFields& f) {
  int64_t len = len_, start = start_;
  f.count(len);
  f.count(start);
  if (f.loading()) {
    check(start == pinned_ || (start > pinned_ && start <= len), "KV cache: window start ", start,
          " does not fit ", len, " positions with ", pinned_, " pinned");
    len_ = 0;
    start_ = start;
    f.expect_floats(size_t(2 * rows(len) * n_kv_ * hd_));
    reserve(len);
    len_ = len;
  }
  const int64_t n = rows(len_);
  for (int64_t g = 0; g < n_kv_; ++g) f.floats(k_.data() + g * cap_ * hd_, size_t(n * hd_));
  for (int64_t g = 0; g < n_kv_; ++g) f.floats(v_.data() + g * cap_ * hd_, size_t(n * hd_));
}

void KVState::reserve(int64_t n) {
  const int64_t need = rows(n), used = rows(len_);
  if (need <= cap_) return;
  int64_t cap = std::max<int64_t>(cap_ ? cap_ : 64, 64);
  while (cap < need) cap *= 2;
  FloatBuffer nk, nv;
  nk.reserve(size_t(n_kv_ * cap * hd_));
  nv.reserve(size_t(n_kv_ * cap * hd_));
  for (int64_t g = 0; g < n_kv_ && used > 0; ++g) {
    std::memcpy(nk.data() + g * cap * hd_, k_.data() + g * cap_ * hd_, size_t(used * hd_) * sizeof(float));
    std::memcpy(nv.data() + g * cap * hd_, v_.data() + g * cap_ * hd_, size_t(used * hd_) * sizeof(float));
  }
  k_ = std::move(nk);
  v_ = std::move(nv);
  cap_ = cap;
}

void KVState::drop_before(int64_t pos) {
  if (pos <= start_ || len_ <= start_) return;
  const int64_t drop = std::min(pos, len_) - start_, keep = windowed() - drop;
  for (int64_t g = 0; g < n_kv_; ++g) {
    float* kg = k_.data() + (g * cap_ + pinned_) * hd_;
    float* vg = v_.data() + (g * cap_ + pinned_) * hd_;
    std::memmove(kg, kg + drop * hd_, size_t(keep * hd_) * sizeof(float));
    std::memmove(vg, vg + drop * hd_, size_t(keep * hd_) * sizeof(float));
  }
  start_ += drop;
}

std::vector<float> rope_inv_freq(const RopeSpec& r) {
  const int64_t dim = r.rotary_dim;
  std::vector<float> inv(size_t(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    float e = float(2 * i) / float(dim);
    inv[size_t(i)] = 1.0f / std::pow(float(r.theta), e);
  }
  if (r.type == "linear") {
    for (float& f : inv) f = float(f / r.factor);
  } else if (r.type == "llama3") {
    const double low_wavelen = r.original_max_position / r.low_freq_factor;
    const double high_wavelen = r.original_max_position / r.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = float(f / r.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth = (r.original_max_position / wavelen - r.low_freq_factor) /
                              (r.high_freq_factor - r.low_freq_factor);
        f = float((1.0 - smooth) * f / r.factor + smooth * f);
      }
    }
  }
  return inv;
}

AttentionMixer::AttentionMixer(const AttentionSpec& spec, int64_t d_model, double norm_eps,
                               AttentionWeights w)
    : spec_(spec), d_(d_model), eps_(float(norm_eps)), w_(w), inv_freq_(rope_inv_freq(spec.rope)) {}

std::unique_ptr<State> AttentionMixer::make_state() const {
  return std::make_unique<KVState>(spec_.n_kv_heads, spec_.head_dim,
                                   spec_.sliding_window > 0 ? spec_.sink_tokens : 0);
}

void AttentionMixer::project_qkv(const float* x, int64_t T, int64_t p0, float* q, float* k, float* v,
                                 float* gate, float* qg, float* q_pre, float* k_pre,
                                 const int64_t* pos) const {
  const Projections p = projections(q, k, v, qg);
  ops::linear_multi(x, T, d_, p.p, 3);
  shape_qk(T, p0, q, k, gate, qg, q_pre, k_pre, pos);
}

AttentionMixer::Projections AttentionMixer::projections(float* q, float* k, float* v, float* qg) const {
  const int64_t qd = spec_.n_heads * spec_.head_dim, kd = spec_.n_kv_heads * spec_.head_dim;
  if (!spec_.output_gate) qg = q;
  return {
      {{w_.wq, spec_.output_gate ? 2 * qd : qd, w_.bq, qg}, {w_.wk, kd, w_.bk, k}, {w_.wv, kd, w_.bv, v}}};
}

void AttentionMixer::shape_qk(int64_t T, int64_t p0, float* q, float* k, float* gate, const float* qg,
                              float* q_pre, float* k_pre, const int64_t* pos) const {
  const int64_t H = spec_.n_heads, KV = spec_.n_kv_heads, hd = spec_.head_dim;
  const int64_t qd = H * hd, kd = KV * hd;
  if (spec_.output_gate)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const float* src = qg + t * 2 * qd + h * 2 * hd;
        std::memcpy(q + t * qd + h * hd, src, size_t(hd) * sizeof(float));
        std::memcpy(gate + t * qd + h * hd, src + hd, size_t(hd) * sizeof(float));
      }
  if (spec_.key_multiplier != 1.0) {
    const float m = float(spec_.key_multiplier);
    for (int64_t i = 0; i < T * kd; ++i) k[i] *= m;
  }
  if (spec_.qk_norm) {
    if (q_pre) std::memcpy(q_pre, q, size_t(T * qd) * sizeof(float));
    if (k_pre) std::memcpy(k_pre, k, size_t(T * kd) * sizeof(float));
    ops::rmsnorm(q, w_.q_norm, eps_, T * H, hd, q);
    ops::rmsnorm(k, w_.k_norm, eps_, T * KV, hd, k);
  }
  rotate(q, k, T, p0, false, pos);
}

void AttentionMixer::rotate(float* q, float* k, int64_t T, int64_t p0, bool inverse,
                            const int64_t* pos) const {
  // Rotary embedding: angle = float(pos) * inv_freq in f32, as the reference computes it.
  // The inverse rotation (negated sine) is the backward of the forward rotation.
  const int64_t H = spec_.n_heads, KV = spec_.n_kv_heads, hd = spec_.head_dim;
  const int64_t half = spec_.rope.rotary_dim / 2;
  if (half == 0) return;
#pragma omp parallel for schedule(static) if (T > 1)
  for (int64_t t = 0; t < T; ++t) {
    float cs[512], sn[512];
    for (int64_t i = 0; i < half; ++i) {
      const float ang = float(pos ? pos[t] : p0 + t) * inv_freq_[size_t(i)];
      cs[i] = float(std::cos(double(ang)));
      sn[i] = float(std::sin(double(ang)));
      if (inverse) sn[i] = -sn[i];
    }
    for (int64_t h = 0; h < H; ++h) ops::rope_rotate_half(q + t * H * hd + h * hd, cs, sn, 2 * half);
    for (int64_t g = 0; g < KV; ++g) ops::rope_rotate_half(k + t * KV * hd + g * hd, cs, sn, 2 * half);
  }
}

void AttentionMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* kv = dynamic_cast<KVState*>(&state);
  check(kv != nullptr, "attention layer was given a state of another mixer");
  const int64_t H = spec_.n_heads, KV = spec_.n_kv_heads, hd = spec_.head_dim;
  const int64_t qd = H * hd, kd = KV * hd, p0 = kv->length();
  if (T == 1) return step(x, 1, &kv, &p0, y, ws);
  float* q = ws.get(Workspace::kQ, size_t(T * qd));
  float* k = ws.get(Workspace::kK, size_t(T * kd));
  float* v = ws.get(Workspace::kV, size_t(T * kd));
  // With an output gate, q_proj yields [query | gate] per head: gate, then the raw rows.
  float* gate = spec_.output_gate ? ws.get(Workspace::kGate, size_t(3 * T * qd)) : nullptr;
  project_qkv(x, T, p0, q, k, v, gate, gate ? gate + T * qd : nullptr, nullptr, nullptr);
  float* out = ws.get(Workspace::kAttnOut, size_t(T * qd));
  attend(q, k, v, T, *kv, out, ws);
  finish(out, gate, T, y, ws);
  trim(*kv);
}

void AttentionMixer::decode_batch(const float* x, int64_t B, int64_t, State* const* states, float* y,
                                  Workspace& ws) const {
  std::vector<KVState*> kvs(static_cast<size_t>(B));
  std::vector<int64_t> pos(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    kvs[size_t(b)] = dynamic_cast<KVState*>(states[b]);
    check(kvs[size_t(b)] != nullptr, "attention layer was given a state of another mixer");
    pos[size_t(b)] = kvs[size_t(b)]->length();
  }
  step(x, B, kvs.data(), pos.data(), y, ws);
}

void AttentionMixer::step(const float* x, int64_t B, KVState* const* kvs, const int64_t* pos, float* y,
                          Workspace& ws) const {
  const int64_t H = spec_.n_heads, hd = spec_.head_dim, qd = H * hd, kd = spec_.n_kv_heads * hd;
  float* q = ws.get(Workspace::kQ, size_t(B * qd));
  float* k = ws.get(Workspace::kK, size_t(B * kd));
  float* v = ws.get(Workspace::kV, size_t(B * kd));
  // With an output gate, q_proj yields [query | gate] per head: gate, then the raw rows.
  float* gate = spec_.output_gate ? ws.get(Workspace::kGate, size_t(3 * B * qd)) : nullptr;
  float* out = ws.get(Workspace::kAttnOut, size_t(B * qd));
  int64_t L_max = 1;
  for (int64_t b = 0; b < B; ++b) L_max = std::max(L_max, pos[b] + 1);
  // tasks: per_group for each key-value group of each sequence, each up to `per` query heads
  const int64_t G = spec_.n_heads / spec_.n_kv_heads, per = heads_per_task();
  const int64_t per_group = (G + per - 1) / per, per_seq = spec_.n_kv_heads * per_group;
  const size_t own = size_t(per) * size_t(L_max);  // a thread's scores
  float* scores = ws.get(Workspace::kScores, size_t(omp_get_max_threads()) * own);
  const Projections p = projections(q, k, v, gate ? gate + B * qd : nullptr);
  const int64_t rows = p.p[0].out + 2 * kd;
  // One parallel region: the projections' rows shared by the team, the shaping of q / k and
  // the cache appends on one thread, every (sequence, up to four query heads of one key-value
  // group) a task that reads the group's cache once (each row computed as attend() computes a
  // sequence's single row), then o_proj. Row b is sequence b's token.
#pragma omp parallel if (rows * d_ * B >= (int64_t(1) << 15))
  {
    ops::linear_multi_in_team(x, B, d_, p.p, 3);
#pragma omp single
    {
      shape_qk(B, 0, q, k, gate, gate ? gate + B * qd : nullptr, nullptr, nullptr, pos);
      for (int64_t b = 0; b < B; ++b) append_kv(k + b * kd, v + b * kd, 1, *kvs[b]);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < B * per_seq; ++job) {
      const int64_t b = job / per_seq, g = job % per_seq / per_group, part = job % per_group;
      const int64_t h0 = g * G + part * per, nh = std::min(per, G - part * per);
      float* o = out + b * qd + h0 * hd;
      attend_rows(q + b * qd + h0 * hd, h0, nh, pos[b], *kvs[b], o,
                  scores + size_t(omp_get_thread_num()) * own);
      if (gate) gate_output(o, gate + b * qd + h0 * hd, nh * hd);
    }
    ops::linear_in_team(out, B, qd, w_.wo, d_, w_.bo, y, /*barrier=*/false);  // the region ends on one
  }
  for (int64_t b = 0; b < B; ++b) trim(*kvs[b]);
}

// Appends T rows of k, v to the cache and writes the attention of q's T rows over it.
void AttentionMixer::attend(const float* q, const float* k, const float* v, int64_t T, KVState& kvs,
                            float* out, Workspace& ws) const {
  KVState* kv = &kvs;
  const int64_t H = spec_.n_heads, KV = spec_.n_kv_heads, hd = spec_.head_dim, G = H / KV;
  const int64_t qd = H * hd, p0 = kv->length();
  append_kv(k, v, T, *kv);

  // Causal attention by (head, query tile): scores by GEMM, masked softmax, GEMM with V.
  // A tile's keys are the sink positions before its window (ns of them, cache rows from 0)
  // and the contiguous positions [kbeg, kend); score rows are laid out [sinks | window].
  constexpr int64_t TQ = 64;      // query rows per task
  constexpr int64_t kSmallQ = 4;  // tiles up to this many rows skip GEMM
  const int64_t ntile = (T + TQ - 1) / TQ, L_max = p0 + T, W = spec_.sliding_window;
  const int64_t N = W > 0 ? spec_.sink_tokens : 0;
  const int nthreads = omp_get_max_threads();
  float* scores = ws.get(Workspace::kScores, size_t(nthreads) * size_t(TQ * L_max));
  const float scale = score_scale();
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t job = 0; job < H * ntile; ++job) {
    const int64_t h = job / ntile, t0 = (job % ntile) * TQ, t1 = std::min(T, t0 + TQ), nq = t1 - t0;
    const int64_t g = h / G;
    const int64_t kend = p0 + t1;
    const int64_t kbeg = W > 0 ? std::max<int64_t>(0, p0 + t0 - W + 1) : 0;
    const int64_t L = kend - kbeg;
    float* S = scores + size_t(omp_get_thread_num()) * size_t(TQ * L_max);
    if (nq <= kSmallQ) {
      for (int64_t r = 0; r < nq; ++r)
        attend_rows(q + (t0 + r) * qd + h * hd, h, 1, p0 + t0 + r, *kv, out + (t0 + r) * qd + h * hd, S);
      continue;
    }
    const int64_t ns = std::min(N, kbeg), Lt = ns + L;
    float* Sw = S + ns;  // the window's columns
    if (ns > 0) ops::gemm(nq, ns, hd, scale, q + t0 * qd + h * hd, qd, kv->k_at(g, 0), hd, true, 0.0f, S, Lt);
    ops::gemm(nq, L, hd, scale, q + t0 * qd + h * hd, qd, kv->k_at(g, kbeg), hd, true, 0.0f, Sw, Lt);
    for (int64_t r = 0; r < nq; ++r) {
      const int64_t pos = p0 + t0 + r;
      const int64_t lo = (W > 0 ? std::max<int64_t>(0, pos - W + 1) : 0) - kbeg;
      const int64_t hi = pos - kbeg + 1;  // exclusive
      float* row = Sw + r * Lt;
      // Sink positions inside [kbeg, kbeg + lo) stay visible: mask only [kbeg + keep, lo).
      const int64_t keep = std::clamp<int64_t>(N - kbeg, 0, std::max<int64_t>(lo, 0));
      if (ns == 0 && keep == 0) {
        for (int64_t j = 0; j < lo; ++j) row[j] = 0.0f;
        ops::softmax_inplace(row + lo, hi - lo);
      } else {
        for (int64_t j = keep; j < lo; ++j) row[j] = -INFINITY;
        ops::softmax_inplace(row - ns, ns + hi);
      }
      for (int64_t j = hi; j < L; ++j) row[j] = 0.0f;
    }
    float* o = out + t0 * qd + h * hd;
    ops::gemm(nq, hd, L, 1.0f, Sw, Lt, kv->v_at(g, kbeg), hd, false, 0.0f, o, qd);
    if (ns > 0) ops::gemm(nq, hd, ns, 1.0f, S, Lt, kv->v_at(g, 0), hd, false, 1.0f, o, qd);
  }
}

void AttentionMixer::append_kv(const float* k, const float* v, int64_t T, KVState& kv) const {
  const int64_t KV = spec_.n_kv_heads, hd = spec_.head_dim, kd = KV * hd, p0 = kv.length();
  kv.reserve(p0 + T);
  for (int64_t g = 0; g < KV; ++g)
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(kv.k_at(g, p0 + t), k + t * kd + g * hd, size_t(hd) * sizeof(float));
      std::memcpy(kv.v_at(g, p0 + t), v + t * kd + g * hd, size_t(hd) * sizeof(float));
    }
  kv.set_length(p0 + T);
}

float AttentionMixer::score_scale() const {
  return spec_.scale > 0 ? float(spec_.scale) : 1.0f / std::sqrt(float(spec_.head_dim));
}

// One query row of each of a group's heads (few queries, as in decode): scores and weighted
// values as matrix-vector products (GEMM packing would cost more than the arithmetic here),
// each cached row read once for all the heads.
void AttentionMixer::attend_rows(const float* qr, int64_t h0, int64_t nh, int64_t pos, KVState& kv, float* o,
                                 float* S) const {
  const int64_t hd = spec_.head_dim, g = h0 / (spec_.n_heads / spec_.n_kv_heads), W = spec_.sliding_window;
  const int64_t N = W > 0 ? spec_.sink_tokens : 0;
  const int64_t lo = W > 0 ? std::max<int64_t>(0, pos - W + 1) : 0, ns = std::min(N, lo);
  const int64_t L = ns + pos - lo + 1;  // scores per head: [sinks | window]
  const float scale = score_scale();
  if (ns > 0) ops::matvec_multi(kv.k_at(g, 0), qr, nh, hd, ns, hd, scale, S, L);
  ops::matvec_multi(kv.k_at(g, lo), qr, nh, hd, pos - lo + 1, hd, scale, S + ns, L);
  for (int64_t i = 0; i < nh; ++i) ops::softmax_inplace(S + i * L, L);
  ops::vecmat_multi(S + ns, nh, L, kv.v_at(g, lo), pos - lo + 1, hd, o, hd);
  for (int64_t i = 0; i < nh; ++i)
    for (int64_t j = 0; j < ns; ++j) {
      const float* vj = kv.v_at(g, j);
      for (int64_t c = 0; c < hd; ++c) o[i * hd + c] += S[i * L + j] * vj[c];
    }
}

// The output gate and o_proj over T rows of attention output.
void AttentionMixer::finish(float* out, const float* gate, int64_t T, float* y, Workspace&) const {
  const int64_t qd = spec_.n_heads * spec_.head_dim;
  if (spec_.output_gate) gate_output(out, gate, T * qd);
  ops::linear(out, T, qd, w_.wo, d_, w_.bo, y);
}

void AttentionMixer::gate_output(float* out, const float* gate, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] *= ops::sigmoid(gate[i]);
}

// A sliding-window cache keeps the last window - 1 positions (all the next token can see),
// compacting only when it has doubled so the move costs O(1) per token.
void AttentionMixer::trim(KVState& kv) const {
  const int64_t W = spec_.sliding_window;
  if (W > 0 && kv.windowed() > 2 * W) kv.drop_before(kv.length() - W + 1);
}

}  // namespace braid
