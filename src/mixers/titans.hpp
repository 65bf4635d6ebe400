// Titans-style neural long-term memory mixer (TitansSpec): per head, a memory network
// trained at test time by gradient descent with momentum and forgetting. Prefill and
// decode run the same per-token recurrence; gradients use the memory at the start of
// each token's chunk, so any split of a sequence into calls gives the same result.
#pragma once
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

// The memory network of one head over flat parameters M: depth 1, M = W [d][d] and
// M(x) = W x; depth 2, M = [W1 [m][d] | W2 [d][m]] and M(x) = W2 silu(W1 x). Functions
// add into their outputs (`+=`) unless named otherwise; `tmp` holds scratch().
struct MemoryNet {
  int64_t d = 0, m = 0, depth = 1;
  int64_t size() const { return depth == 1 ? d * d : 2 * m * d; }
  int64_t scratch() const { return 7 * std::max(d, m) + 2 * d; }
  // y = M(x) (written).
  void apply(const float* M, const float* x, float* y, float* tmp) const;
  // dM += d(dy . M(x))/dM, dx += d(dy . M(x))/dx.
  void apply_backward(const float* M, const float* x, const float* dy, float* dM, float* dx,
                      float* tmp) const;
  // U += scale * grad_M ||M(k) - v||^2.
  void grad(const float* M, const float* k, const float* v, float scale, float* U, float* tmp) const;
  // For dU, the gradient of a loss with respect to u = grad_M ||M(k) - v||^2: dM, dk, dv +=
  // that loss's gradients through u (dM is a Hessian-vector product).
  void grad_backward(const float* M, const float* k, const float* v, const float* dU, float* dM, float* dk,
                     float* dv, float* tmp) const;
};

class TitansState final : public State {
 public:
  TitansState(int64_t heads, int64_t mem_size, int64_t window, int64_t d);
  int64_t position() const override { return pos; }
  size_t bytes() const override;
  std::unique_ptr<State> clone() const override { return std::make_unique<TitansState>(*this); }
  void fields(StateFields& f) override {
    f.floats(M);
    f.floats(M0);
    f.floats(S);
    f.floats(win_k);
    f.floats(win_v);
    f.count(pos);
  }

  // Per head: the memory now, the memory at the current chunk's start, the momentum.
  std::vector<float> M, M0, S;  // [heads][mem_size] each
  // Normalised keys and values of the last window - 1 tokens, oldest first:
  // [window - 1][heads][d] each (only the last min(pos, window - 1) rows are valid).
  std::vector<float> win_k, win_v;
  int64_t pos = 0;
};

struct TitansWeights {
  ops::MatRef q, k, v;             // [H d][D] each
  ops::MatRef gates;               // [3 H][D]: alpha | eta | theta
  const float* gates_b = nullptr;  // [3 H]
  const float* memory = nullptr;   // [H][mem size]: initial memory
  const float* norm = nullptr;     // [d]
  ops::MatRef out;                 // [D][H d]
};

class TitansMixer final : public Mixer {
 public:
  TitansMixer(const TitansSpec& spec, int64_t d_model, TitansWeights w);
  const char* kind() const override { return "titans"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  size_t fixed_state_bytes() const override;
  size_t bytes_per_token() const override { return 0; }

  const MemoryNet& net() const { return net_; }
  int64_t chunk() const { return s_.chunk; }

  // Memory as context (MemoryContextMixer) reads the memory without updating it.
  // The memory entering the chunk that holds the state's next token: [H][mem size].
  const float* chunk_start_memory(const TitansState& st) const {
    return (st.pos % s_.chunk == 0 ? st.M : st.M0).data();
  }
  // h[T, D] = out(norm(M(normalize(Wq x)))): the retrieval path of forward() with a query
  // projection Wq ([H d][D]) and a memory M ([H][mem size]) given, and no update.
  void read(const float* x, int64_t T, const float* Wq, const float* M, float* h) const;
  // Its backward: dx += dL/dx, dM += dL/dM, parameter gradients (Wq's too) into g.
  void read_backward(const float* x, int64_t T, const float* Wq, const float* M, const float* dh, float* dx,
                     float* dM, GradSink& g) const;

  // Inputs of the recurrence for T tokens: normalised q, k ([T][H d]), v, the gates
  // alpha, eta, theta ([T][3 H]), and what the backward needs (raw q, k, gate inputs).
  struct Inputs {
    std::vector<float> q, k, v, gates, q_raw, k_raw, gates_raw;
  };
  // The backward in pieces, for a layer that interleaves the memory with other mixers chunk
  // by chunk (memory as context). record() replays a sequence from an empty state;
  // backward_output() takes dL/dy; backward_chunk(c) then runs for c from the last chunk to
  // the first: afterwards `dM` holds, per head, the gradient with respect to the memory
  // entering chunk c (a caller adds its own reads of that memory there), and the rows of
  // chunk c have their complete dq, dk, dv and gate gradients for backward_inputs().
  // backward_finish() adds the initial memory's gradient. backward() is these in order.
  struct Tape {
    int64_t T = 0, nch = 0;
    Inputs in;
    std::vector<float> o;         // retrievals [T][H d]
    std::vector<float> ckM, ckS;  // memory and momentum at chunk starts [H][nch][P]
    std::vector<float> dO, dq, dk, dv, dgate;
    std::vector<float> dM, dS;  // [H][P]: the gradient carried backwards through the chunks
  };
  void record(const float* x, int64_t T, Tape& tape) const;
  void backward_output(Tape& tape, const float* dy, GradSink& g) const;
  void backward_chunk(Tape& tape, int64_t c) const;
  // Rows [r0, r0 + n): dx (rows of x from r0) written or added (`accumulate`).
  void backward_inputs(const float* x, const Tape& tape, int64_t r0, int64_t n, float* dx, bool accumulate,
                       GradSink& g) const;
  void backward_finish(const Tape& tape, GradSink& g) const;

 private:
  void project(const float* x, int64_t T, Inputs& in) const;
  void read_heads(const float* x, int64_t T, const float* Wq, const float* M, float* q_raw, float* q,
                  float* o) const;
  TitansSpec s_;
  int64_t d_;
  TitansWeights w_;
  MemoryNet net_;
};

}  // namespace braid
