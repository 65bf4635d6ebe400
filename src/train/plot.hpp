// Loss curves as SVG, from the metrics.jsonl files braid train writes: the training loss
// (raw, faint, and smoothed) and the held-out loss, one colour per run.
#pragma once
#include <string>
#include <vector>

namespace braid {

struct LossSeries {
  std::string label;
  std::vector<double> step, loss;          // every training step logged
  std::vector<double> val_step, val_loss;  // evaluations
};

// Reads a metrics.jsonl; throws naming the file and line of a malformed record, or a file
// with no records.
LossSeries read_metrics(const std::string& path, const std::string& label);

// A self-contained SVG document. `smoothing` in [0, 1) is the weight of the exponential
// moving average drawn over the raw training loss (0: none). Throws when no series has
// any point.
std::string loss_curve_svg(const std::vector<LossSeries>& runs, double smoothing = 0.9,
                           const std::string& title = "loss");

}  // namespace braid
