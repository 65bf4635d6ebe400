// Session: one sequence's state over a shared Model. Prefill and decode go through
// the same forward; snapshots copy every layer's State (KV or recurrent) at once.
#pragma once
#include <memory>
#include <vector>

#include "model/model.hpp"

namespace braid {

class Session {
 public:
  // `loops`: the depth a looped model runs at for this sequence (0: the spec's default).
  explicit Session(std::shared_ptr<const Model> model, int64_t loops = 0);

  // Feeds tokens (any count >= 1) and returns the logits of the last one ([vocab]).
  const std::vector<float>& feed(const std::vector<int32_t>& tokens);
  const std::vector<float>& feed(const int32_t* tokens, int64_t T);
  // Feeds tokens and returns logits for every position ([T, vocab], row-major).
  std::vector<float> feed_all(const int32_t* tokens, int64_t T, HiddenCapture* capture = nullptr);

  // One token for each of several sessions of one model, decoded as a batch (weights read
  // once for all; each session's logits exactly as feed() alone would give). `ws` is the
  // batch's scratch. Segmented models are fed one by one.
  static void feed_batch(const std::vector<Session*>& sessions, const int32_t* tokens, Workspace& ws,
                         std::vector<float>& logits_scratch);

  int64_t position() const { return pos_; }
  int64_t loops() const { return loops_; }
  const std::vector<float>& last_logits() const { return logits_; }
  // Bytes of per-sequence state (KV caches and recurrent states) held now.
  size_t state_bytes() const;

  struct Snapshot {
    int64_t position = 0;
    std::vector<std::unique_ptr<State>> states;
    std::vector<float> logits;
  };
  Snapshot snapshot() const;
  // `room`: positions the session expects to add, reserved in its KV caches up front.
  void restore(const Snapshot& s, int64_t room = 0);
  void reset();
  // A new session of the same model and depth that continues from here on its own.
  std::unique_ptr<Session> fork() const;

  const Model& model() const { return *model_; }

 private:
  std::shared_ptr<const Model> model_;
  std::vector<std::unique_ptr<State>> states_;
  Workspace ws_;
  std::vector<float> logits_;
  int64_t pos_ = 0;
  int64_t loops_ = 0;
};

}  // namespace braid
