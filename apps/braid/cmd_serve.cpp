// braid serve: the OpenAI-compatible HTTP server. SIGINT / SIGTERM drain: new requests
// get 503, running ones finish, then the process exits.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "import/load.hpp"
#include "serve/server.hpp"
#include "tokenizer/chat_template.hpp"
#include "tokenizer/tokenizer.hpp"

namespace braid::cli {

namespace {

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int) { g_stop = 1; }

struct ServeArgs {
  std::string model, name, chat_template;
  serve::ServerOptions opt;
  int threads = 0;
  double cache_mb = 1024, cache_disk_mb = 4096;
};

void serve_main(ServeArgs a) {
  set_num_threads(a.threads);
  a.opt.engine.cache_bytes = size_t(a.cache_mb * 1024 * 1024);
  a.opt.engine.disk.max_bytes = size_t(a.cache_disk_mb * 1024 * 1024);
  a.opt.engine.disk.warn = [](const std::string& m) {
    std::fprintf(stderr, "braid serve: warning: %s\n", m.c_str());
  };
  std::shared_ptr<const Model> model = load_model(a.model);
  const std::string tok_path = (std::filesystem::path(a.model) / "tokenizer.json").string();
  std::shared_ptr<const Tokenizer> tok;
  if (std::filesystem::exists(tok_path)) tok = Tokenizer::load(tok_path);
  if (!a.chat_template.empty()) {
    a.opt.chat_template =
        std::make_shared<const ChatTemplate>(ChatTemplate::from_file(a.chat_template, a.model));
  } else if (auto t = ChatTemplate::from_model_dir(a.model)) {
    a.opt.chat_template = std::make_shared<const ChatTemplate>(std::move(*t));
  }
  a.opt.model_name =
      a.name.empty() ? std::filesystem::path(a.model).lexically_normal().filename().string() : a.name;
  if (a.opt.model_name.empty())
    a.opt.model_name = std::filesystem::path(a.model).lexically_normal().parent_path().filename().string();
  serve::Server server(model, tok, a.opt);
  server.bind();
  std::fprintf(stderr, "braid serve: %s (%s) on http://%s:%d%s\n", a.opt.model_name.c_str(),
               !tok                  ? "token ids only"
               : a.opt.chat_template ? "with tokenizer and chat template"
                                     : "with tokenizer; no chat template, so no chat completions",
               a.opt.host.c_str(), server.port(), a.opt.api_key.empty() ? "" : " (API key required)");
  if (!a.opt.engine.disk.dir.empty()) {
    const PrefixCacheStats c = server.stats().cache;
    std::fprintf(stderr, "braid serve: prefix cache on disk under %s: %lld snapshots (%.1f MiB) found\n",
                 a.opt.engine.disk.dir.c_str(), static_cast<long long>(c.disk_entries),
                 double(c.disk_bytes) / (1 << 20));
  }
  g_stop = 0;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done && !g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (g_stop) {
      std::fprintf(stderr, "braid serve: stopping; finishing the requests in flight\n");
      server.shutdown();
    }
  });
  server.listen();
  done = true;
  watcher.join();
  std::fprintf(stderr, "braid serve: stopped\n");
}

}  // namespace

void add_serve(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* c = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  c->add_option("--model", a->model, "Model directory (config.json, safetensors, optional tokenizer.json)")
      ->required();
  c->add_option("--name", a->name, "Model name clients use (default: the directory's name)");
  c->add_option("--chat-template", a->chat_template,
                "Jinja chat template file for /v1/chat/completions (default: the model's own, from "
                "chat_template.jinja or tokenizer_config.json)")
      ->check(CLI::ExistingFile);
  c->add_option("--host", a->opt.host, "Address to listen on")->capture_default_str();
  c->add_option("--port", a->opt.port, "Port (0: any free port)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  c->add_option("--api-key", a->opt.api_key,
                "Require 'Authorization: Bearer KEY' on every route but /health");
  c->add_option("--max-sessions", a->opt.engine.max_sequences, "Sequences decoding at once")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--max-queue", a->opt.engine.max_queue, "Requests waiting for a slot before 429")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--prefill-chunk", a->opt.engine.prefill_chunk, "Prompt tokens run per scheduler step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--cache-mb", a->cache_mb, "Prefix cache size in MiB (0: off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--cache-dir", a->opt.engine.disk.dir,
                "Keep prefix-cache snapshots in files here too, so they survive a restart (a subdirectory "
                "per model)");
  c->add_option("--cache-disk-mb", a->cache_disk_mb, "Bytes of snapshot files kept under --cache-dir, in MiB")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option(
       "--cache-every", a->opt.engine.cache_every,
       "Also snapshot every N prompt tokens (rounded up to the prefill chunk; 0: only prompt ends, branch "
       "points and generation ends)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--max-prompt-tokens", a->opt.limits.max_prompt_tokens, "Longest prompt accepted")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--max-tokens-limit", a->opt.limits.max_new_tokens, "Largest max_tokens accepted")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--max-body-bytes", a->opt.max_body_bytes, "Largest request body accepted (413 beyond)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--timeout", a->opt.timeout_s, "Seconds a request may take, from arrival to its last token")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--threads", a->threads, "Threads for the model (0 = all cores)")->capture_default_str();
  c->callback([a, &exit_code] {
    serve_main(*a);
    exit_code = 0;
  });
}

}  // namespace braid::cli
