// braid serve end to end: an in-process server on a loopback port driven by an HTTP
// client. Greedy text equals generate(); streamed pieces equal the whole response; the
// n choices of one request equal n single requests (shared prefill restored exactly);
// parallel clients equal sequential ones; bad requests get OpenAI-style errors.
#include <gtest/gtest.h>
#include <httplib.h>

#include <future>
#include <random>
#include <thread>

#include "fixtures.hpp"
#include "import/load.hpp"
#include "io/text_file.hpp"
#include "runtime/generate.hpp"
#include "runtime/text_stream.hpp"
#include "serve/server.hpp"
#include "tokenizer/chat_template.hpp"
#include "tokenizer/tokenizer.hpp"

namespace braid::serve {
namespace {

const std::string kDefault = std::string(BRAID_SOURCE_DIR) + "/models/default";

// A server listening on a free loopback port for the test's lifetime.
struct TestServer {
  TestServer(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tok,
             ServerOptions opt = {}) {
    opt.port = 0;
    opt.model_name = "test-model";
    server = std::make_unique<Server>(std::move(model), std::move(tok), opt);
    server->bind();
    thread = std::thread([this] { server->listen(); });
  }
  ~TestServer() {
    server->shutdown();
    thread.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", server->port());
    c.set_read_timeout(120, 0);
    return c;
  }
  std::unique_ptr<Server> server;
  std::thread thread;
};

struct Loaded {
  std::shared_ptr<const Model> model;
  std::shared_ptr<const Tokenizer> tok;
};
const Loaded& default_model() {
  static const Loaded m{load_model(kDefault), Tokenizer::load(kDefault + "/tokenizer.json")};
  return m;
}

json post(const httplib::Client& c0, const json& body, int expect_status = 200) {
  httplib::Client& c = const_cast<httplib::Client&>(c0);
  auto res = c.Post("/v1/completions", body.dump(), "application/json");
  EXPECT_TRUE(res) << "no response";
  if (!res) return json();
  EXPECT_EQ(res->status, expect_status) << res->body;
  return json::parse(res->body);
}

// The choices a streamed completion delivers: text and ids per index, finish reasons, and
// whether the stream ended with [DONE].
struct Streamed {
  std::map<int, std::string> text;
  std::map<int, std::vector<int32_t>> ids;
  std::map<int, std::string> finish;
  json usage;
  bool done = false;
};
Streamed stream(httplib::Client& c, json body) {
  body["stream"] = true;
  std::string raw;
  auto res = c.Post("/v1/completions", body.dump(), "application/json");
  Streamed s;
  EXPECT_TRUE(res);
  if (!res) return s;
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  size_t at = 0;
  const std::string& b = res->body;
  while (at < b.size()) {
    const size_t end = b.find("\n\n", at);
    EXPECT_NE(end, std::string::npos) << "an event without its blank line";
    if (end == std::string::npos) break;
    const std::string ev = b.substr(at, end - at);
    at = end + 2;
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    EXPECT_FALSE(s.done) << "an event after [DONE]";
    const std::string data = ev.substr(6);
    if (data == "[DONE]") {
      s.done = true;
      continue;
    }
    const json j = json::parse(data);
    if (j.contains("usage")) s.usage = j["usage"];
    for (const auto& ch : j["choices"]) {
      const int i = ch["index"];
      s.text[i] += ch["text"].get<std::string>();
      for (int32_t id : ch["token_ids"]) s.ids[i].push_back(id);
      if (!ch["finish_reason"].is_null()) s.finish[i] = ch["finish_reason"];
    }
  }
  return s;
}

TEST(Serve, HealthModelsAndMetrics) {
  const Loaded& m = default_model();
  TestServer ts(m.model, m.tok);
  auto c = ts.client();
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "test-model");
  post(c, {{"prompt", "And God said"}, {"max_tokens", 3}, {"temperature", 0}});
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("braid_requests_total 1\n"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("braid_generated_tokens_total 3\n"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("# TYPE braid_state_bytes gauge"), std::string::npos);
}

TEST(Serve, GreedyCompletionEqualsGenerate) {
  const Loaded& m = default_model();
  const std::string prompt = "And the LORD spake unto Moses, saying,";
  Session s(m.model);
  GenerateOptions o;
  o.max_new_tokens = 24;
  o.stop_ids = default_stop_ids(*m.model, m.tok.get());
  const std::vector<int32_t> ids = m.tok->encode(prompt, true);
  const std::vector<int32_t> expect = generate(s, ids, o);

  TestServer ts(m.model, m.tok);
  const json r = post(ts.client(), {{"prompt", prompt}, {"max_tokens", 24}, {"temperature", 0}});
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["model"], "test-model");
  EXPECT_EQ(r["choices"][0]["token_ids"].get<std::vector<int32_t>>(), expect);
  EXPECT_EQ(r["choices"][0]["text"], m.tok->decode(expect, true));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
  EXPECT_EQ(r["usage"]["completion_tokens"], 24);
  // The same prompt as token ids gives the same completion.
  const json r2 = post(ts.client(), {{"prompt", ids}, {"max_tokens", 24}, {"temperature", 0}});
  EXPECT_EQ(r2["choices"][0]["token_ids"], r["choices"][0]["token_ids"]);
}

TEST(Serve, TokenIdPromptsOnAModelWithoutTokenizer) {
  REQUIRE_FIXTURES();
  std::shared_ptr<const Model> model = load_model(hf_fixture("jamba"));
  const std::vector<int32_t> prompt = {3, 17, 42, 5, 9, 11, 2, 8};
  Session s(model);
  GenerateOptions o;
  o.max_new_tokens = 6;
  o.stop_ids = default_stop_ids(*model, nullptr);
  const std::vector<int32_t> expect = generate(s, prompt, o);

  ServerOptions opt;
  opt.engine.prefill_chunk = 3;  // the prompt arrives in three chunks
  TestServer ts(model, nullptr, opt);
  const json r = post(ts.client(), {{"prompt", prompt}, {"max_tokens", 6}, {"temperature", 0}});
  const auto got = r["choices"][0]["token_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(got.size(), expect.size());
  // Chunked prefill sums in another order than one forward: the greedy tokens must agree.
  EXPECT_EQ(got, expect);
  TextStream text(nullptr);
  for (int32_t id : expect) text.push(id);
  EXPECT_EQ(r["choices"][0]["text"], text.text() + text.finish());
  const json bad = post(ts.client(), {{"prompt", "text"}}, 400);
  EXPECT_NE(bad["error"]["message"].get<std::string>().find("no tokenizer"), std::string::npos);
  const json oov = post(ts.client(), {{"prompt", {1, int(model->spec().vocab_size)}}}, 400);
  EXPECT_NE(oov["error"]["message"].get<std::string>().find("outside the vocabulary"), std::string::npos);
}

TEST(Serve, StreamedPiecesEqualTheWholeResponse) {
  const Loaded& m = default_model();
  TestServer ts(m.model, m.tok);
  auto c = ts.client();
  const json body = {{"prompt", "In the beginning"},
                     {"max_tokens", 20},
                     {"temperature", 0.8},
                     {"seed", 7},
                     {"n", 2},
                     {"stream_options", {{"include_usage", true}}}};
  json whole_body = body;
  whole_body.erase("stream_options");
  const json whole = post(c, whole_body);
  const Streamed s = stream(c, body);
  EXPECT_TRUE(s.done);
  ASSERT_EQ(s.text.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(s.text.at(i), whole["choices"][i]["text"]) << i;
    EXPECT_EQ(s.ids.at(i), whole["choices"][i]["token_ids"].get<std::vector<int32_t>>()) << i;
    EXPECT_EQ(s.finish.at(i), whole["choices"][i]["finish_reason"]) << i;
  }
  EXPECT_EQ(s.usage, whole["usage"]);
}

TEST(Serve, ChoicesEqualSingleRequestsWithShiftedSeeds) {
  const Loaded& m = default_model();
  TestServer ts(m.model, m.tok);
  auto c = ts.client();
  const json three = post(
      c,
      {{"prompt", "Thus saith the LORD"}, {"max_tokens", 12}, {"temperature", 1.0}, {"seed", 100}, {"n", 3}});
  ASSERT_EQ(three["choices"].size(), 3u);
  std::set<std::string> distinct;
  for (int j = 0; j < 3; ++j) {
    const json one = post(
        c, {{"prompt", "Thus saith the LORD"}, {"max_tokens", 12}, {"temperature", 1.0}, {"seed", 100 + j}});
    EXPECT_EQ(three["choices"][j]["token_ids"], one["choices"][0]["token_ids"]) << j;
    EXPECT_EQ(three["choices"][j]["index"], j);
    distinct.insert(one["choices"][0]["text"]);
  }
  EXPECT_GT(distinct.size(), 1u) << "different seeds should sample different text";
}

TEST(Serve, ParallelClientsEqualSequentialRuns) {
  const Loaded& m = default_model();
  TestServer ts(m.model, m.tok);
  auto body = [](int i) {
    return json{{"prompt", i % 2 ? "And Moses said" : "Blessed are they"},
                {"max_tokens", 16},
                {"temperature", 0.9},
                {"seed", 1000 + i}};
  };
  std::vector<Streamed> seq;
  for (int i = 0; i < 8; ++i) {
    auto c = ts.client();
    seq.push_back(stream(c, body(i)));
  }
  std::vector<std::future<Streamed>> par;
  for (int i = 0; i < 8; ++i)
    par.push_back(std::async(std::launch::async, [&, i] {
      auto c = ts.client();
      return stream(c, body(i));
    }));
  for (int i = 0; i < 8; ++i) {
    const Streamed p = par[size_t(i)].get();
    EXPECT_TRUE(p.done);
    EXPECT_EQ(p.ids, seq[size_t(i)].ids) << i;
    EXPECT_EQ(p.text, seq[size_t(i)].text) << i;
  }
}

TEST(Serve, StopStringsAndLogprobs) {
  const Loaded& m = default_model();
  TestServer ts(m.model, m.tok);
  auto c = ts.client();
  const json free = post(c, {{"prompt", "And God said unto Noah,"}, {"max_tokens", 20}, {"temperature", 0}});
  const std::string text = free["choices"][0]["text"];
  ASSERT_GT(text.size(), 12u);
  const std::string stop = text.substr(6, 4);  // a stop string that first appears at byte 6 (or earlier)
  const size_t first = text.find(stop);
  const json stopped = post(
      c, {{"prompt", "And God said unto Noah,"}, {"max_tokens", 20}, {"temperature", 0}, {"stop", {stop}}});
  EXPECT_EQ(stopped["choices"][0]["text"], text.substr(0, first));
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
  const Streamed s = stream(
      c, {{"prompt", "And God said unto Noah,"}, {"max_tokens", 20}, {"temperature", 0}, {"stop", {stop}}});
  EXPECT_EQ(s.text.at(0), text.substr(0, first));

  const json lp =
      post(c, {{"prompt", "And God said"}, {"max_tokens", 4}, {"temperature", 0}, {"logprobs", 3}});
  const json& l = lp["choices"][0]["logprobs"];
  ASSERT_EQ(l["tokens"].size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    // Greedy: the chosen token is the most likely, so its log-probability is the top one.
    float best = -1e30f;
    for (const auto& [tokstr, v] : l["top_logprobs"][i].items()) best = std::max(best, v.get<float>());
    EXPECT_EQ(l["top_logprobs"][i].size(), 3u);
    EXPECT_FLOAT_EQ(l["token_logprobs"][i].get<float>(), best);
    EXPECT_LT(best, 0.0f);
  }
}

TEST(Serve, BadRequestsGetOpenAIErrors) {
  const Loaded& m = default_model();
  ServerOptions opt;
  opt.max_body_bytes = 4096;
  opt.engine.max_sequences = 4;
  TestServer ts(m.model, m.tok, opt);
  auto c = ts.client();
  auto expect_error = [&](const httplib::Result& res, int status, const std::string& needle) {
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, status) << res->body;
    const json j = json::parse(res->body);
    EXPECT_NE(j["error"]["message"].get<std::string>().find(needle), std::string::npos) << res->body;
  };
  expect_error(c.Post("/v1/completions", "{\"prompt\": ", "application/json"), 400, "not valid JSON");
  expect_error(c.Post("/v1/completions", R"({"prompt": "x", "n": 0})", "application/json"), 400, "n:");
  expect_error(c.Post("/v1/completions", R"({"prompt": "x", "n": 5})", "application/json"), 400, "at most 4");
  expect_error(c.Post("/v1/completions", R"({"prompt": "x", "model": "gpt-4"})", "application/json"), 404,
               "gpt-4");
  expect_error(c.Post("/v1/completions", std::string(5000, ' ') + "{}", "application/json"), 413,
               "4096 bytes");
  expect_error(c.Get("/v1/nothing"), 404, "no route for GET /v1/nothing");
  expect_error(c.Post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}]})",
                      "application/json"),
               400, "no chat template");
  // The server still serves after all of that.
  const json ok = post(c, {{"prompt", "And"}, {"max_tokens", 2}});
  EXPECT_EQ(ok["choices"][0]["token_ids"].size(), 2u);
}

