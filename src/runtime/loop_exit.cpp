#include "runtime/loop_exit.hpp"

#include <cmath>

#include "core/error.hpp"

namespace braid {

LoopExit loops_by_convergence(const Model& model, const int32_t* tokens, int64_t T, double tol) {
  const LoopSpec& l = model.spec().loop;
  check(l.enabled(), "the loop exit rule needs a looped model; this one has no looped blocks");
  check(T >= 1, "the loop exit rule needs a prompt to measure convergence on");
  check(tol > 0 && std::isfinite(tol), "the loop exit tolerance must be positive, got ", tol);
  auto states = model.make_states(l.max_loops);
  Workspace ws;
  HiddenCapture cap;
  model.forward(tokens, T, states, ws, LogitsMode::None, nullptr, &cap);
  LoopExit e;
  e.change = cap.loop_change;
  e.loops = l.max_loops;
  for (size_t i = 0; i < e.change.size(); ++i)
    if (e.change[i] < tol) {
      e.loops = int64_t(i) + 1;  // change[i] is r_(i+1): stop before that iteration
      break;
    }
  return e;
}

}  // namespace braid
