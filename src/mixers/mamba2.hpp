// Mamba-2 (SSD) mixer. Prefill runs in chunks with the state-space dual form: inside a
// chunk the output is a masked (decay-weighted) attention-like product computed with
// GEMMs, and the state is carried from chunk to chunk; decode is the same code with a
// chunk of one token. Decays stay in log space and only exp(s_t - s_j) with j <= t
// (never positive) is formed inside a chunk.
#pragma once
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

// Scratch of one head's SSD chunk of n tokens: M [n][n] ((C_t . B_j) exp(cum_t - cum_j) dt_j,
// j <= t, else 0), cum [n] (cumulative log decay from the chunk start), dt [n] (the head's dt
// in a row), Bw [n][N], Xs [n][P].
struct SsdChunkWork {
  SsdChunkWork(float* p, int64_t n, int64_t P, int64_t N);
  static size_t floats(int64_t n, int64_t P, int64_t N) { return size_t(n * n + 2 * n + n * N + n * P); }
  float *M, *cum, *dt, *Bw, *Xs;
};

// One head's chunk in the state-space dual form, from the state S [P][N]: X, B, C rows have
// stride ld; dt and la (= dt A) stride hld. Writes y = M X + exp(cum) C S^T + D X (rows ldy;
// skipped when Y is null), fills w, and when `advance` carries S to the chunk's end. CB: the
// chunk's products C_t . B_j [n][n], which the heads of a group share, or null to compute
// them here.
void ssd_chunk_head(const float* X, const float* B, const float* C, int64_t ld, const float* dt,
                    const float* la, int64_t hld, int64_t n, int64_t P, int64_t N, float D, float* S,
                    bool advance, float* Y, int64_t ldy, const SsdChunkWork& w, const float* CB = nullptr);

class Mamba2State final : public State {
 public:
  Mamba2State(int64_t conv_dim, int64_t d_conv, int64_t n_heads, int64_t head_dim, int64_t d_state)
      : conv(size_t(conv_dim * (d_conv - 1)), 0.0f), ssm(size_t(n_heads * head_dim * d_state), 0.0f) {}
  int64_t position() const override { return pos; }
  size_t bytes() const override { return (conv.size() + ssm.size()) * sizeof(float); }
  std::unique_ptr<State> clone() const override { return std::make_unique<Mamba2State>(*this); }
  void fields(StateFields& f) override {
    f.floats(conv);
    f.floats(ssm);
    f.count(pos);
  }

  std::vector<float> conv;  // [d_conv - 1][conv_dim], oldest first
  std::vector<float> ssm;   // [n_heads][head_dim][d_state]
  int64_t pos = 0;
};

struct Mamba2Weights {
  ops::MatRef in_proj;
  const float* in_proj_b = nullptr;
  const float *conv_w = nullptr, *conv_b = nullptr;
  const float *dt_bias = nullptr, *A_log = nullptr, *D = nullptr;
  const float* norm = nullptr;  // null for Mamba2Norm::GateOnly
  ops::MatRef out_proj;
  const float* out_proj_b = nullptr;
};

class Mamba2Mixer final : public Mixer {
 public:
  Mamba2Mixer(const Mamba2Spec& spec, int64_t d_model, Mamba2Weights w);
  const char* kind() const override { return "mamba2"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void decode_batch(const float* x, int64_t B, int64_t D, State* const* states, float* y,
                    Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  void refresh_derived() override;
  size_t fixed_state_bytes() const override;
  size_t bytes_per_token() const override { return 0; }

 private:
  // Q rows of one sequence (nseq 1), or one token of each of Q sequences (nseq == Q).
  void chunk(const float* x, int64_t Q, Mamba2State* const* sts, int64_t nseq, float* y, Workspace& ws) const;
  // One token of each of B sequences in a single parallel region.
  void step(const float* x, int64_t B, Mamba2State* const* sts, float* y, Workspace& ws) const;
  float step_dt(float raw, int64_t h) const;  // clamp(softplus(raw + dt_bias[h]))
  // Multiplies the in_proj outputs in [from, to) (rows of E from `rows`) by their section's multiplier.
  void scale_sections(float* from, float* to, const float* rows, int64_t E) const;
  static void gate(float* v, const float* z, int64_t n);  // v *= silu(z)
  // RMSNorm of the group of gs channels from g0 (v, z at that group), then the gate if it follows.
  void norm_group(float* v, const float* z, int64_t g0, int64_t gs) const;
  Mamba2Spec s_;
  int64_t d_;
  Mamba2Weights w_;
  std::vector<float> A_;  // -exp(A_log) per head
  bool scaled_ = false;   // some proj_multipliers differ from 1
};

}  // namespace braid
