// braid verify: does braid run this checkpoint exactly? Compares against a reference
// dump (input_ids, logits, hidden_states.N, gen_prompt / gen_tokens / gen_logits).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "import/load.hpp"
#include "io/json.hpp"
#include "io/safetensors.hpp"
#include "model/grads.hpp"
#include "runtime/generate.hpp"
#include "runtime/sampling.hpp"
#include "runtime/session.hpp"
#include "tokenizer/tokenizer.hpp"

namespace braid::cli {

namespace {

struct VerifyArgs {
  std::string model, reference, grads;
  std::string against, text;  // quality against another model on a text file
  int64_t window = 512, max_tokens = 16384;
  bool json = false;
  bool decode = false;  // --against: the model fed one token at a time
  double tol = 1e-4, grad_tol = 1e-4;
  int threads = 0;
};

struct Err {
  double max_abs = 0, max_ref = 0;
  double rel() const { return max_ref > 0 ? max_abs / max_ref : max_abs; }
};

Err compare(const float* got, const Tensor& want, size_t n, const std::string& what) {
  check(want.dtype() == DType::F32, "reference tensor '", what, "' is ", dtype_name(want.dtype()),
        ", expected F32");
  check(size_t(want.numel()) == n, "reference tensor '", what, "' has ", want.numel(),
        " values, braid produced ", n);
  Err e;
  for (size_t i = 0; i < n; ++i) {
    e.max_abs = std::max(e.max_abs, double(std::abs(got[i] - want.f32()[i])));
    e.max_ref = std::max(e.max_ref, double(std::abs(want.f32()[i])));
  }
  if (std::isnan(e.max_abs)) e.max_abs = INFINITY;
  for (size_t i = 0; i < n; ++i)
    if (std::isnan(got[i])) e.max_abs = INFINITY;
  return e;
}

std::vector<int32_t> ids_of(const SafetensorsFile& f, const std::string& name) {
  Tensor t = f.get(name);
  std::vector<int32_t> ids;
  if (t.dtype() == DType::I32)
    ids.assign(t.data<int32_t>(), t.data<int32_t>() + t.numel());
  else if (t.dtype() == DType::I64)
    for (int64_t i = 0; i < t.numel(); ++i) ids.push_back(int32_t(t.data<int64_t>()[i]));
  else
    fail(f.path(), ": '", name, "' must be I32 or I64 token ids, found ", dtype_name(t.dtype()));
  return ids;
}

// ln p(next token) for every position of a window but the last, in double.
void next_token_nll(const std::vector<float>& logits, const int32_t* t, int64_t T, int64_t V, double* nll) {
  for (int64_t i = 0; i + 1 < T; ++i) {
    const float* l = logits.data() + i * V;
    double mx = l[0], sum = 0;
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(l[v]));
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(l[v]) - mx);
    *nll += mx + std::log(sum) - double(l[t[i + 1]]);
  }
}

// Logits of every position of t[0, T) fed one token at a time (the decode path's kernels).
std::vector<float> decode_logits(Session& s, const int32_t* t, int64_t T) {
  const size_t V = size_t(s.model().spec().vocab_size);
  std::vector<float> out(size_t(T) * V);
  for (int64_t i = 0; i < T; ++i) {
    const std::vector<float>& l = s.feed(t + i, 1);
    std::copy(l.begin(), l.end(), out.begin() + ptrdiff_t(size_t(i) * V));
  }
  return out;
}

