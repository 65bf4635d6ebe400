#include "mixers/memory_context.hpp"

#include <cstring>

#include "core/error.hpp"
#include "ops/cpu/elementwise.hpp"

namespace braid {

MemoryContextMixer::MemoryContextMixer(std::unique_ptr<Mixer> attention, std::unique_ptr<TitansMixer> memory,
                                       const float* read_q, const float* persistent, int64_t n_persistent,
                                       int64_t d_model)
    : attention_(std::move(attention)),
      memory_(std::move(memory)),
      read_q_(read_q),
      persistent_(persistent),
      n_persistent_(n_persistent),
      d_(d_model) {
  check(attention_ && memory_ && read_q_,
        "memory as context needs an attention mixer, a titans memory and a query projection");
  check(n_persistent_ == 0 || persistent_ != nullptr, "memory as context: persistent rows are missing");
}

std::unique_ptr<State> MemoryContextMixer::make_state() const {
  auto s = std::make_unique<CompositeState>();
  s->parts.push_back(attention_->make_state());
  s->parts.push_back(memory_->make_state());
  return s;
}

size_t MemoryContextMixer::fixed_state_bytes() const {
  const int64_t rows = n_persistent_ + 2 * memory_->chunk();
  return memory_->fixed_state_bytes() + attention_->fixed_state_bytes() +
         size_t(rows) * attention_->bytes_per_token();
}

int64_t MemoryContextMixer::interleave(const float* h, const float* x, int64_t n, bool first,
                                       float* z) const {
  const size_t row = size_t(d_) * sizeof(float);
  int64_t r = 0;
  if (first && n_persistent_ > 0) {
    std::memcpy(z, persistent_, size_t(n_persistent_) * row);
    r = n_persistent_;
  }
  for (int64_t j = 0; j < n; ++j, r += 2) {
    std::memcpy(z + r * d_, h + j * d_, row);
    std::memcpy(z + (r + 1) * d_, x + j * d_, row);
  }
  return r;
}

void MemoryContextMixer::run(const float* x, int64_t T, CompositeState& st, float* out, Workspace& ws,
                             Trace* trace) const {
  auto* mem = dynamic_cast<TitansState*>(st.parts[1].get());
  check(mem != nullptr && st.parts[0] != nullptr, "memory as context was given a state of another mixer");
  const int64_t D = d_, C = memory_->chunk();
  std::vector<float> h;
  for (int64_t t0 = 0; t0 < T;) {
    const bool first = mem->pos % C == 0;
    const int64_t n = std::min(T - t0, C - mem->pos % C);
    if (first) st.parts[0] = attention_->make_state();  // the attention sees one chunk
    h.resize(size_t(n * D));
    memory_->read(x + t0 * D, n, read_q_, memory_->chunk_start_memory(*mem), h.data());
    const int64_t rows = (first ? n_persistent_ : 0) + 2 * n;
    float* z = ws.get(Workspace::kBranchIn, size_t(rows * D));
    interleave(h.data(), x + t0 * D, n, first, z);
    float* a = ws.get(Workspace::kBranchOut, size_t(rows * D));
    attention_->forward(z, rows, *st.parts[0], a, ws);
    float* y = out + t0 * D;
    const int64_t skip = rows - 2 * n;  // persistent rows
    for (int64_t j = 0; j < n; ++j)
      std::memcpy(y + j * D, a + (skip + 2 * j + 1) * D, size_t(D) * sizeof(float));
    float* m = ws.get(Workspace::kBranchIn, size_t(n * D));
    memory_->forward(y, n, *mem, m, ws);
    if (trace) {
      std::copy(h.begin(), h.end(), trace->h.begin() + t0 * D);
      std::copy(y, y + n * D, trace->y.begin() + t0 * D);
      std::copy(m, m + n * D, trace->m.begin() + t0 * D);
    }
    for (int64_t i = 0; i < n * D; ++i) y[i] *= ops::sigmoid(m[i]);
    t0 += n;
  }
}

void MemoryContextMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<CompositeState*>(&state);
  check(st != nullptr && st->parts.size() == 2, "memory as context was given a state of another mixer");
  run(x, T, *st, y, ws, nullptr);
}

// Chunks in reverse. For chunk c the memory's recurrence goes first (it consumed y last);
// then dL/dy of the chunk is complete and flows through the attention into the tokens and
// the readings; the readings' gradient with respect to the memory entering the chunk joins
// the memory's own before the chunk before it.
void MemoryContextMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const {
  const int64_t D = d_, C = memory_->chunk(), P = n_persistent_;
  const size_t n_all = size_t(T * D);
  Trace tr{std::vector<float>(n_all), std::vector<float>(n_all), std::vector<float>(n_all)};
  {
    std::vector<float> out(n_all);
    Workspace ws;
    std::unique_ptr<State> st = make_state();
    run(x, T, static_cast<CompositeState&>(*st), out.data(), ws, &tr);
  }
  TitansMixer::Tape tape;
  memory_->record(tr.y.data(), T, tape);
  // out = y * sigmoid(m)
  std::vector<float> dyy(n_all), dm(n_all);
  for (size_t i = 0; i < n_all; ++i) {
    const float s = ops::sigmoid(tr.m[i]);
    dyy[i] = dy[i] * s;
    dm[i] = dy[i] * tr.y[i] * s * (1.0f - s);
  }
  memory_->backward_output(tape, dm.data(), g);
  std::fill(dx, dx + n_all, 0.0f);
  const int64_t H = tape.dM.size() / size_t(memory_->net().size()), Pm = memory_->net().size();
  float* dpers = P > 0 ? g.of(persistent_) : nullptr;
  std::vector<float> z, a, dz, M0(size_t(H * Pm));
  for (int64_t c = tape.nch - 1; c >= 0; --c) {
    const int64_t t0 = c * C, n = std::min(C, T - t0), rows = P + 2 * n;
    memory_->backward_chunk(tape, c);
    memory_->backward_inputs(tr.y.data(), tape, t0, n, dyy.data(), true, g);
    z.assign(size_t(rows * D), 0.0f), a.assign(z.size(), 0.0f), dz.assign(z.size(), 0.0f);
    interleave(&tr.h[size_t(t0 * D)], x + t0 * D, n, true, z.data());
    for (int64_t j = 0; j < n; ++j)
      std::memcpy(&a[size_t((P + 2 * j + 1) * D)], &dyy[size_t((t0 + j) * D)], size_t(D) * sizeof(float));
    attention_->backward(z.data(), rows, a.data(), dz.data(), g);
    if (dpers)
      for (int64_t i = 0; i < P * D; ++i) dpers[i] += dz[size_t(i)];
    std::vector<float>& dh = a;  // the readings' gradient, gathered
    for (int64_t j = 0; j < n; ++j) {
      const float* row = &dz[size_t((P + 2 * j) * D)];
      std::memcpy(&dh[size_t(j * D)], row, size_t(D) * sizeof(float));
      for (int64_t i = 0; i < D; ++i) dx[(t0 + j) * D + i] += row[D + i];
    }
    for (int64_t h = 0; h < H; ++h)
      std::memcpy(&M0[size_t(h * Pm)], &tape.ckM[size_t((h * tape.nch + c) * Pm)],
                  size_t(Pm) * sizeof(float));
    memory_->read_backward(x + t0 * D, n, read_q_, M0.data(), dh.data(), dx + t0 * D, tape.dM.data(), g);
  }
  memory_->backward_finish(tape, g);
}

}  // namespace braid
