// braid inspect: architecture, parameters, per-layer mixers and memory per sequence.
#include <cstdio>
#include <map>

#include "commands.hpp"
#include "import/load.hpp"
#include "model/spec_json.hpp"

namespace braid::cli {

namespace {

std::string human(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

void inspect(const std::string& dir, bool as_json) {
  auto model = load_model(dir);
  const ModelSpec& s = model->spec();
  // Per sequence, at the default depth (a looped core keeps state per iteration).
  const size_t fixed = model->fixed_state_bytes(), per_token = model->state_bytes_per_token();
  const std::map<std::string, size_t> by_format = model->weight_bytes_by_format();
  json layers = json::array();
  for (int64_t i = 0; i < model->n_layers(); ++i) {
    const Mixer* m = model->mixer(size_t(i));
    const BlockSpec& b = s.blocks[size_t(i)];
    const size_t st = model->layer_fixed_state_bytes(size_t(i)), pt = model->layer_bytes_per_token(size_t(i));
    json l = {{"layer", i}, {"mixer", m ? m->kind() : "none"}, {"state_bytes", st}, {"bytes_per_token", pt}};
    if (m && b.mixer == MixerKind::Attention) {
      l["heads"] = b.attn.n_heads;
      l["kv_heads"] = b.attn.n_kv_heads;
      l["head_dim"] = b.attn.head_dim;
      l["sliding_window"] = b.attn.sliding_window;
    }
    if (m && b.mixer == MixerKind::Mamba) {
      l["d_inner"] = b.mamba.d_inner;
      l["d_state"] = b.mamba.d_state;
      l["d_conv"] = b.mamba.d_conv;
    }
    if (m && b.mixer == MixerKind::Mamba2) {
      l["ssm_heads"] = b.mamba2.n_heads;
      l["d_inner"] = b.mamba2.d_inner();
      l["d_state"] = b.mamba2.d_state;
      l["d_conv"] = b.mamba2.d_conv;
    }
    l["mlp"] = b.has_mlp ? b.mlp.hidden : 0;
    if (b.has_moe) {
      l["experts"] = b.moe.n_experts;
      l["top_k"] = b.moe.top_k;
      l["expert_hidden"] = b.moe.hidden;
      l["shared_hidden"] = b.moe.shared_hidden;
    }
    if (b.has_cmix) l["rwkv_channel_mix"] = b.cmix.hidden;
    layers.push_back(l);
  }
  if (as_json) {
    json j = {{"model", dir},
              {"family", s.family},
              {"parameters", model->n_params()},
              {"weight_bytes", model->weight_bytes()},
              {"weight_bytes_by_format", by_format},
              {"vocab_size", s.vocab_size},
              {"d_model", s.d_model},
              {"state_bytes_per_sequence", fixed},
              {"kv_bytes_per_token", per_token},
              {"layers", layers}};
    if (s.loop.enabled())
      j["loop"] = {{"begin", s.loop.begin},
                   {"end", s.loop.end},
                   {"loops", s.loop.loops},
                   {"max_loops", s.loop.max_loops}};
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("model          %s\n", dir.c_str());
  std::printf("architecture   %s%s\n", s.family.c_str(), s.name.empty() ? "" : (" (" + s.name + ")").c_str());
  std::string formats;
  for (const auto& [f, bytes] : by_format)
    formats += (formats.empty() ? "" : ", ") + f + " " + human(double(bytes));
  std::printf("parameters     %lld (%s: %s)\n", (long long)model->n_params(),
              human(double(model->weight_bytes())).c_str(), formats.c_str());
  if (s.input_dim > 0)
    std::printf("inputs         %lld real values per position (linear read-in), %lld outputs, width %lld\n",
                (long long)s.input_dim, (long long)s.vocab_size, (long long)s.d_model);
  else
    std::printf("vocab / width  %lld / %lld, %s embeddings\n", (long long)s.vocab_size, (long long)s.d_model,
                s.tie_embeddings ? "tied" : "untied");
  if (s.segment.enabled())
    std::printf("segments       %lld tokens, %lld memory tokens carried between them, bptt %lld\n",
                (long long)s.segment.length, (long long)s.segment.memory_tokens, (long long)s.segment.bptt);
  std::printf("layers         %lld\n", (long long)model->n_layers());
  for (const auto& l : layers) {
    std::printf("  %3lld  %-10s", (long long)l["layer"].get<int64_t>(),
                l["mixer"].get<std::string>().c_str());
    if (l.contains("heads"))
      std::printf("  heads %lld/%lld x %lld", (long long)l["heads"].get<int64_t>(),
                  (long long)l["kv_heads"].get<int64_t>(), (long long)l["head_dim"].get<int64_t>());
    if (l.contains("d_inner"))
      std::printf("  d_inner %lld d_state %lld conv %lld", (long long)l["d_inner"].get<int64_t>(),
                  (long long)l["d_state"].get<int64_t>(), (long long)l["d_conv"].get<int64_t>());
    if (l.value("sliding_window", int64_t(0)) > 0)
      std::printf("  window %lld", (long long)l["sliding_window"].get<int64_t>());
    std::printf("  state %s + %s/token", human(double(l["state_bytes"].get<size_t>())).c_str(),
                human(double(l["bytes_per_token"].get<size_t>())).c_str());
    if (l.contains("experts"))
      std::printf("  moe %lld x %lld top-%lld%s\n", (long long)l["experts"].get<int64_t>(),
                  (long long)l["expert_hidden"].get<int64_t>(), (long long)l["top_k"].get<int64_t>(),
                  l["shared_hidden"].get<int64_t>() > 0 ? " + shared" : "");
    else if (l.contains("rwkv_channel_mix"))
      std::printf("  channel mix %lld\n", (long long)l["rwkv_channel_mix"].get<int64_t>());
    else if (l["mlp"].get<int64_t>() > 0)
      std::printf("  mlp %lld\n", (long long)l["mlp"].get<int64_t>());
    else
      std::printf("\n");
  }
  if (s.loop.enabled())
    std::printf("loop           layers %lld..%lld run %lld times by default (1..%lld per request)%s%s\n",
                (long long)s.loop.begin, (long long)s.loop.end - 1, (long long)s.loop.loops,
                (long long)s.loop.max_loops, s.loop.inject ? ", input injection" : "",
                s.loop.step_embedding ? ", step embeddings" : "");
  std::printf("state/sequence %s fixed + %s per token of context (KV cache)\n", human(double(fixed)).c_str(),
              human(double(per_token)).c_str());
}

}  // namespace

void add_inspect(CLI::App& app, int& exit_code) {
  auto dir = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  CLI::App* c = app.add_subcommand("inspect", "Show architecture, parameter count and per-sequence memory");
  c->add_option("--model", *dir, "Model directory")->required();
  c->add_flag("--json", *as_json, "Print one JSON object");
  c->callback([dir, as_json, &exit_code] {
    inspect(*dir, *as_json);
    exit_code = 0;
  });
}

}  // namespace braid::cli
