// Softmax attention with grouped KV heads, rotary embedding (full or partial, default /
// linear / llama3 scaling), optional q/k RMSNorm and sliding window, over a KV cache.
#pragma once
#include <algorithm>
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

// KV cache of one attention layer for one sequence. Layout per KV head:
// k[g][row][head_dim], so the keys of a head are contiguous for the score GEMM. Positions
// are absolute; a sliding-window layer drops positions it can no longer attend to, except
// the first `pinned` (attention sinks): rows [0, pinned) hold positions [0, pinned), the
// rows after them positions [start, length), start >= pinned.
class KVState final : public State {
 public:
  KVState(int64_t n_kv_heads, int64_t head_dim, int64_t pinned = 0)
      : n_kv_(n_kv_heads), hd_(head_dim), pinned_(pinned), start_(pinned) {}
  int64_t position() const override { return len_; }
  size_t bytes() const override { return size_t(2 * rows(len_) * n_kv_ * hd_) * sizeof(float); }
  std::unique_ptr<State> clone() const override { return clone_with_room(0); }
  std::unique_ptr<State> clone_with_room(int64_t more) const override;
  void fields(StateFields& f) override;

  // Makes room for positions up to n (keeps contents, re-laying out per head on growth).
  void reserve(int64_t n);
  float* k_at(int64_t g, int64_t pos) { return k_.data() + (g * cap_ + row(pos)) * hd_; }
  float* v_at(int64_t g, int64_t pos) { return v_.data() + (g * cap_ + row(pos)) * hd_; }
  int64_t length() const { return len_; }
  int64_t capacity() const { return cap_; }  // rows allocated per KV head
  int64_t start() const { return start_; }
  int64_t pinned() const { return pinned_; }
  // Positions kept after the pinned ones.
  int64_t windowed() const { return std::max<int64_t>(0, len_ - start_); }
  void set_length(int64_t n) { len_ = n; }
  // Forgets unpinned positions before `pos` (moving the rest up behind the pinned rows).
  void drop_before(int64_t pos);

 private:
  int64_t row(int64_t pos) const { return pos < pinned_ ? pos : pinned_ + pos - start_; }
  // Rows in use for positions [0, n).
  int64_t rows(int64_t n) const { return std::min(n, pinned_) + std::max<int64_t>(0, n - start_); }
  int64_t n_kv_, hd_, pinned_, start_, len_ = 0, cap_ = 0;
  FloatBuffer k_, v_;
};

// Weights of one attention layer (row-major [out, in], F32). Biases/norms may be null.
struct AttentionWeights {
  ops::MatRef wq, wk, wv, wo;
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr, *bo = nullptr;
  const float *q_norm = nullptr, *k_norm = nullptr;
};

// Inverse frequencies of the rotary embedding, computed in f32 as the reference does.
std::vector<float> rope_inv_freq(const RopeSpec& r);

class AttentionMixer final : public Mixer {
 public:
  AttentionMixer(const AttentionSpec& spec, int64_t d_model, double norm_eps, AttentionWeights w);
  const char* kind() const override { return "attention"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void decode_batch(const float* x, int64_t B, int64_t D, State* const* states, float* y,
                    Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  // A full-attention cache grows by bytes_per_token(); a sliding-window one keeps at most
  // 2 x window positions between calls.
  size_t fixed_state_bytes() const override {
    return spec_.sliding_window > 0
               ? size_t(2 * spec_.sliding_window + spec_.sink_tokens) * kv_bytes_per_position()
               : 0;
  }
  size_t bytes_per_token() const override { return spec_.sliding_window > 0 ? 0 : kv_bytes_per_position(); }

 private:
  // q[T, H*hd], k, v[T, KV*hd] (q/k normed and rotated for positions p0..) from x; with an
  // output gate, gate[T, H*hd] and the raw q_proj rows qg[T, 2*H*hd]. q_pre / k_pre (may
  // be null) receive q and k before the q/k norm. `pos` (may be null) gives each row its own
  // position instead (batched decoding: rows of different sequences).
  void project_qkv(const float* x, int64_t T, int64_t p0, float* q, float* k, float* v, float* gate,
                   float* qg, float* q_pre, float* k_pre, const int64_t* pos = nullptr) const;
  // The q (or [query | gate] rows qg), k and v projections as one linear_multi.
  struct Projections {
    ops::Projection p[3];
  };
  Projections projections(float* q, float* k, float* v, float* qg) const;
  // project_qkv after the projections: the gate split, the key multiplier, the q/k norm and
  // the rotation.
  void shape_qk(int64_t T, int64_t p0, float* q, float* k, float* gate, const float* qg, float* q_pre,
                float* k_pre, const int64_t* pos) const;
  // One token of each of B sequences (row b at position pos[b] of kvs[b]) in a single
  // parallel region.
  void step(const float* x, int64_t B, KVState* const* kvs, const int64_t* pos, float* y,
            Workspace& ws) const;
  static void gate_output(float* out, const float* gate, int64_t n);  // out *= sigmoid(gate)
  // Rotary embedding of q and k rows for positions p0.. or pos[t] (inverse: rotate back).
  void rotate(float* q, float* k, int64_t T, int64_t p0, bool inverse, const int64_t* pos = nullptr) const;
  // Appends T rows of k, v to the cache; out[T, H*hd] = attention of q's rows over it.
  void attend(const float* q, const float* k, const float* v, int64_t T, KVState& kv, float* out,
              Workspace& ws) const;
  // The factor of q . k: the spec's scale, else 1 / sqrt(head_dim).
  float score_scale() const;
  // Appends T rows of k[T, KV*hd], v to the cache.
  void append_kv(const float* k, const float* v, int64_t T, KVState& kv) const;
  // Attention of the query rows of heads [h0, h0 + nh) (one key-value group's; qr's rows and
  // o's hd apart) at position pos over the cache (which holds pos) into o[nh][hd], the cache
  // read once for all of them, each head's values what it gets alone; S holds nh x (pos + 1)
  // scores.
  void attend_rows(const float* qr, int64_t h0, int64_t nh, int64_t pos, KVState& kv, float* o,
                   float* S) const;
  // Query heads per task of a decode step: up to four of one key-value group.
  int64_t heads_per_task() const { return std::min<int64_t>(4, spec_.n_heads / spec_.n_kv_heads); }
  // Output gate and o_proj: y[T, D] from out[T, H*hd].
  void finish(float* out, const float* gate, int64_t T, float* y, Workspace& ws) const;
  // Drops sliding-window positions no later token can see.
  void trim(KVState& kv) const;
  size_t kv_bytes_per_position() const {
    return size_t(2 * spec_.n_kv_heads * spec_.head_dim) * sizeof(float);
  }
  AttentionSpec spec_;
  int64_t d_;
  float eps_;
  AttentionWeights w_;
  std::vector<float> inv_freq_;
};

}  // namespace braid
