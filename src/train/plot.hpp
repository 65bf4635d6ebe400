// Line charts as self-contained SVG: loss curves from the metrics.jsonl files braid train
// writes (raw training loss faint, smoothed, held-out dashed; one colour per run), and
// accuracy against sequence length for braid compare.
#pragma once
#include <cmath>
#include <string>
#include <vector>

namespace braid {

struct LossSeries {
  std::string label;
  std::vector<double> step, loss;          // every training step logged
  std::vector<double> val_step, val_loss;  // evaluations
};

// One polyline of a chart.
struct ChartSeries {
  std::string label;         // legend text (empty: no legend entry)
  std::vector<double> x, y;  // non-finite y values are skipped
  int color = 0;             // index into the palette
  enum class Style { Solid, Faint, Dashed } style = Style::Solid;
  bool markers = false;    // a dot at every point
  bool sets_range = true;  // whether the y axis range covers this series
};

struct LineChart {
  std::string title, x_label, y_label;
  bool log2_x = false;              // x on a log scale with ticks at powers of two
  bool log10_y = false;             // y on a log scale with ticks at powers of ten
  double y_min = NAN, y_max = NAN;  // fixed y range (NaN: from the data, rounded to ticks)
  enum class Corner { TopRight, TopLeft, BottomLeft } legend = Corner::TopRight;  // where no line runs
  std::vector<ChartSeries> series;
};

// Throws when no series has a finite point (or, with a log scale, a non-positive value).
std::string line_chart_svg(const LineChart& chart);

// Reads a metrics.jsonl; throws naming the file and line of a malformed record, or a file
// with no records.
LossSeries read_metrics(const std::string& path, const std::string& label);

// A self-contained SVG document. `smoothing` in [0, 1) is the weight of the exponential
// moving average drawn over the raw training loss (0: none). Throws when no series has
// any point.
std::string loss_curve_svg(const std::vector<LossSeries>& runs, double smoothing = 0.9,
                           const std::string& title = "loss");

// One model's `braid bench --context --json` records (one JSON object per line).
struct ContextRecord {
  double context = 0;
  std::string status;  // "ok", "timeout", "out_of_memory"
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;
  double state_bytes = 0, rss_bytes = 0, predicted_bytes = 0, memory_limit_bytes = 0;
};
struct ContextSeries {
  std::string label;
  std::vector<ContextRecord> points;
};

// Throws naming the file and line of a malformed record, or a file with none.
ContextSeries read_context_records(const std::string& path, const std::string& label);

// Charts over context length (log-log, one colour per model): prefill tokens/s, decode
// tokens/s at that depth, and memory (KV + state bytes measured; dashed, the prediction for
// lengths not run for want of memory or time; the memory limit as a grey line).
struct ContextCharts {
  std::string prefill, decode, memory;
};
ContextCharts context_charts_svg(const std::vector<ContextSeries>& models);

}  // namespace braid
