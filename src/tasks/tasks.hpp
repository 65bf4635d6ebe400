// Synthetic long-context tasks with deterministic generators (seeded, no downloads). Each
// example is a token sequence and, per position, the token a model should predict next
// (-1 where nothing is asked), so the loss and the accuracy count only the answers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "model/model.hpp"

namespace braid {

struct TaskExample {
  std::vector<int32_t> input;
  std::vector<int32_t> target;  // target[t]: the answer after input[0..t], or -1
};

struct TaskSpec {
  std::string name;      // one of task_names()
  int64_t vocab = 8192;  // tokens [0, vocab)
  int64_t seq_len = 64;  // input length
  // mqar: key-value pairs; selective_copy: tokens to copy; passkey: digits of the key.
  int64_t items = 4;
  double power_a = 0.01;           // mqar: query gaps ~ power law a * i^(a - 1); 1 = uniform
  bool random_non_queries = true;  // mqar: filler positions hold random tokens (else 0)
};

// "mqar", "selective_copy", "induction", "passkey", "listops".
const std::vector<std::string>& task_names();

// Checks the spec (one-line braid::Error naming the bad field) and draws one example.
//  - mqar (multi-query associative recall, as Zoology defines it): D pairs k v with keys drawn
//    without repetition from [1, V/2) and values from [V/2, V), then the rest of the sequence in
//    which each key appears once as a query, at a gap drawn from the power law without
//    repetition; the answer at a query is its value. Needs an even length, 4D <= length and
//    V > length.
//  - selective_copy: n data tokens from [2, V) at random positions of a context of blanks (0),
//    then n copy markers (1); the answer at the k-th marker is the k-th data token.
//  - induction: random tokens from [1, V) with the trigger token 0 once at a random position;
//    the sequence ends with the trigger again, and the answer is the token that followed it.
//  - passkey: a fixed cycle of filler tokens (12, 13, ...) with the needle [1, d1 .. dn]
//    (digits 2..11) at a random place; the sequence ends with the query marker 0 and
//    d1 .. d(n-1); the answers are d1 .. dn, one per position from the marker on.
//  - listops (LRA's rules): a random prefix expression of MIN, MAX, MED (truncated median),
//    SM (sum mod 10) over digits 0-9, up to 10 arguments and depth 10, filling at least half
//    of the sequence, left-padded with 16 and followed by the query token 15, whose answer is
//    the expression's value. Tokens: digits 0..9, openers 10..13, closer 14.
TaskExample make_task_example(const TaskSpec& spec, Rng& rng);

// Greedy accuracy of a model on n examples drawn with `seed`: at every position with a
// target, whether the argmax of the model's logits is the answer.
struct TaskScore {
  int64_t examples = 0, answers = 0, correct = 0;
  double accuracy() const { return answers ? double(correct) / double(answers) : 0.0; }
};
// `loops`: the depth of a looped model (0: its default).
TaskScore evaluate_task(const Model& model, const TaskSpec& spec, int64_t n, uint64_t seed,
                        int64_t loops = 0);

}  // namespace braid
