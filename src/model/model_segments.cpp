// Segment recurrence with memory tokens (ModelSpec::segment, RMT-style): inference cuts the
// tokens at segment ends, runs the write rows there and starts the next segment from their
// output; training runs every segment forward to find the memories, then backward from the
// last segment to the first, the gradient of each memory flowing into the write rows of the
// segment that produced it (truncated every bptt segments).
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "model/model.hpp"
#include "ops/cpu/elementwise.hpp"

namespace braid {

void Model::start_segment(std::vector<std::unique_ptr<State>>& states, const float* memory, int64_t loops,
                          Workspace& ws) const {
  const int64_t M = spec_.segment.memory_tokens, D = spec_.d_model;
  std::vector<std::unique_ptr<State>> fresh = layer_states(loops);
  for (size_t s = 0; s < fresh.size(); ++s) states[s] = std::move(fresh[s]);
  std::memcpy(ws.get(Workspace::kHidden, size_t(M * D)), memory, size_t(M * D) * sizeof(float));
  forward_rows(M, states, ws, LogitsMode::None, nullptr, nullptr);
}

void Model::forward_segments(const int32_t* tokens, int64_t T, std::vector<std::unique_ptr<State>>& states,
                             Workspace& ws, LogitsMode mode, float* logits) const {
  auto* seg = dynamic_cast<SegmentState*>(states.back().get());
  check(seg != nullptr, "forward: the states are not those of a segmented model");
  const int64_t loops = loops_for_states(states.size());
  const int64_t S = spec_.segment.length, M = spec_.segment.memory_tokens, D = spec_.d_model,
                V = spec_.vocab_size;
  for (int64_t done = 0; done < T;) {
    const int64_t c = std::min(T - done, S - seg->filled);
    embed_tokens(tokens + done, c, ws.get(Workspace::kHidden, size_t(c * D)));
    const bool last = done + c == T;
    const LogitsMode m = mode == LogitsMode::All ? mode : (last ? mode : LogitsMode::None);
    forward_rows(c, states, ws, m, mode == LogitsMode::All ? logits + done * V : logits, nullptr);
    done += c, seg->filled += c, seg->position_ += c;
    if (seg->filled < S) continue;
    // The segment is full: its write rows give the next memory (their final-norm output,
    // which forward_rows leaves in the kNormed slot).
    std::memcpy(ws.get(Workspace::kHidden, size_t(M * D)), seg->memory.data(), size_t(M * D) * sizeof(float));
    forward_rows(M, states, ws, LogitsMode::None, nullptr, nullptr);
    const float* n = ws.get(Workspace::kNormed, size_t(M * D));
    seg->memory.assign(n, n + M * D);
    seg->filled = 0;
    start_segment(states, seg->memory.data(), loops, ws);
  }
}

LossSum Model::segment_loss_and_grad(const int32_t* tokens, const int32_t* targets, int64_t T,
                                     float grad_scale, GradSink& g, int64_t loops) const {
  const SegmentSpec& sg = spec_.segment;
  const int64_t S = sg.length, M = sg.memory_tokens, D = spec_.d_model, MD = M * D;
  const int64_t K = (T + S - 1) / S;  // segments
  if (loops == 0) loops = spec_.loop.enabled() ? spec_.loop.loops : 1;
  auto begin = [&](int64_t k) { return k * S; };
  auto len = [&](int64_t k) { return std::min(S, T - k * S); };
  // The rows entering segment k: [memory, its tokens' embeddings, memory (the write rows,
  // when a later segment reads them)].
  auto rows_of = [&](int64_t k, const float* memory, bool write) {
    std::vector<float> e(static_cast<size_t>((M + len(k) + (write ? M : 0)) * D));
    std::memcpy(e.data(), memory, size_t(MD) * sizeof(float));
    embed_tokens(tokens + begin(k), len(k), &e[size_t(MD)]);
    if (write) std::memcpy(&e[size_t((M + len(k)) * D)], memory, size_t(MD) * sizeof(float));
    return e;
  };
  // Forward: each segment's memory (memories[k] is what segment k reads).
  std::vector<std::vector<float>> memories(static_cast<size_t>(K));
  memories[0].assign(memory_, memory_ + MD);
  Workspace ws;
  for (int64_t k = 0; k + 1 < K; ++k) {
    std::vector<std::unique_ptr<State>> states = layer_states(loops);
    states.push_back(std::make_unique<SegmentState>());  // counted by forward_rows, not used
    const std::vector<float> e = rows_of(k, memories[size_t(k)].data(), true);
    const int64_t R = int64_t(e.size()) / D;
    std::memcpy(ws.get(Workspace::kHidden, size_t(R * D)), e.data(), e.size() * sizeof(float));
    forward_rows(R, states, ws, LogitsMode::None, nullptr, nullptr);
    const float* n = ws.get(Workspace::kNormed, size_t(R * D)) + (R - M) * D;
    memories[size_t(k + 1)].assign(n, n + MD);
  }
  // Backward, last segment first. dmem: dL/d(the memory segment k + 1 reads), zero across a
  // detached boundary.
  LossSum loss;
  std::vector<float> dmem(static_cast<size_t>(MD), 0.0f);
  for (int64_t k = K - 1; k >= 0; --k) {
    // The write rows run only when their gradient is not zero (the last segment's, those
    // across a detached boundary, and those whose later segments had no targets are).
    const bool write = k + 1 < K && std::any_of(dmem.begin(), dmem.end(), [](float v) { return v != 0.0f; });
    std::vector<float> e = rows_of(k, memories[size_t(k)].data(), write);
    std::vector<int64_t> rows;
    std::vector<int32_t> tgt;
    for (int64_t t = 0; t < len(k); ++t)
      if (targets[begin(k) + t] >= 0) rows.push_back(M + t), tgt.push_back(targets[begin(k) + t]);
    const int64_t A = int64_t(rows.size());
    if (write)
      for (int64_t r = 0; r < M; ++r) rows.push_back(M + len(k) + r);
    // The write rows' outputs are the next memory: their gradient is dmem (no loss of their own).
    auto head = [&](const float* x, int64_t n_rows, float* dx) {
      LossSum l = A > 0 ? cross_entropy_head(x, A, tgt.data(), grad_scale, dx, g) : LossSum{};
      if (n_rows > A) std::memcpy(dx + A * D, dmem.data(), size_t(MD) * sizeof(float));
      return l;
    };
    const LossSum l = train_pass(e, rows, head, g, loops);
    loss.sum += l.sum, loss.count += l.count;
    if (float* de = g.of(embed_))
      for (int64_t t = 0; t < len(k); ++t)
        ops::add_inplace(de + int64_t(tokens[begin(k) + t]) * D, &e[size_t((M + t) * D)], D);
    // dL/d(memory k): through its read rows and its write rows.
    std::copy_n(e.data(), MD, dmem.data());
    if (write) ops::add_inplace(dmem.data(), &e[size_t((M + len(k)) * D)], MD);
    if (k == 0) {
      if (float* dm = g.of(memory_)) ops::add_inplace(dm, dmem.data(), MD);
    }
    if (sg.bptt > 0 && k % sg.bptt == 0) std::fill(dmem.begin(), dmem.end(), 0.0f);  // truncated here
  }
  return loss;
}

}  // namespace braid
