#include "runtime/session.hpp"

#include "core/error.hpp"

namespace braid {

Session::Session(std::shared_ptr<const Model> model, int64_t loops) : model_(std::move(model)) {
  states_ = model_->make_states(loops);
  loops_ = model_->loops_for_states(states_.size());
  logits_.resize(size_t(model_->spec().vocab_size));
}

const std::vector<float>& Session::feed(const std::vector<int32_t>& tokens) {
  return feed(tokens.data(), int64_t(tokens.size()));
}

const std::vector<float>& Session::feed(const int32_t* tokens, int64_t T) {
  check(T > 0, "cannot feed an empty token sequence");
  model_->forward(tokens, T, states_, ws_, LogitsMode::Last, logits_.data());
  pos_ += T;
  return logits_;
}

std::vector<float> Session::feed_all(const int32_t* tokens, int64_t T, HiddenCapture* capture) {
  check(T > 0, "cannot feed an empty token sequence");
  const int64_t V = model_->spec().vocab_size;
  std::vector<float> out(size_t(T * V));
  model_->forward(tokens, T, states_, ws_, LogitsMode::All, out.data(), capture);
  std::copy(out.end() - V, out.end(), logits_.begin());
  pos_ += T;
  return out;
}

void Session::feed_batch(const std::vector<Session*>& sessions, const int32_t* tokens, Workspace& ws,
                         std::vector<float>& logits) {
  if (sessions.empty()) return;
  const Model& m = *sessions[0]->model_;
  if (sessions.size() == 1 || m.spec().segment.enabled()) {
    for (size_t q = 0; q < sessions.size(); ++q) sessions[q]->feed(tokens + q, 1);
    return;
  }
  const int64_t B = int64_t(sessions.size()), V = m.spec().vocab_size;
  std::vector<std::vector<std::unique_ptr<State>>*> seqs;
  for (Session* s : sessions) {
    check(s->model_.get() == &m, "feed_batch: the sessions belong to different models");
    seqs.push_back(&s->states_);
  }
  logits.resize(size_t(B * V));
  m.forward_batch(tokens, B, seqs.data(), ws, logits.data());
  for (int64_t q = 0; q < B; ++q) {
    std::copy(logits.begin() + q * V, logits.begin() + (q + 1) * V, sessions[size_t(q)]->logits_.begin());
    ++sessions[size_t(q)]->pos_;
  }
}

size_t Session::state_bytes() const {
  size_t n = 0;
  for (const auto& s : states_)
    if (s) n += s->bytes();
  return n;
}

Session::Snapshot Session::snapshot() const {
  Snapshot s;
  s.position = pos_;
  for (const auto& st : states_) s.states.push_back(st ? st->clone() : nullptr);
  s.logits = logits_;
  return s;
}

void Session::restore(const Snapshot& s, int64_t room) {
  check(s.states.size() == states_.size(), "snapshot has ", s.states.size(), " layers, model has ",
        states_.size());
  for (size_t i = 0; i < states_.size(); ++i)
    states_[i] = s.states[i] ? s.states[i]->clone_with_room(room) : nullptr;
  logits_ = s.logits;
  pos_ = s.position;
}

std::unique_ptr<Session> Session::fork() const {
  auto s = std::make_unique<Session>(model_, loops_);
  for (size_t i = 0; i < states_.size(); ++i) s->states_[i] = states_[i] ? states_[i]->clone() : nullptr;
  s->logits_ = logits_;
  s->pos_ = pos_;
  return s;
}

void Session::reset() {
  states_ = model_->make_states(loops_);
  pos_ = 0;
}

}  // namespace braid
