// braid's HTTP server: the OpenAI completions and chat completions APIs over an Engine
// (cpp-httplib). Routes: POST /v1/completions and /v1/chat/completions (JSON or
// server-sent events), GET /v1/models, /health,
// /metrics (Prometheus text). With an API key, every route but /health needs
// "Authorization: Bearer KEY". Errors are OpenAI-style JSON bodies.
#pragma once
#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "serve/api.hpp"
#include "serve/engine.hpp"

namespace httplib {
class Server;
struct Response;
}  // namespace httplib

namespace braid {
class Tokenizer;
class ChatTemplate;
}  // namespace braid

namespace braid::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see Server::port())
  std::string api_key;
  std::string model_name = "braid";
  RequestLimits limits;
  EngineOptions engine;
  size_t max_body_bytes = size_t(8) << 20;
  double timeout_s = 600;                             // per request, from arrival to its last token
  std::shared_ptr<const ChatTemplate> chat_template;  // null: chat completions are refused (400)
};

class Server {
 public:
  Server(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tok, ServerOptions opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket; throws braid::Error when the address is unusable.
  void bind();
  int port() const { return port_; }
  // Serves until shutdown(); call bind() first.
  void listen();
  // Refuses new requests (503), lets the running ones finish, then stops listening.
  void shutdown();

  std::string metrics_text() const;
  EngineStats stats() const { return engine_.stats(); }

 private:
  void routes();
  void check_model(const std::string& requested) const;  // 404 unless empty or the served name
  std::vector<int32_t> encode_prompt(const std::string& text, bool add_special_tokens,
                                     const std::string& param) const;
  JobSpec job_spec(const CompletionRequest& r) const;  // sampling, stops, logprobs; no prompts
  // Submits the job and answers with a completion or chat completion, whole or streamed.
  void respond(const CompletionRequest& r, JobSpec spec, std::chrono::steady_clock::time_point arrived,
               httplib::Response& res, bool chat, bool tool_calls = false);

  std::shared_ptr<const Model> model_;
  std::shared_ptr<const Tokenizer> tok_;
  ServerOptions opt_;
  Engine engine_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  std::atomic<int64_t> http_errors_{0};
  int64_t created_ = 0;
};

}  // namespace braid::serve
