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
  // Real-valued tasks (linear_regression) leave input / target empty: x holds the rows of
  // x_dim values, y per row the y_dim values to predict after it (NaN: nothing asked).
  int64_t x_dim = 0, y_dim = 0;
  std::vector<float> x, y;

  bool real() const { return x_dim > 0; }
  int64_t length() const { return real() ? int64_t(x.size()) / x_dim : int64_t(input.size()); }
  // How many values the loss averages over: answer tokens, or target values.
  int64_t answers() const;
};

struct TaskSpec {
  std::string name;      // one of task_names()
  int64_t vocab = 8192;  // tokens [0, vocab)
  int64_t seq_len = 64;  // input length
  // mqar: key-value pairs; selective_copy: tokens to copy; passkey: digits of the key.
  int64_t items = 4;
  double power_a = 0.01;           // mqar: query gaps ~ power law a * i^(a - 1); 1 = uniform
  bool random_non_queries = true;  // mqar: filler positions hold random tokens (else 0)
  int64_t dim = 20;                // linear_regression: the dimension d of x
  // linear_regression: only the first active_dim coordinates of x are drawn, the rest are 0
  // (a curriculum's early stages); 0: all d.
  int64_t active_dim = 0;
};

// Tasks whose examples are real vectors (TaskExample::real()); the others are tokens.
bool is_real_task(const std::string& name);
// The model widths a task needs: its vocabulary, or for a real task the input and output
// dimensions (input_dim d + 1, output 1). Throws naming what does not match.
void check_task_fits(const TaskSpec& spec, const ModelSpec& model);

// "mqar", "selective_copy", "induction", "passkey", "listops", "linear_regression".
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
//  - linear_regression (in-context, as Garg et al. 2022): w ~ N(0, I_d), then n = L / 2 points
//    x_i ~ N(0, I_d), y_i = w . x_i, as 2n rows of d + 1 values: [x_i, 0], then [0, .., 0, y_i].
//    The answer at the row of x_i is y_i, predicted from the i pairs before it and x_i. With
//    active_dim k < d, x_i's coordinates from k on are 0 (so only w's first k count).
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

// In-context regression error by the number of points seen: error[i] is the squared error of
// the prediction of y_i (after i pairs) divided by d, averaged over n examples drawn with
// `seed`; least_squares[i] the same for the minimum-norm least-squares fit of those i pairs
// (0 for i >= d up to rounding; 1 - i/d expected below), on the same examples.
struct RegressionScore {
  int64_t examples = 0;
  std::vector<double> error, least_squares;
};
RegressionScore evaluate_regression(const Model& model, const TaskSpec& spec, int64_t n, uint64_t seed,
                                    int64_t loops = 0);
// The minimum-norm least-squares prediction at x of y from k points (rows of X [k, d]), in
// double precision; 0 with no points.
double least_squares_predict(const float* X, const float* y, int64_t k, int64_t d, const float* x);

}  // namespace braid
