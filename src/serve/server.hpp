// braid's HTTP server: the OpenAI completions API over an Engine (cpp-httplib).
// Routes: POST /v1/completions (JSON or server-sent events), GET /v1/models, /health,
// /metrics (Prometheus text). With an API key, every route but /health needs
// "Authorization: Bearer KEY". Errors are OpenAI-style JSON bodies.
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "serve/api.hpp"
#include "serve/engine.hpp"

namespace httplib {
class Server;
}

namespace braid {
class Tokenizer;
}

namespace braid::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see Server::port())
  std::string api_key;
  std::string model_name = "braid";
  RequestLimits limits;
  EngineOptions engine;
  size_t max_body_bytes = size_t(8) << 20;
  double timeout_s = 600;  // per request, from arrival to its last token
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

 private:
  void routes();

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
