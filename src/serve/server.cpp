#include "serve/server.hpp"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <sstream>

#include "core/error.hpp"
#include "runtime/generate.hpp"
#include "tokenizer/chat_template.hpp"
#include "tokenizer/tokenizer.hpp"

namespace braid::serve {

namespace {

using Clock = std::chrono::steady_clock;

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_body(e), "application/json");
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string completion_id(bool chat) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  std::ostringstream s;
  s << (chat ? "chatcmpl-" : "cmpl-") << std::hex << salt << "-" << std::dec << ++counter;
  return s.str();
}

}  // namespace

Server::Server(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tok, ServerOptions opt)
    : model_(std::move(model)),
      tok_(std::move(tok)),
      opt_(std::move(opt)),
      engine_(model_, tok_.get(), opt_.engine),
      http_(std::make_unique<httplib::Server>()),
      created_(unix_now()) {
  check(opt_.timeout_s > 0, "the request timeout must be > 0 seconds, found ", opt_.timeout_s);
  // Every connection holds a thread while it streams: room for every running and queued request.
  const size_t threads = size_t(opt_.engine.max_sequences + opt_.engine.max_queue + 4);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_->set_payload_max_length(opt_.max_body_bytes);
  routes();
}

Server::~Server() = default;

void Server::bind() {
  int listen_fd = -1;
  http_->set_socket_options([&listen_fd](socket_t s) {
    httplib::default_socket_options(s);
    listen_fd = int(s);
  });
  if (opt_.port == 0) {
    port_ = http_->bind_to_any_port(opt_.host);
    check(port_ > 0, "cannot listen on ", opt_.host, " (any port)");
  } else {
    check(http_->bind_to_port(opt_.host, opt_.port), "cannot listen on ", opt_.host, ":", opt_.port,
          " (in use, or not an address of this machine)");
    port_ = opt_.port;
  }
  // httplib listens with a backlog of 5. When more clients connect at once the kernel drops
  // their handshakes and their requests arrive only on retransmission, seconds later, after
  // httplib has given up waiting and closed the connection unanswered. Listening again on
  // the bound socket raises the backlog.
  if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
}

void Server::listen() { http_->listen_after_bind(); }

void Server::shutdown() {
  engine_.drain();
  http_->stop();
}

std::string Server::metrics_text() const {
  const EngineStats s = engine_.stats();
  std::ostringstream o;
  auto metric = [&](const char* name, const char* type, const char* help, int64_t v) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
      << name << ' ' << v << '\n';
  };
  metric("braid_requests_total", "counter", "Generation requests accepted.", s.requests);
  metric("braid_requests_rejected_total", "counter", "Requests refused because the queue was full (429).",
         s.rejected);
  metric("braid_requests_cancelled_total", "counter", "Requests stopped early (client gone or timed out).",
         s.cancelled);
  metric("braid_http_errors_total", "counter", "Responses with a 4xx or 5xx status.", http_errors_);
  metric("braid_prompt_tokens_total", "counter", "Prompt tokens run through the model.", s.prompt_tokens);
  metric("braid_generated_tokens_total", "counter", "Tokens generated.", s.generated_tokens);
  metric("braid_queue_depth", "gauge", "Requests waiting for a free sequence slot.", s.queue_depth);
  metric("braid_active_sequences", "gauge", "Sequences being prefilled or decoded.", s.active_sequences);
  metric("braid_state_bytes", "gauge", "Bytes of per-sequence state (KV caches and recurrent states) held.",
         s.state_bytes);
  metric("braid_prefix_cache_lookups_total", "counter", "Prompts looked up in the prefix cache.",
         s.cache.lookups);
  metric("braid_prefix_cache_hits_total", "counter", "Prompts that restored a cached prefix state.",
         s.cache.hits);
  metric("braid_prefix_cache_tokens_reused_total", "counter",
         "Prompt tokens not recomputed thanks to the cache.", s.cache.tokens_reused);
  metric("braid_prefix_cache_insertions_total", "counter", "State snapshots stored.", s.cache.insertions);
  metric("braid_prefix_cache_evictions_total", "counter",
         "State snapshots evicted to stay within the budget.", s.cache.evictions);
  metric("braid_prefix_cache_entries", "gauge", "State snapshots held.", s.cache.entries);
  metric("braid_prefix_cache_bytes", "gauge", "Bytes of state snapshots held.", s.cache.bytes);
  metric("braid_prefix_cache_disk_entries", "gauge", "State snapshot files held on disk.",
         s.cache.disk_entries);
  metric("braid_prefix_cache_disk_bytes", "gauge", "Bytes of state snapshot files on disk.",
         s.cache.disk_bytes);
  metric("braid_prefix_cache_disk_hits_total", "counter", "Cache hits loaded from disk.", s.cache.disk_hits);
  metric("braid_prefix_cache_disk_writes_total", "counter", "State snapshot files written.",
         s.cache.disk_writes);
  metric("braid_prefix_cache_disk_evictions_total", "counter",
         "State snapshot files deleted to stay within the disk budget.", s.cache.disk_evictions);
  metric("braid_prefix_cache_disk_errors_total", "counter",
         "State snapshot files found damaged or not writable.", s.cache.disk_errors);
  return o.str();
}