// What a converted (quantized) model costs against the model it came from, on a text file:
// both read the text in independent windows (with --decode, the converted model one token at
// a time); logit error, top-1 agreement and perplexity.
int quality(const VerifyArgs& a) {
  namespace fs = std::filesystem;
  set_num_threads(a.threads);
  check(a.window >= 2 && a.max_tokens >= 2, "--window and --max-tokens must be >= 2");
  std::shared_ptr<const Model> model = load_model(a.model), base = load_model(a.against);
  const int64_t V = model->spec().vocab_size;
  check(base->spec().vocab_size == V, a.against, ": vocabulary of ", base->spec().vocab_size, " tokens, but ",
        a.model, " has ", V);
  const fs::path tok_path = fs::exists(fs::path(a.model) / "tokenizer.json")
                                ? fs::path(a.model) / "tokenizer.json"
                                : fs::path(a.against) / "tokenizer.json";
  check(fs::exists(tok_path), a.model, ": no tokenizer.json here or in ", a.against, " to read --text with");
  std::ifstream in(a.text, std::ios::binary);
  check(bool(in), a.text, ": cannot read");
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<int32_t> ids = Tokenizer::load(tok_path.string())->encode(ss.str());
  if (int64_t(ids.size()) > a.max_tokens) ids.resize(size_t(a.max_tokens));
  check(ids.size() >= 2, a.text, ": fewer than 2 tokens");
  double nll_model = 0, nll_base = 0, max_abs = 0, max_ref = 0;
  int64_t predicted = 0, agree = 0;
  for (size_t w0 = 0; w0 + 1 < ids.size(); w0 += size_t(a.window)) {
    const int64_t T = std::min<int64_t>(a.window, int64_t(ids.size() - w0));
    if (T < 2) break;
    Session sm(model), sb(base);
    const std::vector<float> lm = a.decode ? decode_logits(sm, ids.data() + w0, T)
                                           : sm.feed_all(ids.data() + w0, T),
                             lb = sb.feed_all(ids.data() + w0, T);
    next_token_nll(lm, ids.data() + w0, T, V, &nll_model);
    next_token_nll(lb, ids.data() + w0, T, V, &nll_base);
    for (int64_t i = 0; i < T; ++i) {
      const float *m = lm.data() + i * V, *b = lb.data() + i * V;
      for (int64_t v = 0; v < V; ++v) {
        max_abs = std::max(max_abs, double(std::fabs(m[v] - b[v])));
        max_ref = std::max(max_ref, double(std::fabs(b[v])));
      }
      agree += argmax(m, V) == argmax(b, V);
    }
    predicted += T - 1;
  }
  const double ppl_model = std::exp(nll_model / double(predicted)),
               ppl_base = std::exp(nll_base / double(predicted));
  const double change = 100.0 * (ppl_model / ppl_base - 1.0);
  const int64_t positions = int64_t(ids.size());
  if (a.json) {
    const json j = {{"model", a.model},
                    {"against", a.against},
                    {"text", a.text},
                    {"tokens", positions},
                    {"window", a.window},
                    {"decode", a.decode},
                    {"logits_max_abs_error", max_abs},
                    {"logits_max_abs", max_ref},
                    {"top1_agreement", double(agree) / double(positions)},
                    {"perplexity", ppl_model},
                    {"perplexity_against", ppl_base},
                    {"perplexity_change_percent", change}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("model       %s\nagainst     %s\ntext        %s: %lld tokens in windows of %lld%s\n",
              a.model.c_str(), a.against.c_str(), a.text.c_str(), (long long)positions, (long long)a.window,
              a.decode ? ", the model decoding one token at a time" : "");
  std::printf("logits      max abs error %.3e (largest logit %.3e, rel %.3e)\n", max_abs, max_ref,
              max_ref > 0 ? max_abs / max_ref : max_abs);
  std::printf("top-1       %.2f%% of positions agree\n", 100.0 * double(agree) / double(positions));
  std::printf("perplexity  %.4f vs %.4f: %+.3f%%\n", ppl_model, ppl_base, change);
  return 0;
}

int verify(const VerifyArgs& a) {
  if (!a.against.empty()) return quality(a);
  check(!a.reference.empty(),
        "give --reference FILE (parity with a reference dump) or --against DIR --text FILE "
        "(quality against another model)");
  check(a.text.empty(), "--text needs --against DIR");
  check(!a.decode, "--decode needs --against DIR");
  set_num_threads(a.threads);
  std::shared_ptr<const Model> model = load_model(a.model, a.grads.empty());  // gradients need f32
  auto ref = SafetensorsFile::open(a.reference);
  check(ref->find("input_ids") != nullptr, a.reference, ": no 'input_ids' tensor");
  const int64_t V = model->spec().vocab_size, D = model->spec().d_model;
  bool ok = true;
  auto verdict = [&](bool pass) {
    ok = ok && pass;
    return pass ? "ok" : "FAIL";
  };
  std::printf("model      %s (%s, %lld layers)\nreference  %s\ntolerance  %.1e (max abs error)\n",
              a.model.c_str(), model->spec().family.c_str(), (long long)model->n_layers(),
              a.reference.c_str(), a.tol);

  std::vector<int32_t> ids = ids_of(*ref, "input_ids");
  check(!ids.empty(), a.reference, ": 'input_ids' is empty");
  Session s(model);
  HiddenCapture cap;
  std::vector<float> logits = s.feed_all(ids.data(), int64_t(ids.size()), &cap);
  for (size_t i = 0; i < cap.states.size(); ++i) {
    const std::string name = "hidden_states." + std::to_string(i);
    if (!ref->find(name)) continue;
    Err e = compare(cap.states[i].data(), ref->get(name), cap.states[i].size(), name);
    std::printf("hidden %-3zu max abs %.3e  rel %.3e  %s\n", i, e.max_abs, e.rel(),
                verdict(e.max_abs <= a.tol));
  }
  (void)D;
  if (ref->find("logits")) {
    Err e = compare(logits.data(), ref->get("logits"), logits.size(), "logits");
    std::printf("logits     max abs %.3e  rel %.3e  %s\n", e.max_abs, e.rel(), verdict(e.max_abs <= a.tol));
  }
  if (ref->find("gen_prompt") && ref->find("gen_tokens")) {
    std::vector<int32_t> prompt = ids_of(*ref, "gen_prompt"), want = ids_of(*ref, "gen_tokens");
    const bool have_logits = ref->find("gen_logits") != nullptr;
    Tensor gl = have_logits ? ref->get("gen_logits") : Tensor();
    if (have_logits)
      check(gl.numel() == int64_t(want.size()) * V, a.reference, ": gen_logits has ", gl.numel(),
            " values, expected ", int64_t(want.size()) * V);
    Session g(model);
    GenerateOptions opt;
    opt.max_new_tokens = int64_t(want.size());
    Err worst;
    size_t step = 0;
    std::vector<int32_t> got = generate(g, prompt, opt, [&](int32_t) {
      if (have_logits) {
        Tensor row = Tensor::view(DType::F32, {V}, gl.f32() + step * size_t(V), nullptr);
        Err e = compare(g.last_logits().data(), row, size_t(V), "gen_logits");
        worst.max_abs = std::max(worst.max_abs, e.max_abs);
        worst.max_ref = std::max(worst.max_ref, e.max_ref);
      }
      ++step;
      return true;
    });
    size_t same = 0;
    while (same < got.size() && same < want.size() && got[same] == want[same]) ++same;
    std::printf("greedy     %zu/%zu tokens equal  %s\n", same, want.size(), verdict(got == want));
    if (have_logits)
      std::printf("decode     max abs %.3e  rel %.3e over %zu steps  %s\n", worst.max_abs, worst.rel(), step,
                  verdict(worst.max_abs <= a.tol));
  }
  if (!a.grads.empty()) {
    // Loss (mean next-token cross-entropy, labels = input_ids) and every parameter's
    // gradient; each gradient within grad_tol x its largest reference entry.
    auto gf = SafetensorsFile::open(a.grads);
    check(gf->find("loss") != nullptr, a.grads, ": no 'loss' tensor");
    const int64_t T = int64_t(ids.size());
    check(T >= 2, a.reference, ": gradients need at least 2 input ids");
    std::vector<int32_t> targets(ids.begin() + 1, ids.end());
    targets.push_back(-1);
    Gradients g(*model);
    LossSum l = model->loss_and_grad(ids.data(), targets.data(), T, 1.0f / float(T - 1), g);
    const double loss = l.sum / double(l.count), want_loss = gf->get("loss").to_f32().f32()[0];
    const double loss_err = std::abs(loss - want_loss);
    std::printf("loss       %.6f vs %.6f  abs err %.3e  %s\n", loss, want_loss, loss_err,
                verdict(loss_err <= 1e-5 * std::max(1.0, std::abs(want_loss))));
    Weights want = load_param_tensors(a.model, a.grads, "grad.");
    double worst = 0;
    std::string worst_name;
    size_t failed = 0;
    for (const auto& [name, got] : g.by_name()) {
      Err e = compare(got.data(), want.at(name).to_f32(), got.size(), "grad." + name);
      const bool pass = e.max_abs <= a.grad_tol * e.max_ref + 1e-7;
      failed += !pass;
      if (!pass)
        std::printf("grad       %s max abs %.3e  largest %.3e  FAIL\n", name.c_str(), e.max_abs, e.max_ref);
      if (e.rel() >= worst) worst = e.rel(), worst_name = name;
    }
    std::printf("grads      %zu tensors, worst %s rel %.3e  %s\n", g.by_name().size(), worst_name.c_str(),
                worst, verdict(failed == 0));
  }
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace

void add_verify(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<VerifyArgs>();
  CLI::App* c =
      app.add_subcommand("verify", "Check a checkpoint against reference outputs (exit 1 beyond tolerance)");
  c->add_option("--model", a->model, "Model directory")->required();
  c->add_option("--reference", a->reference, "safetensors with input_ids, logits, hidden_states.N, gen_*");
  c->add_option("--against", a->against,
                "Instead of --reference: a model to compare with on --text (e.g. the f32 model a quantized "
                "one came from); reports logit error, top-1 agreement and perplexity change");
  c->add_option("--text", a->text, "With --against: a text file");
  c->add_option("--window", a->window, "With --against: tokens per independent window")
      ->capture_default_str();
  c->add_option("--max-tokens", a->max_tokens, "With --against: read at most this many tokens of --text")
      ->capture_default_str();
  c->add_flag("--json", a->json, "With --against: one JSON line");
  c->add_flag("--decode", a->decode,
              "With --against: the model reads each window one token at a time (decode kernels, e.g. int8 "
              "activations), the model it is compared with all at once");
  c->add_option("--tolerance", a->tol, "Max abs error allowed on logits and hidden states")
      ->capture_default_str();
  c->add_option("--grads", a->grads,
                "safetensors with 'loss' and 'grad.<tensor>' (mean next-token cross-entropy over input_ids)");
  c->add_option("--grad-tolerance", a->grad_tol, "Max abs gradient error / largest reference entry")
      ->capture_default_str();
  c->add_option("--threads", a->threads, "Threads (0 = all cores)");
  c->callback([a, &exit_code] { exit_code = verify(*a); });
}

}  // namespace braid::cli
