#include "train/plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

#include "core/error.hpp"
#include "io/json.hpp"

namespace braid {

namespace {

// Calls f(record, line number) for each non-blank line of a JSON-lines file (a line that is
// not JSON arrives as a discarded value for f to refuse); `what` names the records in the
// error for a file that cannot be read.
template <class F>
void for_each_json_line(const std::string& path, const char* what, const F& f) {
  std::ifstream in(path);
  check(in.good(), path, ": cannot read ", what);
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n)
    if (line.find_first_not_of(" \t\r") != std::string::npos) f(json::parse(line, nullptr, false), n);
}

}  // namespace

LossSeries read_metrics(const std::string& path, const std::string& label) {
  LossSeries s;
  s.label = label;
  for_each_json_line(path, "metrics", [&](const json& j, int64_t n) {
    check(j.is_object() && j.contains("step") && j["step"].is_number() && j.contains("loss") &&
              j["loss"].is_number(),
          path, ":", n, ": not a metrics record (a JSON object with numeric 'step' and 'loss')");
    s.step.push_back(j["step"].get<double>());
    s.loss.push_back(j["loss"].get<double>());
    if (j.contains("val_loss") && j["val_loss"].is_number()) {
      s.val_step.push_back(s.step.back());
      s.val_loss.push_back(j["val_loss"].get<double>());
    }
  });
  check(!s.step.empty(), path, ": no metrics records");
  return s;
}

namespace {

// Round tick spacing (1, 2 or 5 x 10^k) giving about `target` ticks over [lo, hi].
double tick_step(double lo, double hi, int target) {
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.1f", v);
  return b;
}

std::string tick_label(double v, double step) {
  char b[32];
  const int decimals = step >= 1 ? 0 : int(std::ceil(-std::log10(step)));
  std::snprintf(b, sizeof(b), "%.*f", decimals, v);
  return b;
}

// A power of two or ten in few characters: 0.01, 1, 512, 4k, 64k, 1M, 16G (k = 2^10 for
// powers of two, 10^3 for powers of ten, and so on).
std::string power_label(double v) {
  if (v < 1) return tick_label(v, v);
  const bool binary = std::abs(std::log2(v) - std::round(std::log2(v))) < 1e-9 && v >= 1024;
  const double unit = binary ? 1024 : 1000;
  const char* suffix[] = {"", "k", "M", "G", "T", "P"};
  int k = 0;
  while (v >= unit && k < 5) v /= unit, ++k;
  return tick_label(v, 1) + suffix[k];
}

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else if (c == '"')
      o += "&quot;";
    else
      o += c;
  }
  return o;
}

}  // namespace