void Server::routes() {
  using httplib::Request;
  using httplib::Response;
  using HR = httplib::Server::HandlerResponse;

  http_->set_pre_routing_handler([this](const Request& req, Response& res) {
    if (opt_.api_key.empty() || req.path == "/health") return HR::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + opt_.api_key) return HR::Unhandled;
    send_error(res, ApiError(401, req.has_header("Authorization")
                                      ? "the API key is not valid"
                                      : "an API key is required (Authorization: Bearer KEY)"));
    return HR::Handled;
  });
  http_->set_error_handler(httplib::Server::HandlerWithResponse([this](const Request& req, Response& res) {
    ++http_errors_;
    if (!res.body.empty()) return HR::Unhandled;
    if (res.status == 413)
      send_error(res,
                 ApiError(413, "the request body exceeds " + std::to_string(opt_.max_body_bytes) + " bytes"));
    else if (res.status == 404)
      send_error(res, ApiError(404, "no route for " + req.method + " " + req.path));
    else
      send_error(res, ApiError(res.status, "HTTP " + std::to_string(res.status)));
    return HR::Handled;
  }));
  http_->set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const std::exception& e) {
      send_error(res, ApiError(500, std::string("internal error: ") + e.what()));
    } catch (...) {
      send_error(res, ApiError(500, "internal error"));
    }
  });

  http_->Get("/health", [](const Request&, Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  http_->Get("/metrics", [this](const Request&, Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
  http_->Get("/v1/models", [this](const Request&, Response& res) {
    json m = {{"id", opt_.model_name}, {"object", "model"}, {"created", created_}, {"owned_by", "braid"}};
    res.set_content(json{{"object", "list"}, {"data", json::array({m})}}.dump(), "application/json");
  });
  http_->Post("/v1/chat/completions", [this](const Request& req, Response& res) {
    const auto arrived = Clock::now();
    ChatRequest c = parse_chat_request(req.body, opt_.limits);
    check_model(c.request.model);
    if (!tok_)
      throw ApiError(400, "this model has no tokenizer: chat needs one (send token ids to /v1/completions)");
    if (!opt_.chat_template)
      throw ApiError(
          400,
          "this model has no chat template (none in tokenizer_config.json, no chat_template.jinja): "
          "start the server with --chat-template FILE, or use /v1/completions");
    std::string prompt;
    try {
      prompt = opt_.chat_template->render(c.messages, c.add_generation_prompt, c.tools, c.template_kwargs);
    } catch (const Error& e) {  // the template refused the conversation (raise_exception) or failed on it
      throw ApiError(400, std::string("messages: ") + e.what(), "messages");
    }
    JobSpec spec = job_spec(c.request);
    spec.prompts.push_back(encode_prompt(prompt, false, "messages"));  // the template wrote any BOS itself
    const int32_t eot = tok_->token_id(opt_.chat_template->eos_token());
    if (eot >= 0 && std::find(spec.stop_ids.begin(), spec.stop_ids.end(), eot) == spec.stop_ids.end())
      spec.stop_ids.push_back(eot);
    respond(c.request, std::move(spec), arrived, res, true, c.tool_calls);
  });
  http_->Post("/v1/completions", [this](const Request& req, Response& res) {
    const auto arrived = Clock::now();
    CompletionRequest r = parse_completion_request(req.body, opt_.limits);
    check_model(r.model);
    JobSpec spec = job_spec(r);
    spec.prompts = std::move(r.prompt_ids);
    for (const std::string& text : r.prompt_texts) {
      if (!tok_)
        throw ApiError(400, "prompt: this model has no tokenizer; send the prompt as an array of token ids",
                       "prompt");
      spec.prompts.push_back(encode_prompt(text, true, "prompt"));
    }
    respond(r, std::move(spec), arrived, res, false);
  });
}

void Server::check_model(const std::string& requested) const {
  if (!requested.empty() && requested != opt_.model_name)
    throw ApiError(404,
                   "model '" + requested + "' is not served here (this server has '" + opt_.model_name + "')",
                   "model");
}

std::vector<int32_t> Server::encode_prompt(const std::string& text, bool add_special_tokens,
                                           const std::string& param) const {
  std::vector<int32_t> ids;
  try {
    ids = tok_->encode(text, add_special_tokens);
  } catch (const Error& e) {
    throw ApiError(400, param + ": " + e.what(), param);
  }
  if (ids.empty()) throw ApiError(400, param + ": empty after tokenization", param);
  if (int64_t(ids.size()) > opt_.limits.max_prompt_tokens)
    throw ApiError(400,
                   param + ": has " + std::to_string(ids.size()) + " tokens; this server accepts at most " +
                       std::to_string(opt_.limits.max_prompt_tokens),
                   param);
  return ids;
}

JobSpec Server::job_spec(const CompletionRequest& r) const {
  JobSpec spec;
  spec.n = r.n;
  spec.max_tokens = r.max_tokens;
  spec.sampling.temperature = float(r.temperature);
  spec.sampling.top_p = float(r.top_p);
  spec.sampling.seed = r.seed ? *r.seed : std::random_device{}();
  spec.stop = r.stop;
  spec.stop_ids = default_stop_ids(*model_, tok_.get());
  spec.logprobs = r.logprobs;
  return spec;
}

void Server::respond(const CompletionRequest& r, JobSpec spec, Clock::time_point arrived,
                     httplib::Response& res, bool chat, bool tool_calls) {
  const int n_choices = int(spec.prompts.size()) * spec.n;
  const std::shared_ptr<Job> job = engine_.submit(std::move(spec));
  const auto deadline =
      arrived + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt_.timeout_s));
  const std::string id = completion_id(chat);
  const int64_t created = unix_now();
  const std::string model = opt_.model_name;
  const std::string timeout_msg =
      "the request did not finish within the server's timeout (" + json(opt_.timeout_s).dump() + " s)";
  const bool with_logprobs = r.logprobs >= 0;

  if (!r.stream) {
    std::vector<Choice> choices(static_cast<size_t>(n_choices));
    Usage usage{job->prompt_tokens(), 0};
    for (int left = n_choices; left > 0;) {
      Event e;
      if (!job->next(e, deadline)) {
        job->cancel();
        throw ApiError(504, timeout_msg);
      }
      if (!e.error.empty()) throw ApiError(500, "generation failed: " + e.error);
      Choice& c = choices[size_t(e.choice)];
      c.text += e.text;
      c.token_ids.insert(c.token_ids.end(), e.ids.begin(), e.ids.end());
      usage.completion_tokens += int64_t(e.ids.size());
      if (e.logprob) c.logprobs.push_back(*e.logprob);
      if (!e.finish_reason.empty()) {
        c.finish_reason = e.finish_reason;
        --left;
      }
    }
    const json body =
        chat ? chat_completion_body(id, created, model, choices, usage, with_logprobs, tool_calls)
             : completion_body(id, created, model, choices, usage, with_logprobs);
    res.set_content(body.dump(), "application/json");
    return;
  }
  const bool include_usage = r.include_usage;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [job, n_choices, deadline, id, created, model, include_usage, timeout_msg, chat, tool_calls](
          size_t, httplib::DataSink& sink) {
        auto send = [&](const json& j) {
          const std::string s = "data: " + j.dump() + "\n\n";
          return sink.write(s.data(), s.size());
        };
        if (chat)  // each choice opens with its role, as OpenAI's streams do
          for (int i = 0; i < n_choices; ++i)
            if (!send(chat_completion_chunk(id, created, model, i, {{"role", "assistant"}, {"content", ""}},
                                            nullptr, ""))) {
              job->cancel();
              return false;
            }
        Usage usage{job->prompt_tokens(), 0};
        // With tools, each choice's text passes through a reader that holds back what may be a
        // call and sends each call as one delta once it closes.
        std::vector<ToolCallStream> readers(size_t(tool_calls ? n_choices : 0));
        std::vector<int> calls_made(size_t(n_choices), 0);
        for (int left = n_choices; left > 0;) {
          Event e;
          if (!job->next(e, deadline)) {
            job->cancel();
            send(error_json(ApiError(504, timeout_msg)));
            sink.done();
            return true;
          }
          if (!e.error.empty()) {
            send(error_json(ApiError(500, "generation failed: " + e.error)));
            sink.done();
            return true;
          }
          usage.completion_tokens += int64_t(e.ids.size());
          if (!e.finish_reason.empty()) --left;
          const TokenLogprob* lp = e.logprob ? &*e.logprob : nullptr;
          if (tool_calls) {
            ToolCallStream& reader = readers[size_t(e.choice)];
            ToolCallStream::Out out = reader.push(e.text);
            if (!e.finish_reason.empty()) out.content += reader.finish().content;
            int& made = calls_made[size_t(e.choice)];
            bool ok = true;
            if (!out.content.empty() || lp)
              ok = send(chat_completion_chunk(
                  id, created, model, e.choice,
                  out.content.empty() ? json::object() : json{{"content", out.content}}, lp, ""));
            for (const ToolCall& call : out.calls)
              ok =
                  ok && send(chat_completion_chunk(id, created, model, e.choice,
                                                   tool_call_delta(id, e.choice, made++, call), nullptr, ""));
            if (ok && !e.finish_reason.empty())
              ok = send(chat_completion_chunk(
                  id, created, model, e.choice, json::object(), nullptr,
                  made > 0 && e.finish_reason == "stop" ? "tool_calls" : e.finish_reason));
            if (!ok) {
              job->cancel();  // the client went away
              return false;
            }
            continue;
          }
          const json chunk =
              chat ? chat_completion_chunk(id, created, model, e.choice,
                                           e.text.empty() && !e.finish_reason.empty()
                                               ? json::object()
                                               : json{{"content", e.text}},
                                           lp, e.finish_reason)
                   : completion_chunk(id, created, model, e.choice, e.text, e.ids, lp, e.finish_reason);
          if (!send(chunk)) {
            job->cancel();  // the client went away
            return false;
          }
        }
        if (include_usage) {
          json last = {{"id", id},
                       {"object", chat ? "chat.completion.chunk" : "text_completion"},
                       {"created", created},
                       {"model", model},
                       {"choices", json::array()},
                       {"usage", usage_json(usage)}};
          send(last);
        }
        const std::string done = "data: [DONE]\n\n";
        sink.write(done.data(), done.size());
        sink.done();
        return true;
      },
      [job](bool success) {
        if (!success) job->cancel();
      });
}

}  // namespace braid::serve