std::shared_ptr<const ChatTemplate> test_template(const std::string& name) {
  const std::string path = std::string(BRAID_SOURCE_DIR) + "/tests/data/chat_templates/" + name;
  return std::make_shared<const ChatTemplate>(read_text_file(path), name, "<s>", "</s>");
}

// A chat completion is a completion of the prompt the template renders: same tokens, same
// text, whole or streamed (role first, then content deltas), with chat-shaped logprobs.
TEST(Serve, ChatCompletionIsTheCompletionOfTheRenderedPrompt) {
  const Loaded& m = default_model();
  ServerOptions opt;
  opt.chat_template = test_template("zephyr.jinja");
  TestServer ts(m.model, m.tok, opt);
  auto c = ts.client();
  const ordered_json messages = ordered_json::parse(R"([
      {"role": "system", "content": "Thou art a scribe."},
      {"role": "user", "content": "And God said"},
      {"role": "assistant", "content": "Let there be light"},
      {"role": "user", "content": [{"type": "text", "text": "and there "}, {"type": "text", "text": "was"}]}])");
  ordered_json flat = messages;
  flat[3]["content"] = "and there was";
  const std::string rendered = opt.chat_template->render(flat, true);
  const std::vector<int32_t> ids = m.tok->encode(rendered, false);
  const json plain = post(c, {{"prompt", ids}, {"max_tokens", 12}, {"temperature", 0}, {"logprobs", 2}});

  const json body = {{"messages", json::parse(messages.dump())},
                     {"max_tokens", 12},
                     {"temperature", 0},
                     {"logprobs", true},
                     {"top_logprobs", 2}};
  auto res = c.Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json r = json::parse(res->body);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  const json& choice = r["choices"][0];
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_EQ(choice["message"]["content"], plain["choices"][0]["text"]);
  EXPECT_EQ(choice["finish_reason"], plain["choices"][0]["finish_reason"]);
  EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
  ASSERT_EQ(choice["logprobs"]["content"].size(), 12u);
  for (size_t i = 0; i < 12; ++i) {
    const json& lp = choice["logprobs"]["content"][i];
    EXPECT_EQ(lp["token"], plain["choices"][0]["logprobs"]["tokens"][i]);
    EXPECT_EQ(lp["logprob"], plain["choices"][0]["logprobs"]["token_logprobs"][i]);
    EXPECT_EQ(lp["top_logprobs"].size(), 2u);
    std::string bytes;
    for (int b : lp["bytes"]) bytes += char(b);
    EXPECT_EQ(bytes, lp["token"]);
  }

  json sbody = body;
  sbody["stream"] = true;
  sbody["stream_options"] = {{"include_usage", true}};
  auto sres = c.Post("/v1/chat/completions", sbody.dump(), "application/json");
  ASSERT_TRUE(sres);
  ASSERT_EQ(sres->status, 200) << sres->body;
  std::string content, role, finish;
  json usage;
  bool done = false;
  int events = 0;
  for (size_t at = 0; at < sres->body.size();) {
    const size_t end = sres->body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos);
    const std::string data = sres->body.substr(at + 6, end - at - 6);
    at = end + 2;
    if (data == "[DONE]") {
      done = true;
      continue;
    }
    const json j = json::parse(data);
    EXPECT_EQ(j["object"], "chat.completion.chunk");
    if (j.contains("usage")) usage = j["usage"];
    for (const auto& ch : j["choices"]) {
      if (events++ == 0) {
        EXPECT_EQ(ch["delta"]["role"], "assistant");  // the role comes first
      }
      if (ch["delta"].contains("role")) role = ch["delta"]["role"];
      if (ch["delta"].contains("content")) content += ch["delta"]["content"].get<std::string>();
      if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
    }
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(role, "assistant");
  EXPECT_EQ(content, choice["message"]["content"]);
  EXPECT_EQ(finish, choice["finish_reason"]);
  EXPECT_EQ(usage, r["usage"]);
}

