// braid plot: metrics.jsonl parsing (and its errors) and the SVG it draws.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "fixtures.hpp"
#include "train/plot.hpp"

namespace braid {
namespace {

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

// The points attribute of the k-th polyline.
std::vector<std::pair<double, double>> points(const std::string& svg, size_t k) {
  size_t at = 0;
  for (size_t i = 0; i <= k; ++i) at = svg.find("<polyline", at) + 1;
  const size_t b = svg.find("points=\"", at) + 8, e = svg.find('"', b);
  std::stringstream ss(svg.substr(b, e - b));
  std::vector<std::pair<double, double>> out;
  std::string p;
  while (ss >> p) out.emplace_back(std::stod(p.substr(0, p.find(','))), std::stod(p.substr(p.find(',') + 1)));
  return out;
}

TEST(Plot, ReadsMetricsAndDrawsCurves) {
  TempDir d;
  {
    std::ofstream f(d / "metrics.jsonl");
    for (int s = 1; s <= 50; ++s) {
      f << "{\"step\":" << s << ",\"loss\":" << 5.0 / s + 1.0;
      if (s % 10 == 0) f << ",\"val_loss\":" << 5.0 / s + 1.2 << ",\"val_ppl\":3";
      f << "}\n";
    }
  }
  const LossSeries s = read_metrics(d / "metrics.jsonl", "run <a&b>");
  ASSERT_EQ(s.step.size(), 50u);
  ASSERT_EQ(s.val_step.size(), 5u);
  EXPECT_DOUBLE_EQ(s.val_loss[0], 5.0 / 10 + 1.2);

  const std::string svg = loss_curve_svg({s}, 0.9, "t");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(count(svg, "<polyline"), 3u);  // raw, smoothed, held-out
  EXPECT_EQ(count(svg, "<circle"), 5u);
  EXPECT_NE(svg.find("run &lt;a&amp;b&gt;"), std::string::npos);
  const auto raw = points(svg, 0), smooth = points(svg, 1);
  ASSERT_EQ(raw.size(), 50u);
  ASSERT_EQ(smooth.size(), 50u);
  // x grows with the step; a falling loss is drawn falling (SVG y grows downwards).
  for (size_t i = 1; i < raw.size(); ++i) {
    EXPECT_GT(raw[i].first, raw[i - 1].first);
    EXPECT_GT(raw[i].second, raw[i - 1].second);
    EXPECT_GE(smooth[i].second + 1e-9, smooth[i - 1].second);
  }
  // Without smoothing only the raw curve (solid) and the held-out curve are drawn.
  EXPECT_EQ(count(loss_curve_svg({s}, 0.0), "<polyline"), 2u);
  // Two runs: two legend entries, six curves.
  EXPECT_EQ(count(loss_curve_svg({s, s}), "<polyline"), 6u);
}

TEST(Plot, SkipsNonFiniteLossesAndRejectsBadInput) {
  LossSeries s;
  s.label = "x";
  s.step = {1, 2, 3};
  s.loss = {2.0, std::nan(""), 1.0};
  EXPECT_EQ(points(loss_curve_svg({s}, 0.5), 0).size(), 2u);
  s.loss = {std::nan(""), std::nan(""), std::nan("")};
  EXPECT_THROW(loss_curve_svg({s}), Error);
  s.loss = {1, 2, 3};
  EXPECT_THROW(loss_curve_svg({s}, 1.0), Error);

  TempDir d;
  std::ofstream(d / "bad.jsonl") << "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":\n";
  std::ofstream(d / "noloss.jsonl") << "{\"step\":1}\n";
  std::ofstream(d / "empty.jsonl");
  auto message = [&](const std::string& f) {
    try {
      read_metrics(d / f, "x");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("bad.jsonl").find("bad.jsonl:2: not a metrics record"), std::string::npos);
  EXPECT_NE(message("noloss.jsonl").find("noloss.jsonl:1: not a metrics record"), std::string::npos);
  EXPECT_NE(message("empty.jsonl").find("no metrics records"), std::string::npos);
  EXPECT_NE(message("missing.jsonl").find("cannot read metrics"), std::string::npos);
}

TEST(Plot, CliWritesSvgIntoTheRun) {
  TempDir d;
  std::filesystem::create_directories(d / "run");
  std::ofstream(d / "run/metrics.jsonl") << "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2.5}\n";
  const std::string cmd = std::string(BRAID_BINARY) + " plot " + (d / "run") + " >/dev/null 2>" + (d / "err");
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream f(d / "run/loss.svg");
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_EQ(ss.str().rfind("<svg", 0), 0u);
  const std::string bad =
      std::string(BRAID_BINARY) + " plot " + (d / "nope") + " >/dev/null 2>" + (d / "err");
  const int status = std::system(bad.c_str());
  EXPECT_EQ(WEXITSTATUS(status), 2);
  std::ifstream e(d / "err");
  std::string line;
  std::getline(e, line);
  EXPECT_NE(line.find("cannot read metrics"), std::string::npos) << line;
}

// A record as braid bench --context --json prints it.
std::string context_record(int64_t context, const char* status, double prefill, double decode,
                           double state_mib, double predicted_mib) {
  const double MiB = 1 << 20;
  return "{\"context\":" + std::to_string(context) + ",\"status\":\"" + status +
         "\",\"prefill_tokens_per_s\":" + std::to_string(prefill) +
         ",\"decode_tokens_per_s\":" + std::to_string(decode) +
         ",\"state_bytes\":" + std::to_string(state_mib * MiB) +
         ",\"rss_bytes\":" + std::to_string((state_mib + 100) * MiB) +
         ",\"predicted_bytes\":" + std::to_string(predicted_mib * MiB) +
         ",\"memory_limit_bytes\":" + std::to_string(4096 * MiB) + "}\n";
}

TEST(Plot, ContextChartsOnLogLogAxes) {
  TempDir d;
  std::ofstream(d / "attn.jsonl") << context_record(1024, "ok", 1000, 100, 32, 400)
                                  << context_record(65536, "ok", 200, 10, 2048, 4400)
                                  << context_record(1048576, "out_of_memory", 0, 0, 0, 65536);
  std::ofstream(d / "ssm.jsonl") << context_record(1024, "ok", 800, 50, 18, 300)
                                 << context_record(65536, "ok", 800, 50, 18, 300)
                                 << context_record(1048576, "ok", 790, 49, 18, 300);
  const std::vector<ContextSeries> models = {read_context_records(d / "attn.jsonl", "attn"),
                                             read_context_records(d / "ssm.jsonl", "ssm")};
  ASSERT_EQ(models[0].points.size(), 3u);
  EXPECT_EQ(models[0].points[2].status, "out_of_memory");
  const ContextCharts c = context_charts_svg(models);
  // Decode: one line per model over the lengths that ran; the slower one is drawn lower.
  EXPECT_EQ(count(c.decode, "<polyline"), 2u);
  const auto attn = points(c.decode, 0), ssm = points(c.decode, 1);
  ASSERT_EQ(attn.size(), 2u);
  ASSERT_EQ(ssm.size(), 3u);
  // Log-log: every doubling of context is the same step in x (1k -> 64k is 6 of 1k -> 1M's 10),
  // every decade of tokens/s the same step in y (100 -> 10 tok/s drawn one decade lower).
  EXPECT_NEAR(attn[1].first - attn[0].first, (ssm[2].first - ssm[0].first) * 6.0 / 10.0, 0.2);
  const double decade = attn[1].second - attn[0].second;
  EXPECT_GT(decade, 50);
  EXPECT_NEAR(ssm[2].second - ssm[0].second, decade * std::log10(50.0 / 49.0), 0.2);
  EXPECT_NE(c.decode.find(">1M</text>"), std::string::npos);
  EXPECT_NE(c.decode.find(">100</text>"), std::string::npos);
  // Memory: KV + state and resident set per model, the prediction where it could not run,
  // and the memory available.
  EXPECT_EQ(count(c.memory, "<polyline"), 2u * 2u + 1u + 1u);
  EXPECT_NE(c.memory.find("attn: needed (predicted), not run"), std::string::npos);
  EXPECT_NE(c.memory.find("memory available"), std::string::npos);
  EXPECT_EQ(c.memory.find("ssm: needed"), std::string::npos);
  EXPECT_EQ(count(c.prefill, "<polyline"), 2u);

  std::ofstream(d / "bad.jsonl") << context_record(1024, "ok", 1, 1, 1, 1) << "{\"context\":2}\n";
  std::ofstream(d / "status.jsonl") << context_record(1024, "done", 1, 1, 1, 1);
  std::ofstream(d / "neg.jsonl") << context_record(1024, "ok", -5, 1, 1, 1);
  std::ofstream(d / "empty.jsonl");
  EXPECT_NE(error_of([&] { read_context_records(d / "bad.jsonl", "x"); }).find("bad.jsonl:2: not a record"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_context_records(d / "status.jsonl", "x"); }).find("status 'done'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_context_records(d / "neg.jsonl", "x"); }).find("'prefill_tokens_per_s'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_context_records(d / "empty.jsonl", "x"); }).find("no context records"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_context_records(d / "missing.jsonl", "x"); }).find("cannot read"),
            std::string::npos);
}

}  // namespace
}  // namespace braid
