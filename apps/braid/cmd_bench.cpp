// braid bench: prefill and decode throughput with same-run limits (read bandwidth,
// SGEMM peak) so results read as a fraction of what this machine can do; with --train,
// training throughput of a spec against the same SGEMM peak.
#include <algorithm>
#include <cstdio>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/rng.hpp"
#include "core/sysinfo.hpp"
#include "core/timer.hpp"
#include "import/load.hpp"
#include "import/quantize.hpp"
#include "io/json.hpp"
#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "ops/cpu/roofline.hpp"
#include "ops/cpu/wdot.hpp"
#include "runtime/context_bench.hpp"
#include "runtime/sampling.hpp"
#include "runtime/session.hpp"
#include "train/trainer.hpp"

namespace braid::cli {

namespace {

struct BenchArgs {
  std::string model, train_spec, weights, context;
  int64_t chunk = 4096;
  double max_seconds = 600;
  int64_t prompt_len = 512, decode = 64, batch = 8, seq = 256;
  int runs = 5, threads = 0;
  bool as_json = false;
  bool compare_step = false;  // also time the prompt fed one token at a time
  bool sweep = false;         // --context: one session through all lengths
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Training steps (forward, backward, clipping, AdamW) on random tokens for a randomly
// initialised model of the spec. Model FLOPs per token: 6 per weight-matrix entry
// (forward 2, backward 4) plus attention's scores and values (12 x width x mean context);
// the per-block recomputation of the forward is not counted, as is usual.
void bench_train(const BenchArgs& a) {
  check(a.batch >= 1 && a.seq >= 1 && a.runs >= 1, "--batch, --seq and --runs must be >= 1");
  set_num_threads(a.threads);
  const ModelSpec spec = spec_from_json(read_json_file(a.train_spec), a.train_spec);
  double matrix_entries = 0, attn_width = 0;
  for (const ParamDecl& p : param_decls(spec))
    if (p.shape.size() == 2 && (p.name != "embed.weight" || spec.tie_embeddings))
      matrix_entries += double(p.shape[0] * p.shape[1]);
  for (const BlockSpec& b : spec.blocks)
    if (b.has_mixer && b.mixer == MixerKind::Attention)
      attn_width += double(b.attn.n_heads * b.attn.head_dim);
  const double flops = 6.0 * matrix_entries + 12.0 * attn_width * (double(a.seq) + 1) / 2.0;

  Rng rng(1234);
  std::vector<int32_t> tokens(size_t(a.batch * (a.seq + 1) * 16));
  for (auto& t : tokens) t = int32_t(rng.next() % uint64_t(spec.vocab_size));
  TrainOptions o;
  o.batch = a.batch;
  o.seq = a.seq;
  o.steps = a.runs + 1;
  o.val_fraction = 0;
  auto model = std::make_unique<Model>(spec, owned_copy(init_weights(spec, 1, 0.02)), a.train_spec);
  const int64_t n_params = model->n_params();
  Trainer tr(std::move(model), o, split_tokens(tokens, 0.0, a.seq + 1));
  tr.step();  // untimed: first-touch of buffers and moments
  std::vector<double> tps, peaks, fracs;
  for (int r = 0; r < a.runs; ++r) {
    peaks.push_back(ops::measure_sgemm_peak(1024, 3));
    Timer t;
    tr.step();
    tps.push_back(double(a.batch * a.seq) / t.seconds());
    fracs.push_back(tps.back() * flops / peaks.back());
  }
  const double rate = median(tps), peak = median(peaks), frac = median(fracs);
  json j = {{"spec", a.train_spec},
            {"parameters", n_params},
            {"threads", num_threads()},
            {"cpu", cpu_model()},
            {"runs", a.runs},
            {"batch", a.batch},
            {"seq", a.seq},
            {"train_tokens_per_s", rate},
            {"train_flops_per_token", flops},
            {"sgemm_peak_flops", peak},
            {"train_peak_fraction", frac}};
  if (a.as_json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("spec             %s (%lld parameters), %d threads\n", a.train_spec.c_str(),
              (long long)n_params, num_threads());
  std::printf("train            %.1f tokens/s  (batch %lld x seq %lld, median of %d steps)\n", rate,
              (long long)a.batch, (long long)a.seq, a.runs);
  std::printf("model FLOPs      %.1f MFLOP/token: %.1f%% of SGEMM peak %.1f GFLOP/s\n", flops / 1e6,
              100 * frac, peak / 1e9);
}

// Throughput and memory at each context length (the long-context runner).
void bench_context(const BenchArgs& a, const std::shared_ptr<const Model>& model) {
  ContextBenchOptions o;
  o.chunk = a.chunk, o.decode = a.decode, o.max_seconds = a.max_seconds;
  const std::vector<int64_t> lengths = parse_context_list(a.context);
  if (!a.as_json)
    std::printf("%10s  %14s  %14s  %12s  %10s  %s\n", "context", "prefill tok/s", "decode tok/s", "state MiB",
                "RSS MiB", "status");
  auto print = [&](const ContextPoint& p) {
    if (a.as_json) {
      const json j = {{"model", a.model},
                      {"threads", num_threads()},
                      {"sweep", a.sweep},
                      {"context", p.context},
                      {"status", p.status},
                      {"prompt_tokens_fed", p.fed},
                      {"prefill_tokens_per_s", p.prefill_tokens_per_s},
                      {"decode_tokens_per_s", p.decode_tokens_per_s},
                      {"state_bytes", p.state_bytes},
                      {"rss_bytes", p.rss_bytes},
                      {"predicted_bytes", p.predicted_bytes},
                      {"memory_limit_bytes", p.memory_limit_bytes},
                      {"chunk", a.chunk}};
      std::printf("%s\n", j.dump().c_str());
    } else if (p.status == "out_of_memory") {
      std::printf("%10lld  %14s  %14s  %12s  %10s  out of memory (needs %.1f GiB)\n", (long long)p.context,
                  "-", "-", "-", "-", double(p.predicted_bytes) / double(size_t(1) << 30));
    } else {
      char decode[32] = "-";
      if (p.status == "ok") std::snprintf(decode, sizeof decode, "%.2f", p.decode_tokens_per_s);
      std::printf("%10lld  %14.1f  %14s  %12.2f  %10.1f  %s\n", (long long)p.context, p.prefill_tokens_per_s,
                  decode, double(p.state_bytes) / (1 << 20), double(p.rss_bytes) / (1 << 20),
                  p.status == "ok" ? "ok" : ("timeout after " + std::to_string(p.fed) + " tokens").c_str());
    }
    std::fflush(stdout);
  };
  if (a.sweep) {
    run_context_sweep(model, lengths, o, print);
    return;
  }
  for (int64_t L : lengths) print(run_context_point(model, L, o));
}

void bench(const BenchArgs& a) {
  if (!a.train_spec.empty()) return bench_train(a);
  check(!a.model.empty(), "give --model DIR (inference) or --train SPEC.json (training)");
  check(a.prompt_len >= 1 && a.decode >= 1 && a.runs >= 1, "--prompt-len, --decode and --runs must be >= 1");
  set_num_threads(a.threads);
  std::shared_ptr<const Model> model = load_model(a.model);
  if (!a.weights.empty()) {  // converted in memory, as braid quantize would store them
    QuantizedWeights q = quantize_weights(*model, parse_weight_format(a.weights));
    model = std::make_shared<const Model>(model->spec(), std::move(q.weights), a.model);
  }
  if (!a.context.empty()) return bench_context(a, model);
  const ModelSpec& s = model->spec();
  Rng rng(1234);
  std::vector<int32_t> prompt(size_t(a.prompt_len));
  for (auto& t : prompt) t = int32_t(rng.next() % uint64_t(s.vocab_size));

  // Bytes decode must read per token: every weight matrix except the embedding table
  // (one row is read, unless it doubles as the LM head), the recurrent states and the
  // KV cache at the mean decode context.
  const std::map<std::string, size_t> by_format = model->weight_bytes_by_format();
  size_t weights_read = model->weight_bytes(), params_read = size_t(model->n_params());
  const bool embed_read = s.input_dim != 0 || s.tie_embeddings;
  if (!embed_read) {
    const Tensor& embed = model->weights().at("embed.weight");
    weights_read -= embed.nbytes(), params_read -= size_t(embed.numel());
  }
  std::vector<std::pair<const void*, size_t>> read_per_token;  // those weights, where they lie
  for (const auto& [name, t] : model->weights())
    if (embed_read || name != "embed.weight") read_per_token.emplace_back(t.raw(), t.nbytes());
  const size_t per_token_state = model->state_bytes_per_token(), fixed_state = model->fixed_state_bytes();
  const double avg_ctx = double(a.prompt_len) + double(a.decode) / 2.0;
  const double decode_bytes = double(weights_read) + double(fixed_state) + avg_ctx * double(per_token_state);
  // What a token also writes: each recurrent state in full, and one position of KV cache. A
  // second, stricter bound counts these bytes too, at the read rate (the headline fraction
  // stays decode_bytes', the reads).
  const double decode_traffic = decode_bytes + double(fixed_state) + double(per_token_state);
  // FLOPs per prefill token: 2 per weight multiply-add, plus attention scores and values.
  double attn_flops = 0;
  for (const BlockSpec& b : s.blocks)
    if (b.has_mixer && b.mixer == MixerKind::Attention)
      attn_flops += 4.0 * double(b.attn.n_heads * b.attn.head_dim) * (double(a.prompt_len) + 1) / 2.0;
  const double prefill_flops = 2.0 * double(params_read) + attn_flops;

  // Each run measures its own limits just before it, so a fraction compares numbers
  // taken seconds apart even when the machine's bandwidth drifts; medians are reported.
  std::vector<double> prefill_tps, decode_tps, bws, buffer_bws, in_place_bws, drams, peaks, decode_fracs,
      traffic_fracs, prefill_fracs;
  const size_t probe_bytes = std::max(size_t(decode_bytes), size_t(64) << 20);
  size_t state_bytes = 0, rss = 0;  // RSS sampled after prefill and decode (the limit
                                    // probes' buffers are freed by then)
  for (int r = 0; r < a.runs; ++r) {
    peaks.push_back(ops::measure_sgemm_peak(1024, 3));
    Session sess(model);
    Timer t;
    const std::vector<float>* logits = &sess.feed(prompt);
    prefill_tps.push_back(double(a.prompt_len) / t.seconds());
    int32_t tok = argmax(logits->data(), s.vocab_size);
    rss = std::max(rss, current_rss_bytes());
    // The limit for reading this model's bytes once per token: the faster of a buffer of
    // the same size (a model that fits in the last-level cache is read from there) and the
    // weights themselves read in place (wherever they now lie: a cache may keep a model it
    // has just read and not give a new buffer the room), and DRAM's for reference. The DRAM
    // probe runs first, so the others see the caches as decode will.
    drams.push_back(ops::measure_read_bandwidth(size_t(1) << 30, 3));
    buffer_bws.push_back(ops::measure_read_bandwidth(probe_bytes, 3));
    in_place_bws.push_back(ops::measure_read_bandwidth_in_place(read_per_token, 3));
    bws.push_back(std::max(buffer_bws.back(), in_place_bws.back()));
    t.reset();
    for (int64_t i = 0; i < a.decode; ++i) {
      logits = &sess.feed(&tok, 1);
      tok = argmax(logits->data(), s.vocab_size);
    }
    decode_tps.push_back(double(a.decode) / t.seconds());
    state_bytes = sess.state_bytes();
    rss = std::max(rss, current_rss_bytes());
    decode_fracs.push_back(decode_tps.back() * decode_bytes / bws.back());
    traffic_fracs.push_back(decode_tps.back() * decode_traffic / bws.back());
    prefill_fracs.push_back(prefill_tps.back() * prefill_flops / peaks.back());
  }
  const double prefill = median(prefill_tps), decode = median(decode_tps);
  // The same prompt fed one token at a time (once: it is slow), to show what chunked
  // prefill buys over a token loop.
  double step_tps = 0;
  if (a.compare_step) {
    Session sess(model);
    Timer t;
    for (int64_t i = 0; i < a.prompt_len; ++i) sess.feed(&prompt[size_t(i)], 1);
    step_tps = double(a.prompt_len) / t.seconds();
  }
  const double bw = median(bws), peak = median(peaks);
  const double decode_frac = median(decode_fracs), prefill_frac = median(prefill_fracs);

  json j = {{"model", a.model},
            {"family", s.family},
            {"parameters", model->n_params()},
            {"threads", num_threads()},
            {"cpu", cpu_model()},
            {"runs", a.runs},
            {"prompt_len", a.prompt_len},
            {"decode_tokens", a.decode},
            {"prefill_tokens_per_s", prefill},
            {"decode_tokens_per_s", decode},
            {"decode_bytes_per_token", decode_bytes},
            {"read_bandwidth_bytes_per_s", bw},
            {"read_probe_bytes", probe_bytes},
            {"buffer_read_bandwidth_bytes_per_s", median(buffer_bws)},
            {"in_place_read_bandwidth_bytes_per_s", median(in_place_bws)},
            {"dram_bandwidth_bytes_per_s", median(drams)},
            {"decode_roofline_fraction", decode_frac},
            {"decode_traffic_bytes_per_token", decode_traffic},
            {"decode_traffic_fraction", median(traffic_fracs)},
            {"prefill_flops_per_token", prefill_flops},
            {"sgemm_peak_flops", peak},
            {"prefill_peak_fraction", prefill_frac},
            {"weight_bytes_by_format", by_format},
            {"state_bytes", state_bytes},
            {"rss_bytes", rss}};
  if (a.compare_step) {
    j["step_prefill_tokens_per_s"] = step_tps;
    j["chunked_over_step"] = prefill / step_tps;
  }
  if (a.as_json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("model            %s (%s, %lld parameters), %d threads\n", a.model.c_str(), s.family.c_str(),
              (long long)model->n_params(), num_threads());
  std::printf("weights         ");
  for (const auto& [f, bytes] : by_format) std::printf(" %s %.1f MiB", f.c_str(), double(bytes) / (1 << 20));
  std::printf("  (kernels: %s)\n", ops::isa_name(ops::active_isa()));
  std::printf("prefill          %.1f tokens/s  (T=%lld, median of %d)  %.1f%% of SGEMM peak %.1f GFLOP/s\n",
              prefill, (long long)a.prompt_len, a.runs, 100 * prefill_frac, peak / 1e9);
  if (a.compare_step)
    std::printf(
        "token loop       %.1f tokens/s feeding the prompt one token at a time: chunked is %.1fx faster\n",
        step_tps, prefill / step_tps);
  std::printf("decode           %.2f tokens/s  (%lld tokens after the prompt, median of %d)\n", decode,
              (long long)a.decode, a.runs);
  std::printf(
      "decode roofline  %.1f MB/token at %.2f GB/s measured (a %.0f MB buffer %.2f, the weights in place "
      "%.2f, DRAM %.2f): %.1f%% of the bound\n",
      decode_bytes / 1e6, bw / 1e9, double(probe_bytes) / 1e6, median(buffer_bws) / 1e9,
      median(in_place_bws) / 1e9, median(drams) / 1e9, 100 * decode_frac);
  std::printf(
      "decode traffic   %.1f MB/token with the states' write-back: %.1f%% of the bound at that rate\n",
      decode_traffic / 1e6, 100 * median(traffic_fracs));
  std::printf("state            %.2f MiB for %lld tokens; RSS %.1f MiB\n", double(state_bytes) / (1 << 20),
              (long long)(a.prompt_len + a.decode), double(rss) / (1 << 20));
}

}  // namespace

void add_bench(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* c = app.add_subcommand(
      "bench", "Measure prefill/decode (or training) speed against same-run bandwidth and GEMM limits");
  c->add_option("--model", a->model, "Model directory (prefill and decode)");
  c->add_option("--weights", a->weights,
                "Convert the model's matrices in memory first: f32, bf16, f16, q8_0 or q4_0");
  c->add_option("--train", a->train_spec, "braid spec JSON: time training steps of a fresh model instead");
  c->add_option("--batch", a->batch, "With --train: sequences per step")->capture_default_str();
  c->add_option("--seq", a->seq, "With --train: tokens per sequence")->capture_default_str();
  c->add_option("--prompt-len", a->prompt_len, "Prompt tokens for prefill")->capture_default_str();
  c->add_option("--decode", a->decode, "Tokens to decode after the prompt")->capture_default_str();
  c->add_option("--runs", a->runs, "Repetitions (the median is reported)")->capture_default_str();
  c->add_option("--threads", a->threads, "Threads (0 = all cores)")->capture_default_str();
  c->add_flag("--compare-step", a->compare_step, "Also time the prompt fed one token at a time");
  c->add_option("--context", a->context,
                "Long-context runner: lengths like 1k,4k,16k,64k,256k,1M (prompt streamed in --chunk tokens, "
                "then --decode tokens at that depth)");
  c->add_option("--chunk", a->chunk, "With --context: prompt tokens per forward")->capture_default_str();
  c->add_option("--max-seconds", a->max_seconds,
                "With --context: time budget per length (with --sweep: in all)")
      ->capture_default_str();
  c->add_flag("--sweep", a->sweep,
              "With --context: one session grows through the lengths (ascending), decoding at each; "
              "costs the longest length's time instead of the sum");
  c->add_flag("--json", a->as_json, "Print one JSON object (fields in docs/benchmarks.md)");
  c->callback([a, &exit_code] {
    bench(*a);
    exit_code = 0;
  });
}

}  // namespace braid::cli