// With tools, streamed replies pass through the tool-call reader: the streamed content and
// calls put together equal the whole response's, and every token's logprob still arrives.
// (Which text becomes a call is tested in test_tool_calls.cpp; this model writes none.)
TEST(Serve, ChatWithToolsStreamsWhatTheWholeResponseHolds) {
  const Loaded& m = default_model();
  ServerOptions opt;
  opt.chat_template = test_template("zephyr.jinja");
  TestServer ts(m.model, m.tok, opt);
  auto c = ts.client();
  const json body = {{"messages", json::parse(R"([{"role": "user", "content": "And God said"}])")},
                     {"tools", json::parse(R"([{"type": "function", "function": {"name": "f"}}])")},
                     {"max_tokens", 16},
                     {"temperature", 0},
                     {"n", 2},
                     {"logprobs", true}};
  auto res = c.Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json whole = json::parse(res->body);
  json sbody = body;
  sbody["stream"] = true;
  auto sres = c.Post("/v1/chat/completions", sbody.dump(), "application/json");
  ASSERT_TRUE(sres);
  ASSERT_EQ(sres->status, 200) << sres->body;
  std::string content[2], finish[2];
  json calls[2] = {json::array(), json::array()};
  size_t logprobs[2] = {0, 0};
  for (size_t at = 0; at < sres->body.size();) {
    const size_t end = sres->body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos);
    const std::string data = sres->body.substr(at + 6, end - at - 6);
    at = end + 2;
    if (data == "[DONE]") continue;
    const json j = json::parse(data);
    for (const auto& ch : j["choices"]) {
      const int i = ch["index"];
      const json& d = ch["delta"];
      if (d.contains("content")) content[i] += d["content"].get<std::string>();
      if (d.contains("tool_calls"))
        for (json call : d["tool_calls"]) {
          call.erase("index");
          calls[i].push_back(call);
        }
      if (!ch["logprobs"].is_null()) logprobs[i] += ch["logprobs"]["content"].size();
      if (!ch["finish_reason"].is_null()) finish[i] = ch["finish_reason"];
    }
  }
  for (int i = 0; i < 2; ++i) {
    const json& choice = whole["choices"][i];
    const json& msg = choice["message"];
    if (msg.contains("tool_calls")) {
      EXPECT_EQ(calls[i], msg["tool_calls"]);
    } else {
      EXPECT_EQ(content[i], msg["content"]) << i;
      EXPECT_TRUE(calls[i].empty());
    }
    EXPECT_EQ(finish[i], choice["finish_reason"]) << i;
    EXPECT_EQ(logprobs[i], choice["logprobs"]["content"].size()) << i;
  }
  EXPECT_EQ(logprobs[0] + logprobs[1], whole["usage"]["completion_tokens"].get<size_t>());
}

