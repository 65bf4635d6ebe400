// Gated DeltaNet mixer. Prefill runs chunk by chunk in the WY / UT-transform form: inside a
// chunk the delta-rule corrections are one unit-lower-triangular solve, the outputs and
// the state update are GEMMs, and the state is carried across chunks; decode is the
// direct recurrence. Decays stay in log space: inside a chunk only exp(c_i - c_j) with
// i >= j and exp(c_i) relative to the chunk start are formed, all <= 1.
#pragma once
#include <cmath>
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

// x <- x / sqrt(sum x^2 + 1e-6) * scale (the q / k normalisation).
void gdn_l2_normalize(float* x, int64_t n, float scale);

// Scratch of one value head's chunk of n tokens: c [n] (cumulative log decay from the chunk
// start), A [n][n] (strictly lower: b_i exp(c_i - c_j) k_i.k_j), P [n][n] (q_i.k_j exp(c_i -
// c_j), j <= i, else 0), UW [n][DV + DK] (the solve's result), vnew [n][DV] (the corrected
// values b_i e_i), qe [n][DK] (q exp(c)), kd [n][DK] (k exp(c_last - c)).
struct GdnChunkWork {
  GdnChunkWork(float* p, int64_t n, int64_t DK, int64_t DV);
  static size_t floats(int64_t n, int64_t DK, int64_t DV) {
    return size_t(n + 2 * n * n + n * (DV + DK) + n * DV + 2 * n * DK);
  }
  float *c, *A, *P, *UW, *vnew, *qe, *kd;
};

// One value head's chunk in the WY / UT-transform form, from the state S [DK][DV]: q, k, v
// rows have stride ld, beta and g (log decay) stride gld. Writes the outputs o (rows ldo;
// skipped when null), fills w, and when `advance` carries S to the chunk's end.
void gdn_chunk_head(const float* q, const float* k, const float* v, int64_t ld, const float* beta,
                    const float* g, int64_t gld, int64_t n, int64_t DK, int64_t DV, float* S, bool advance,
                    float* o, int64_t ldo, const GdnChunkWork& w);

class GatedDeltaNetState final : public State {
 public:
  explicit GatedDeltaNetState(const GatedDeltaNetSpec& s)
      : conv(static_cast<size_t>(s.conv_dim() * (s.d_conv - 1)), 0.0f),
        S(static_cast<size_t>(s.n_v_heads * s.head_k_dim * s.head_v_dim), 0.0f) {}
  int64_t position() const override { return pos; }
  size_t bytes() const override { return (conv.size() + S.size()) * sizeof(float); }
  std::unique_ptr<State> clone() const override { return std::make_unique<GatedDeltaNetState>(*this); }
  void fields(StateFields& f) override {
    f.floats(conv);
    f.floats(S);
    f.count(pos);
  }

  std::vector<float> conv;  // [d_conv - 1][conv_dim] (q | k | v channels), oldest first
  std::vector<float> S;     // [n_v_heads][head_k_dim][head_v_dim]
  int64_t pos = 0;
};

struct GatedDeltaNetWeights {
  ops::MatRef in_proj_qkvz, in_proj_ba;              // [2K + 2V][D], [2 n_v][D]
  const float* conv_w = nullptr;                     // [conv_dim][d_conv]
  const float *dt_bias = nullptr, *A_log = nullptr;  // [n_v]
  const float* norm = nullptr;                       // [head_v_dim]
  ops::MatRef out_proj;                              // [D][V]
};

class GatedDeltaNetMixer final : public Mixer {
 public:
  GatedDeltaNetMixer(const GatedDeltaNetSpec& spec, int64_t d_model, GatedDeltaNetWeights w);
  const char* kind() const override { return "gated_deltanet"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void decode_batch(const float* x, int64_t B, int64_t D, State* const* states, float* y,
                    Workspace& ws) const override;
  // Chunked backward from chunk-start states (gated_deltanet_backward.cpp).
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  size_t fixed_state_bytes() const override;
  size_t bytes_per_token() const override { return 0; }

 private:
  // Splits the projections of Q tokens into the conv input [q | k | v] (mixed), z, beta
  // and the log decay g = A softplus(alpha + dt_bias).
  void unpack(const float* proj, const float* ba, int64_t Q, float* mixed, float* z, float* beta,
              float* g) const;
  // The same for token t's key head kh: its q, k and value heads' v, z, beta and g.
  void unpack_head(const float* proj, const float* ba, int64_t t, int64_t kh, float* mixed, float* z,
                   float* beta, float* g) const;
  // RMSNorm of one value head's output o (weight over head_v_dim), gated by SiLU(z), in place.
  void gated_norm(float* o, const float* z) const;
  // One token of each of B sequences in a single parallel region.
  void step(const float* x, int64_t B, GatedDeltaNetState* const* sts, float* y, Workspace& ws) const;
  // One workspace buffer for Q rows: projections, de-interleaved q|k|v, conv output, z, beta,
  // log decay, core output.
  struct Buffers {
    float *proj, *ba, *mixed, *qkv, *z, *core, *beta, *g;
  };
  Buffers buffers(int64_t Q, Workspace& ws) const;
  void chunk(const float* x, int64_t Q, GatedDeltaNetState* const* sts, int64_t nseq, float* y,
             Workspace& ws) const;
  GatedDeltaNetSpec s_;
  int64_t d_;
  GatedDeltaNetWeights w_;
  // -exp(A_log) of a value head, formed when used: weights may change during training.
  float A(int64_t h) const { return -std::exp(w_.A_log[h]); }
};

}  // namespace braid