std::string line_chart_svg(const LineChart& c) {
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  auto xmap = [&](double x) { return c.log2_x ? std::log2(x) : x; };
  auto ymap = [&](double y) { return c.log10_y ? std::log10(y) : y; };
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const ChartSeries& s : c.series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      check(!c.log2_x || s.x[i] > 0, "a log-scale chart needs positive x values, found ", s.x[i]);
      check(!c.log10_y || s.y[i] > 0, "a log-scale chart needs positive y values, found ", s.y[i]);
      x0 = std::min(x0, xmap(s.x[i])), x1 = std::max(x1, xmap(s.x[i]));
      if (s.sets_range) y0 = std::min(y0, ymap(s.y[i])), y1 = std::max(y1, ymap(s.y[i]));
    }
  check(std::isfinite(x0) && std::isfinite(y0), "nothing to plot: no finite values");
  if (std::isfinite(c.y_min)) y0 = ymap(c.y_min);
  if (std::isfinite(c.y_max)) y1 = ymap(c.y_max);
  if (x1 <= x0) x0 -= 0.5, x1 += 0.5;
  if (y1 <= y0) y1 = y0 + 1;
  // Axis positions are in mapped units (log2 x, log10 y): ticks every power of two / ten.
  const double ty = c.log10_y ? 1.0 : tick_step(y0, y1, 6), tx = c.log2_x ? 1.0 : tick_step(x0, x1, 8);
  if (!std::isfinite(c.y_min)) y0 = std::floor(y0 / ty) * ty;
  if (!std::isfinite(c.y_max)) y1 = std::ceil(y1 / ty) * ty;

  const double W = 760, H = 440, L = 64, R = 20, T = 40, B = 52;  // size and margins
  auto px = [&](double x) { return L + (xmap(x) - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return T + (y1 - ymap(y)) / (y1 - y0) * (H - T - B); };
  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt(W) + "\" height=\"" + fmt(H) +
       "\" viewBox=\"0 0 " + fmt(W) + " " + fmt(H) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o += "<defs><clipPath id=\"frame\"><rect x=\"" + fmt(L) + "\" y=\"" + fmt(T) + "\" width=\"" +
       fmt(W - L - R) + "\" height=\"" + fmt(H - T - B) + "\"/></clipPath></defs>\n";
  o += "<text x=\"" + fmt(W / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" + escape(c.title) +
       "</text>\n";
  for (double y = y0; y <= y1 + ty / 2; y += ty) {
    const double at = c.log10_y ? std::pow(10.0, y) : y;  // the tick's value
    o += "<line x1=\"" + fmt(L) + "\" x2=\"" + fmt(W - R) + "\" y1=\"" + fmt(py(at)) + "\" y2=\"" +
         fmt(py(at)) + "\" stroke=\"#e5e5e5\"/>\n";
    o += "<text x=\"" + fmt(L - 6) + "\" y=\"" + fmt(py(at) + 4) + "\" text-anchor=\"end\">" +
         (c.log10_y ? power_label(at) : tick_label(y, ty)) + "</text>\n";
  }
  for (double x = std::ceil(x0 / tx) * tx; x <= x1 + tx / 2; x += tx) {
    const double at = c.log2_x ? std::exp2(x) : x;  // the tick's value
    o += "<line x1=\"" + fmt(px(at)) + "\" x2=\"" + fmt(px(at)) + "\" y1=\"" + fmt(H - B) + "\" y2=\"" +
         fmt(H - B + 5) + "\" stroke=\"black\"/>\n";
    o += "<text x=\"" + fmt(px(at)) + "\" y=\"" + fmt(H - B + 19) + "\" text-anchor=\"middle\">" +
         (c.log2_x ? power_label(at) : tick_label(at, tx)) + "</text>\n";
  }
  o += "<rect x=\"" + fmt(L) + "\" y=\"" + fmt(T) + "\" width=\"" + fmt(W - L - R) + "\" height=\"" +
       fmt(H - T - B) + "\" fill=\"none\" stroke=\"black\"/>\n";
  o += "<text x=\"" + fmt(L + (W - L - R) / 2) + "\" y=\"" + fmt(H - 12) + "\" text-anchor=\"middle\">" +
       escape(c.x_label) + "</text>\n";
  o += "<text transform=\"translate(16 " + fmt(T + (H - T - B) / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">" + escape(c.y_label) + "</text>\n";

  // The legend in its corner, as wide as its longest label (about 6.6 px a character at this
  // font size), on a white panel drawn over the lines so none crosses the text.
  size_t longest = 0, entries = 0;
  for (const ChartSeries& s : c.series)
    if (!s.label.empty()) longest = std::max(longest, s.label.size()), ++entries;
  const double lw = 30 + 6.6 * double(longest), lh = 18 * double(entries) + 6;
  const double lx = c.legend == LineChart::Corner::TopRight ? W - R - 10 - lw : L + 16;
  const double ly0 = c.legend == LineChart::Corner::BottomLeft ? H - B - 4 - lh : T + 4;
  std::string legend_svg;  // drawn after every line
  if (entries > 0)
    legend_svg = "<rect x=\"" + fmt(lx - 6) + "\" y=\"" + fmt(ly0) + "\" width=\"" + fmt(lw + 12) +
                 "\" height=\"" + fmt(lh) + "\" fill=\"white\" fill-opacity=\"0.85\"/>\n";
  int legend = 0;
  for (const ChartSeries& s : c.series) {
    const std::string col = kColors[size_t(s.color) % std::size(kColors)];
    const std::string style = s.style == ChartSeries::Style::Faint
                                  ? "stroke=\"" + col + "\" stroke-opacity=\"0.25\" stroke-width=\"1\""
                              : s.style == ChartSeries::Style::Dashed
                                  ? "stroke=\"" + col + "\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\""
                                  : "stroke=\"" + col + "\" stroke-width=\"2\"";
    std::string pts, dots;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      pts += (pts.empty() ? "" : " ") + fmt(px(s.x[i])) + "," + fmt(py(s.y[i]));
      if (s.markers)
        dots += "<circle cx=\"" + fmt(px(s.x[i])) + "\" cy=\"" + fmt(py(s.y[i])) + "\" r=\"3\" fill=\"" +
                col + "\"/>\n";
    }
    o += "<polyline clip-path=\"url(#frame)\" fill=\"none\" " + style + " points=\"" + pts + "\"/>\n" + dots;
    if (s.label.empty()) continue;
    const double ly = ly0 + 16 + 18 * double(legend++);
    legend_svg += "<line x1=\"" + fmt(lx) + "\" x2=\"" + fmt(lx + 24) + "\" y1=\"" + fmt(ly - 4) +
                  "\" y2=\"" + fmt(ly - 4) + "\" " + style + "/>\n";
    legend_svg += "<text x=\"" + fmt(lx + 30) + "\" y=\"" + fmt(ly) + "\">" + escape(s.label) + "</text>\n";
  }
  o += legend_svg + "</svg>\n";
  return o;
}

std::string loss_curve_svg(const std::vector<LossSeries>& runs, double smoothing, const std::string& title) {
  check(smoothing >= 0 && smoothing < 1, "smoothing must be in [0, 1), found ", smoothing);
  LineChart c;
  c.title = title, c.x_label = "step", c.y_label = "cross-entropy (nats/token)";
  for (size_t r = 0; r < runs.size(); ++r) {
    const LossSeries& s = runs[r];
    // The smoothed curve (bias-corrected exponential moving average) sets the y range, so a
    // few noisy early steps do not flatten the rest; the raw curve is clipped to the frame.
    ChartSeries raw{"", s.step, s.loss, int(r), ChartSeries::Style::Faint, false, false};
    ChartSeries smooth{s.label + (s.val_step.empty() ? "" : " (dashed: held-out)"), {}, {}, int(r)};
    double avg = 0, weight = 0;
    for (size_t i = 0; i < s.loss.size() && i < s.step.size(); ++i) {
      if (!std::isfinite(s.loss[i])) continue;
      avg = smoothing * avg + (1 - smoothing) * s.loss[i];
      weight = smoothing * weight + (1 - smoothing);
      smooth.x.push_back(s.step[i]);
      smooth.y.push_back(avg / weight);
    }
    if (smooth.x.empty()) continue;
    if (smoothing > 0) c.series.push_back(std::move(raw));
    c.series.push_back(std::move(smooth));
    if (!s.val_step.empty())
      c.series.push_back({"", s.val_step, s.val_loss, int(r), ChartSeries::Style::Dashed, true, true});
  }
  check(!c.series.empty(), "nothing to plot: no finite loss values");
  return line_chart_svg(c);
}

ContextSeries read_context_records(const std::string& path, const std::string& label) {
  ContextSeries s;
  s.label = label;
  for_each_json_line(path, "context records", [&](const json& j, int64_t n) {
    auto number = [&](const char* key) {
      check(j.contains(key) && j[key].is_number() && j[key].get<double>() >= 0, path, ":", n, ": field '",
            key,
            "' missing or not a non-negative number (expected a record of braid bench --context --json)");
      return j[key].get<double>();
    };
    check(j.is_object() && j.contains("status") && j["status"].is_string(), path, ":", n,
          ": not a record of braid bench --context --json (a JSON object with 'context' and 'status')");
    ContextRecord r;
    r.context = number("context");
    check(r.context >= 1, path, ":", n, ": context must be >= 1");
    r.status = j["status"].get<std::string>();
    check(r.status == "ok" || r.status == "timeout" || r.status == "out_of_memory", path, ":", n,
          ": status '", r.status, "' is not ok, timeout or out_of_memory");
    r.prefill_tokens_per_s = number("prefill_tokens_per_s");
    r.decode_tokens_per_s = number("decode_tokens_per_s");
    r.state_bytes = number("state_bytes");
    r.rss_bytes = number("rss_bytes");
    r.predicted_bytes = number("predicted_bytes");
    if (j.contains("memory_limit_bytes")) r.memory_limit_bytes = number("memory_limit_bytes");
    s.points.push_back(r);
  });
  check(!s.points.empty(), path, ": no context records");
  return s;
}

ContextCharts context_charts_svg(const std::vector<ContextSeries>& models) {
  check(!models.empty(), "no models to chart");
  auto chart = [](const std::string& title, const std::string& y_label) {
    LineChart c;
    c.title = title, c.x_label = "context (tokens)", c.y_label = y_label;
    c.log2_x = c.log10_y = true;
    return c;
  };
  LineChart prefill = chart("prefill throughput vs context", "prompt tokens/s (whole prompt)");
  LineChart decode = chart("decode throughput at each depth", "tokens/s");
  LineChart memory = chart("memory vs context", "MiB");
  // Throughput is high at short context and memory low, so those corners are free.
  prefill.legend = decode.legend = LineChart::Corner::BottomLeft;
  memory.legend = LineChart::Corner::TopLeft;
  const double MiB = 1 << 20;
  double limit = 0, x_min = INFINITY, x_max = 0;
  for (size_t m = 0; m < models.size(); ++m) {
    const ContextSeries& s = models[m];
    ChartSeries pre{s.label, {}, {}, int(m)}, dec = pre, state = pre, rss = pre, need = pre;
    pre.markers = dec.markers = state.markers = true;
    state.label = s.label + ": KV + state";
    rss.label = s.label + ": resident set", rss.style = ChartSeries::Style::Faint;
    need.label = s.label + ": needed (predicted), not run";
    need.style = ChartSeries::Style::Dashed, need.markers = true;
    for (const ContextRecord& r : s.points) {
      x_min = std::min(x_min, r.context), x_max = std::max(x_max, r.context);
      limit = std::max(limit, r.memory_limit_bytes);
      if (r.status == "ok") {
        dec.x.push_back(r.context), dec.y.push_back(r.decode_tokens_per_s);
        pre.x.push_back(r.context), pre.y.push_back(r.prefill_tokens_per_s);
        state.x.push_back(r.context), state.y.push_back(std::max(r.state_bytes, 1.0) / MiB);
        rss.x.push_back(r.context), rss.y.push_back(std::max(r.rss_bytes, 1.0) / MiB);
      } else {
        // The dashed prediction (of the whole process, like the resident set) starts at the
        // last length that ran, so the two lines join.
        if (need.x.empty() && !rss.x.empty()) need.x.push_back(rss.x.back()), need.y.push_back(rss.y.back());
        need.x.push_back(r.context), need.y.push_back(std::max(r.predicted_bytes, 1.0) / MiB);
      }
    }
    prefill.series.push_back(pre);
    decode.series.push_back(dec);
    memory.series.push_back(state);
    memory.series.push_back(rss);
    if (need.x.size() > 1 || (need.x.size() == 1 && rss.x.empty())) memory.series.push_back(need);
  }
  if (limit > 0)
    memory.series.push_back(
        {"memory available", {x_min, x_max}, {limit / MiB, limit / MiB}, 7, ChartSeries::Style::Dashed});
  return {line_chart_svg(prefill), line_chart_svg(decode), line_chart_svg(memory)};
}

}  // namespace braid
