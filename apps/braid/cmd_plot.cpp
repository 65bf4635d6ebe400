// braid plot: the loss curves of one or more training runs as an SVG file, or (--context)
// the long-context runner's records of several models as three charts.
#include <cstdio>
#include <filesystem>

#include "commands.hpp"
#include "core/error.hpp"
#include "io/text_file.hpp"
#include "train/plot.hpp"

namespace braid::cli {

namespace {

namespace fs = std::filesystem;

struct PlotArgs {
  std::vector<std::string> runs;
  std::string out, title = "training loss";
  double smoothing = 0.9;
  bool context = false;
};

// Records of `braid bench --context --json`, one file per model (its name, less the
// extension, labels it): prefill.svg, decode.svg and memory.svg in --out.
void plot_context(const PlotArgs& a) {
  check(!a.out.empty(), "--context needs --out DIR (the charts' directory)");
  std::vector<ContextSeries> models;
  for (const std::string& r : a.runs) models.push_back(read_context_records(r, fs::path(r).stem().string()));
  const ContextCharts c = context_charts_svg(models);
  fs::create_directories(a.out);
  for (const auto& [name, svg] :
       {std::pair{"prefill.svg", &c.prefill}, {"decode.svg", &c.decode}, {"memory.svg", &c.memory}})
    write_text_file((fs::path(a.out) / name).string(), *svg);
  std::printf("wrote prefill.svg, decode.svg and memory.svg in %s (%zu model%s)\n", a.out.c_str(),
              models.size(), models.size() == 1 ? "" : "s");
}

void plot(const PlotArgs& a) {
  if (a.context) return plot_context(a);
  std::vector<LossSeries> series;
  for (const std::string& r : a.runs) {
    // A run directory or its metrics.jsonl; the label is the run directory's name.
    const fs::path p = fs::is_directory(r) ? fs::path(r) / "metrics.jsonl" : fs::path(r);
    const fs::path dir = fs::absolute(p).parent_path();
    series.push_back(read_metrics(p.string(), dir.filename().string()));
  }
  const std::string svg = loss_curve_svg(series, a.smoothing, a.title);
  const fs::path first =
      fs::is_directory(a.runs[0]) ? fs::path(a.runs[0]) : fs::path(a.runs[0]).parent_path();
  const std::string out = a.out.empty() ? (first / "loss.svg").string() : a.out;
  write_text_file(out, svg);
  std::printf("wrote %s (%zu run%s)\n", out.c_str(), series.size(), series.size() == 1 ? "" : "s");
}

}  // namespace

void add_plot(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<PlotArgs>();
  CLI::App* c = app.add_subcommand("plot", "Draw the loss curves of training runs (metrics.jsonl) as SVG");
  c->add_option("runs", a->runs, "Run directories or metrics.jsonl files (one curve each)")->required();
  c->add_option("--out", a->out,
                "SVG path (default: loss.svg in the first run's directory); with --context, a directory");
  c->add_flag("--context", a->context,
              "The files are `braid bench --context --json` outputs, one per model: draw prefill, decode and "
              "memory against context length");
  c->add_option("--smoothing", a->smoothing, "Exponential moving average over the training loss, [0, 1)")
      ->capture_default_str();
  c->add_option("--title", a->title, "Title")->capture_default_str();
  c->callback([a, &exit_code] {
    plot(*a);
    exit_code = 0;
  });
}

}  // namespace braid::cli
