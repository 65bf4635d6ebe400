// The token-mixer interface. Every mixer (attention now; recurrences and memories
// later) takes T new tokens and a per-sequence State and continues from it: T == 1 is
// decode, T > 1 is (chunked) prefill. The State is the only per-sequence memory.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/buffer.hpp"
#include "core/error.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

// Visits a State's contents field by field, either to save them or to load them into a
// state that the same model made (so it already has its shapes): one method per State
// serves both directions (runtime/snapshot_file.hpp holds the format).
class StateFields {
 public:
  virtual ~StateFields() = default;
  virtual bool loading() const = 0;
  // A count or position: loading refuses a negative or absurdly large one.
  virtual void count(int64_t& v) = 0;
  // n floats at p: written, or read (the stored count must be n).
  virtual void floats(float* p, size_t n) = 0;
  void floats(std::vector<float>& v) { floats(v.data(), v.size()); }
  // Whether an optional part (a null state) is there: loading checks it matches.
  virtual void present(bool there) = 0;
  // Loading: throws unless at least n more floats are stored (checked before allocating).
  virtual void expect_floats(size_t n) = 0;
};

// Per-layer, per-sequence memory: a KV cache (grows with context) or a recurrent
// state (fixed size). A Session snapshots and restores any model through this.
class State {
 public:
  virtual ~State() = default;
  virtual int64_t position() const = 0;  // tokens consumed so far
  virtual size_t bytes() const = 0;      // bytes of sequence memory held now
  virtual std::unique_ptr<State> clone() const = 0;
  // A copy with room for `more` further positions where room is allocated (a KV cache), so
  // a session restored from a snapshot does not grow, and copy, its cache again at once.
  virtual std::unique_ptr<State> clone_with_room(int64_t more) const { return clone(); }
  // Saves or loads every field that a continuation reads.
  virtual void fields(StateFields& f) = 0;
};

// Several states held as one (the branches of a parallel block, or a token mixer and a
// stateful channel mixer). Parts may be null; position() is that of the first non-null.
class CompositeState final : public State {
 public:
  int64_t position() const override;
  size_t bytes() const override;
  std::unique_ptr<State> clone() const override { return clone_with_room(0); }
  std::unique_ptr<State> clone_with_room(int64_t more) const override;
  void fields(StateFields& f) override;

  std::vector<std::unique_ptr<State>> parts;
};

// Scratch buffers that live in a Session and only grow, so steady-state decoding
// does not allocate. Slots are named so users do not trample each other.
class Workspace {
 public:
  enum Slot {
    kHidden,
    kNormed,
    kMixOut,
    kMlpA,
    kMlpB,
    kMoeX,
    kMoeY,
    kMoeR,
    kQ,
    kK,
    kV,
    kAttnOut,
    kScores,
    kGate,
    kBranchIn,
    kBranchOut,
    kMoeWeight,
    kLoopInput,
    kChunkProducts,
    kNumSlots
  };
  float* get(Slot s, size_t n) { return buf_[s].reserve(n); }
  // Integer scratch (routing decisions), growing like the float slots.
  enum IntSlot { kMoeChosen, kMoeOrder, kMoeRows, kNumIntSlots };
  int32_t* get_int(IntSlot s, size_t n) {
    std::vector<int32_t>& v = ibuf_[s];
    if (v.size() < n) v.resize(n);
    return v.data();
  }

 private:
  FloatBuffer buf_[kNumSlots];
  std::vector<int32_t> ibuf_[kNumIntSlots];
};

// Calls f(t0, n) for consecutive chunks [t0, t0 + n) of at most `chunk` of T tokens;
// chunked mixers bound their activation memory this way.
template <class F>
void for_each_chunk(int64_t T, int64_t chunk, F&& f) {
  for (int64_t t0 = 0; t0 < T; t0 += chunk) f(t0, T - t0 < chunk ? T - t0 : chunk);
}

// Tokens per prefill pass of a mixer whose chunk belongs to its algorithm (the SSD or WY
// chunk, 64 tokens or so): the most whole chunks within kPrefillRows, at least one. The pass
// projects all its tokens at once, then runs the algorithm chunk by chunk: a projection of
// 64 rows runs at about 70% of the speed of one of 512 (docs/benchmarks.md), and the pass's
// activations stay bounded.
inline constexpr int64_t kPrefillRows = 512;
inline int64_t prefill_pass(int64_t chunk) {
  return chunk >= kPrefillRows ? chunk : kPrefillRows / chunk * chunk;
}

// For backward passes that keep a recurrent state only at chunk starts: writes the state
// at a chunk's start (`start`, `size` floats) to states[0] and, for each of the chunk's n
// tokens, the state after it to states[j + 1], computed in place by step(j, state).
template <class Step>
void replay_chunk(const float* start, int64_t size, int64_t n, float* states, Step&& step) {
  std::copy(start, start + size, states);
  for (int64_t j = 0; j < n; ++j) {
    std::copy(states + j * size, states + (j + 1) * size, states + (j + 1) * size);
    step(j, states + (j + 1) * size);
  }
}

// Where backward passes add parameter gradients: the gradient buffer (same shape) of a
// weight, found by the weight's address; null for a null weight.
class GradSink {
 public:
  virtual ~GradSink() = default;
  virtual float* of(const float* weight) = 0;
  // A matrix's gradient; throws for one stored in a compact format (training needs f32).
  float* of(const ops::MatRef& weight) { return of(weight.f32()); }
};

class Mixer {
 public:
  virtual ~Mixer() = default;
  virtual const char* kind() const = 0;
  virtual std::unique_ptr<State> make_state() const = 0;
  // y[T, D] = mixer(x[T, D]) given the state; advances the state by T tokens.
  virtual void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const = 0;
  // Batched decoding: one token of each of B sequences, x[B, D] -> y[B, D] (D the model
  // width), states[b] that
  // of sequence b. Row b must equal forward(x[b], 1, *states[b]) bit for bit. The default
  // runs forward() per sequence; a mixer overrides it to project all rows at once (under
  // ops::DecodeRows, row-invariant) and keep only the recurrence per sequence.
  virtual void decode_batch(const float* x, int64_t B, int64_t D, State* const* states, float* y,
                            Workspace& ws) const;
  // Training: given the input x[T, D] of a sequence that starts from an empty state and
  // dL/dy[T, D], writes dL/dx and adds dL/dW into g. Recomputes what it needs from x
  // (activation recomputation), so nothing is kept between forward and backward.
  virtual void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const;
  // Recomputes values a mixer derives from its weights at construction (e.g. -exp(A_log))
  // after the weights change in place (an optimizer step).
  virtual void refresh_derived() {}
  // Bytes of state per sequence that do not depend on context length.
  virtual size_t fixed_state_bytes() const = 0;
  // Bytes of state added per token of context (a KV cache); 0 for recurrences.
  virtual size_t bytes_per_token() const = 0;
};

// The B states of a batch as a mixer's own state type S; throws naming the layer kind if one
// is another mixer's.
template <class S>
std::vector<S*> states_as(State* const* states, int64_t B, const char* kind) {
  std::vector<S*> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    out[size_t(b)] = dynamic_cast<S*>(states[b]);
    check(out[size_t(b)] != nullptr, kind, " layer was given a state of another mixer");
  }
  return out;
}

}  // namespace braid