TEST(Serve, ChatRequestsTheTemplateRefusesAre400s) {
  const Loaded& m = default_model();
  ServerOptions opt;
  opt.chat_template = test_template("mixtral.jinja");  // raise_exception for a system turn
  TestServer ts(m.model, m.tok, opt);
  auto c = ts.client();
  auto chat = [&](const std::string& body) {
    return c.Post("/v1/chat/completions", body, "application/json");
  };
  auto res = chat(R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  const json e = json::parse(res->body)["error"];
  EXPECT_EQ(e["param"], "messages");
  EXPECT_NE(e["message"].get<std::string>().find("Conversation roles must alternate"), std::string::npos)
      << e;
  res = chat(
      R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["param"], "messages[0].content[0].type");
  // A conversation it accepts is served.
  res = chat(R"({"messages": [{"role": "user", "content": "And God said"}], "max_tokens": 3})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["usage"]["completion_tokens"], 3);
}

TEST(Serve, ApiKeyGuardsEveryRouteButHealth) {
  const Loaded& m = default_model();
  ServerOptions opt;
  opt.api_key = "sekrit";
  TestServer ts(m.model, m.tok, opt);
  auto c = ts.client();
  auto none = c.Post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})", "application/json");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(json::parse(none->body)["error"]["type"], "authentication_error");
  c.set_bearer_token_auth("wrong");
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
  EXPECT_EQ(c.Get("/metrics")->status, 401);
  EXPECT_EQ(c.Get("/health")->status, 200);
  c.set_bearer_token_auth("sekrit");
  EXPECT_EQ(c.Get("/v1/models")->status, 200);
  auto ok = c.Post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

// With one sequence slot and no queue, a second request while one decodes gets 429; the
// first's client hanging up cancels its sequence, and the slot is free again.
TEST(Serve, FullServerRefusesAndDisconnectCancels) {
  const Loaded& m = default_model();
  ServerOptions opt;
  opt.engine.max_sequences = 1;
  opt.engine.max_queue = 0;
  TestServer ts(m.model, m.tok, opt);
  std::promise<void> started;
  std::atomic<bool> hang_up{false};
  std::thread first([&] {
    auto c = ts.client();
    bool signalled = false;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = json{{"prompt", "And"}, {"max_tokens", 4000}, {"stream", true}}.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      if (!signalled) {
        signalled = true;
        started.set_value();
      }
      return !hang_up.load();
    };
    c.send(req);
  });
  started.get_future().wait();
  auto c = ts.client();
  auto full = c.Post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})", "application/json");
  ASSERT_TRUE(full);
  EXPECT_EQ(full->status, 429);
  EXPECT_EQ(json::parse(full->body)["error"]["type"], "rate_limit_error");
  hang_up = true;
  first.join();
  // The cancelled sequence leaves; a new request is served.
  json ok;
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto r = c.Post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})", "application/json");
    ASSERT_TRUE(r);
    if (r->status == 200) {
      ok = json::parse(r->body);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(ok.is_null()) << "the slot was never freed";
  const std::string metrics = c.Get("/metrics")->body;
  EXPECT_NE(metrics.find("braid_requests_cancelled_total 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("braid_requests_rejected_total"), std::string::npos);
}

int64_t metric(httplib::Client& c, const std::string& name) {
  const std::string body = c.Get("/metrics")->body;
  const size_t at = body.find("\n" + name + " ");
  EXPECT_NE(at, std::string::npos) << name;
  return at == std::string::npos ? -1 : std::stoll(body.substr(at + name.size() + 2));
}

// Requests sharing a long prefix restore its state from the cache (visible in /metrics) and
// return exactly what a server without a cache returns: at a periodic snapshot, at the
// point where two prompts branch, and at the end of an earlier exchange.
void check_prefix_cache(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tok) {
  std::mt19937 rng(11);
  const int32_t V = int32_t(std::min<int64_t>(model->spec().vocab_size, 500));
  auto random_ids = [&](size_t n) {
    std::vector<int32_t> t(n);
    for (auto& x : t) x = int32_t(3 + rng() % uint32_t(V - 3));
    return t;
  };
  const std::vector<int32_t> shared = random_ids(150);
  auto with = [&](const std::vector<int32_t>& head, const std::vector<int32_t>& tail) {
    std::vector<int32_t> t = head;
    t.insert(t.end(), tail.begin(), tail.end());
    return t;
  };
  ServerOptions cached, plain;
  cached.engine.prefill_chunk = plain.engine.prefill_chunk = 32;
  cached.engine.cache_every = 64;
  cached.engine.cache_bytes = size_t(256) << 20;
  TestServer with_cache(model, tok, cached), without(model, tok, plain);
  auto a = with_cache.client(), b = without.client();
  auto both = [&](const std::vector<int32_t>& prompt) {
    const json body = {{"prompt", prompt}, {"max_tokens", 6}, {"temperature", 0.7}, {"seed", 3}};
    const json x = post(a, body), y = post(b, body);
    EXPECT_EQ(x["choices"][0]["token_ids"], y["choices"][0]["token_ids"]);
    EXPECT_EQ(x["choices"][0]["text"], y["choices"][0]["text"]);
    return x["choices"][0]["token_ids"].get<std::vector<int32_t>>();
  };
  const std::vector<int32_t> first = with(shared, random_ids(10));
  const std::vector<int32_t> out1 = both(first);
  EXPECT_EQ(metric(a, "braid_prefix_cache_hits_total"), 0);
  // Shares 150 tokens: resumes at the periodic snapshot at 128, saves a branch point at 150.
  both(with(shared, random_ids(12)));
  EXPECT_EQ(metric(a, "braid_prefix_cache_hits_total"), 1);
  EXPECT_EQ(metric(a, "braid_prefix_cache_tokens_reused_total"), 128);
  // A third branch resumes at the branch point.
  both(with(shared, random_ids(7)));
  EXPECT_EQ(metric(a, "braid_prefix_cache_tokens_reused_total"), 128 + 150);
  // A follow-up turn: the first exchange (less its unfed last token), then more.
  const std::vector<int32_t> turn =
      with(with(first, std::vector<int32_t>(out1.begin(), out1.end() - 1)), random_ids(5));
  both(turn);
  EXPECT_EQ(metric(a, "braid_prefix_cache_tokens_reused_total"),
            128 + 150 + int64_t(first.size() + out1.size() - 1));
  // The same prompt again restores its end state and feeds nothing.
  const int64_t fed = metric(a, "braid_prompt_tokens_total");
  both(turn);
  EXPECT_EQ(metric(a, "braid_prompt_tokens_total"), fed);
  EXPECT_EQ(metric(a, "braid_prefix_cache_hits_total"), 4);
  EXPECT_GT(metric(a, "braid_prefix_cache_bytes"), 0);
  EXPECT_EQ(metric(b, "braid_prefix_cache_entries"), 0);
}

TEST(Serve, PrefixCacheOnTheDefaultModel) {
  const Loaded& m = default_model();
  check_prefix_cache(m.model, m.tok);
}

// A chat's second turn starts with the first turn's rendered prompt: it resumes from the
// state saved there (or later) and answers exactly as a server without a cache does.
TEST(Serve, ChatFollowUpTurnResumesFromTheCache) {
  const Loaded& m = default_model();
  ServerOptions cached, plain;
  cached.chat_template = plain.chat_template = test_template("zephyr.jinja");
  cached.engine.cache_bytes = size_t(256) << 20;
  TestServer with_cache(m.model, m.tok, cached), without(m.model, m.tok, plain);
  auto a = with_cache.client(), b = without.client();
  auto both = [&](const json& messages) {
    const json body = {{"messages", messages}, {"max_tokens", 8}, {"temperature", 0.7}, {"seed", 5}};
    auto x = a.Post("/v1/chat/completions", body.dump(), "application/json");
    auto y = b.Post("/v1/chat/completions", body.dump(), "application/json");
    EXPECT_TRUE(x && y && x->status == 200 && y->status == 200);
    const json jx = json::parse(x->body), jy = json::parse(y->body);
    EXPECT_EQ(jx["choices"][0]["message"], jy["choices"][0]["message"]);
    return jx["choices"][0]["message"]["content"].get<std::string>();
  };
  json messages = json::array({{{"role", "system"}, {"content", "Thou art a scribe."}},
                               {{"role", "user"}, {"content", "And God said unto Noah,"}}});
  const std::string reply = both(messages);
  EXPECT_EQ(metric(a, "braid_prefix_cache_hits_total"), 0);
  const auto turn1 =
      m.tok->encode(cached.chat_template->render(ordered_json::parse(messages.dump()), true), false);
  messages.push_back({{"role", "assistant"}, {"content", reply}});
  messages.push_back({{"role", "user"}, {"content", "And Noah did according unto all"}});
  const auto turn2 =
      m.tok->encode(cached.chat_template->render(ordered_json::parse(messages.dump()), true), false);
  ASSERT_GT(turn2.size(), turn1.size());
  ASSERT_TRUE(std::equal(turn1.begin(), turn1.end(), turn2.begin()));  // the first prompt starts the second
  both(messages);
  EXPECT_EQ(metric(a, "braid_prefix_cache_hits_total"), 1);
  EXPECT_GE(metric(a, "braid_prefix_cache_tokens_reused_total"), int64_t(turn1.size()));
}

TEST(Serve, PrefixCacheOnAHybridFixture) {
  REQUIRE_FIXTURES();
  check_prefix_cache(load_model(hf_fixture("jamba")), nullptr);  // attention KV and Mamba states
}

}  // namespace
}  // namespace braid::serve
