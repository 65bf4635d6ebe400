#include "train/trainer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/rng.hpp"
#include "io/safetensors.hpp"
#include "model/spec_json.hpp"
#include "ops/cpu/backward.hpp"

namespace braid {

json options_to_json(const TrainOptions& o) {
  const char* decay = o.schedule.decay == Decay::Cosine   ? "cosine"
                      : o.schedule.decay == Decay::Linear ? "linear"
                                                          : "constant";
  return json{{"steps", o.steps},
              {"batch", o.batch},
              {"seq", o.seq},
              {"accum", o.accum},
              {"lr", o.schedule.lr},
              {"min_lr", o.schedule.min_lr},
              {"warmup", o.schedule.warmup},
              {"decay", decay},
              {"beta1", o.adam.beta1},
              {"beta2", o.adam.beta2},
              {"eps", o.adam.eps},
              {"weight_decay", o.adam.weight_decay},
              {"decay_all", o.adam.decay_all},
              {"clip", o.clip},
              {"seed", o.seed},
              {"val_fraction", o.val_fraction},
              {"eval_windows", o.eval_windows},
              {"eval_every", o.eval_every},
              {"save_every", o.save_every}};
}

TrainOptions options_from_json(const json& j, const std::string& where) {
  TrainOptions o;
  try {
    o.steps = j.at("steps"), o.batch = j.at("batch"), o.seq = j.at("seq"), o.accum = j.at("accum");
    o.schedule.lr = j.at("lr"), o.schedule.min_lr = j.at("min_lr"), o.schedule.warmup = j.at("warmup");
    check(parse_decay(j.at("decay").get<std::string>(), &o.schedule.decay), "unknown decay");
    o.adam.beta1 = j.at("beta1"), o.adam.beta2 = j.at("beta2"), o.adam.eps = j.at("eps");
    o.adam.weight_decay = j.at("weight_decay"), o.adam.decay_all = j.at("decay_all");
    o.clip = j.at("clip"), o.seed = j.at("seed"), o.val_fraction = j.at("val_fraction");
    o.eval_windows = j.at("eval_windows");
    o.eval_every = j.value("eval_every", int64_t(0)), o.save_every = j.value("save_every", int64_t(0));
  } catch (const json::exception& e) {
    fail(where, ": training options are malformed (", e.what(), ")");
  }
  o.schedule.total = o.steps;
  return o;
}

Weights owned_copy(const Weights& w) {
  Weights out;
  for (const auto& [name, t] : w) {
    Tensor f = t.to_f32();
    Tensor c = Tensor::zeros(DType::F32, f.shape());
    std::memcpy(c.f32_mut(), f.f32(), f.nbytes());
    out[name] = c;
  }
  return out;
}

namespace {

// Training updates f32 weights in place; a model loaded with compact weights cannot train.
std::unique_ptr<Model> trainable(std::unique_ptr<Model> m) {
  for (const auto& [name, w] : m->weights())
    check(w.dtype() == DType::F32, "training needs f32 weights, but '", name, "' is stored as ",
          dtype_name(w.dtype()), " (train the f32 model, then quantize it)");
  return m;
}

}  // namespace

Trainer::Trainer(std::unique_ptr<Model> model, const TrainOptions& o, std::unique_ptr<TrainingSource> source)
    : model_(trainable(std::move(model))),
      o_(o),
      source_(std::move(source)),
      grads_(*model_),
      opt_(*model_, o.adam),
      rng_(o.seed) {
  check(o_.steps > 0 && o_.batch > 0 && o_.seq > 0 && o_.accum > 0,
        "steps, batch, seq and accum must be positive");
  source_->check_model(model_->spec());
  o_.schedule.total = o_.steps;
}

Trainer::Trainer(std::unique_ptr<Model> model, const TrainOptions& o, TokenSplit data)
    : Trainer(std::move(model), o, std::make_unique<TextWindows>(std::move(data), o.seq, o.eval_windows)) {}

void Trainer::set_total_steps(int64_t steps) {
  o_.steps = steps;
  o_.schedule.total = steps;
}

StepStats Trainer::step() {
  StepStats st;
  st.step = opt_.steps() + 1;
  const int64_t n = o_.batch * o_.accum;
  std::vector<TaskExample> batch;
  for (int64_t i = 0; i < n; ++i) {
    batch.push_back(source_->draw(rng_, st.step));
    st.tokens += batch.back().length();
    st.answers += batch.back().answers();
  }
  check(st.answers > 0, "step ", st.step, ": the batch has no positions with a target");
  const float scale = 1.0f / float(st.answers);
  // Sequences are split across threads, each with its own gradient buffers (thread 0
  // uses grads_), so small models are not limited by per-op threading; the shards are
  // summed in thread order, so a step is deterministic for a given thread count.
  const int P = int(std::min<int64_t>(num_threads(), n));
  while (int(shards_.size()) < P - 1) shards_.emplace_back(*model_);
  std::vector<double> sums(static_cast<size_t>(P), 0.0);
  grads_.zero();
  for (int t = 0; t < P - 1; ++t) shards_[size_t(t)].zero();
  run_on_threads(P, [&](int t) {
    GradSink& g = t == 0 ? static_cast<GradSink&>(grads_) : shards_[size_t(t - 1)];
    for (int64_t i = n * t / P; i < n * (t + 1) / P; ++i) {
      const TaskExample& ex = batch[size_t(i)];
      const int64_t loops = loops_for(st.step, i);
      sums[size_t(t)] +=
          (ex.real()
               ? model_->regression_loss_and_grad(ex.x.data(), ex.y.data(), ex.length(), scale, g, loops)
               : model_->loss_and_grad(ex.input.data(), ex.target.data(), ex.length(), scale, g, loops))
              .sum;
    }
  });
  double sum = 0;
  for (int t = 0; t < P; ++t) {
    sum += sums[size_t(t)];
    if (t > 0) grads_.add(shards_[size_t(t - 1)]);
  }
  st.loss = sum / double(st.answers);
  st.grad_norm = clip_grad_norm(grads_, o_.clip);
  // A diverged step must not reach the weights (or a checkpoint written after it).
  if (!std::isfinite(st.loss) || !std::isfinite(st.grad_norm)) {
    std::string where;
    for (const auto& [name, g] : grads_.by_name())
      if (std::any_of(g.begin(), g.end(), [](float v) { return !std::isfinite(v); })) {
        where = " (first non-finite gradient: " + name + ")";
        break;
      }
    fail("step ", st.step, ": the loss (", st.loss, ") or gradient norm (", st.grad_norm, ") is not finite",
         where, "; training diverged and this step was not applied (try a lower learning rate)");
  }
  st.lr = lr_at(o_.schedule, st.step);
  opt_.step(*model_, grads_, st.lr);
  return st;
}

int64_t Trainer::loops_for(int64_t step, int64_t seq) const {
  const LoopSpec& l = model_->spec().loop;
  if (!l.enabled() || l.train_min == l.train_max) return l.enabled() ? l.train_min : 0;
  // A function of (seed, step, sequence) alone, so a resumed run samples the same depths.
  Rng r(o_.seed ^ (uint64_t(step) * 0x9e3779b97f4a7c15ull) ^ (uint64_t(seq) * 0xd1b54a32d192ed03ull));
  return l.train_min + int64_t(r.next() % uint64_t(l.train_max - l.train_min + 1));
}

double Trainer::evaluate() const {
  const int64_t V = model_->spec().vocab_size;
  Workspace ws;
  std::vector<float> logits;
  double sum = 0;
  int64_t answers = 0;
  for (const TaskExample& ex : source_->held_out()) {
    const int64_t T = ex.length();
    logits.resize(size_t(T * V));
    auto states = model_->make_states();
    answers += ex.answers();
    if (ex.real()) {  // squared error of the outputs with a target
      model_->forward_vectors(ex.x.data(), T, states, ws, LogitsMode::All, logits.data());
      for (size_t i = 0; i < logits.size(); ++i)
        if (!std::isnan(ex.y[i])) sum += (double(logits[i]) - ex.y[i]) * (double(logits[i]) - ex.y[i]);
      continue;
    }
    model_->forward(ex.input.data(), T, states, ws, LogitsMode::All, logits.data());
    sum += ops::cross_entropy_fused(logits.data(), ex.target.data(), T, V, 1.0f);
  }
  return answers ? sum / double(answers) : std::numeric_limits<double>::quiet_NaN();
}

namespace {
const std::string kParam = "param.", kM = "adam_m.", kV = "adam_v.";
}

void Trainer::save_state(const std::string& path) const {
  std::vector<std::pair<std::string, Tensor>> t;
  auto vec = [](const std::vector<float>& v, const Shape& s) {
    return Tensor::view(DType::F32, s, v.data(), nullptr);
  };
  for (const auto& [name, w] : model_->weights()) {
    t.emplace_back(kParam + name, w);
    t.emplace_back(kM + name, vec(opt_.first().at(name), w.shape()));
    t.emplace_back(kV + name, vec(opt_.second().at(name), w.shape()));
  }
  uint64_t rng[4];
  rng_.get_state(rng);
  std::string rs;
  for (int i = 0; i < 4; ++i) {
    if (i) rs += ' ';
    rs += std::to_string(rng[i]);
  }
  write_safetensors(path, t,
                    {{"braid.step", std::to_string(opt_.steps())},
                     {"braid.rng", rs},
                     {"braid.spec", spec_to_json(model_->spec()).dump()},
                     {"braid.options", options_to_json(o_).dump()}});
}

void Trainer::load_state(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  const auto& meta = f->metadata();
  for (const char* k : {"braid.step", "braid.rng"})
    check(meta.count(k), path, ": not a braid training state (no '", k, "' metadata)");
  int64_t step = 0;
  uint64_t rng[4];
  try {
    step = std::stoll(meta.at("braid.step"));
    size_t pos = 0;
    const std::string& rs = meta.at("braid.rng");
    for (int i = 0; i < 4; ++i) {
      size_t used = 0;
      rng[i] = std::stoull(rs.substr(pos), &used);
      pos += used;
    }
  } catch (const std::exception&) {
    fail(path, ": malformed step or rng metadata");
  }
  // Check every tensor before changing anything.
  for (const auto& [name, w] : model_->weights())
    for (const std::string& pre : {kParam, kM, kV}) {
      const TensorInfo* info = f->find(pre + name);
      check(info != nullptr, path, ": missing tensor '", pre + name, "'");
      check(info->shape == w.shape() && info->dtype_name == "F32", path, ": tensor '", pre + name,
            "' has shape ", shape_str(info->shape), " ", info->dtype_name, ", expected ",
            shape_str(w.shape()), " F32");
    }
  for (const auto& [name, w] : model_->weights()) {
    std::memcpy(model_->param_mut(name), f->get(kParam + name).f32(), w.nbytes());
    std::memcpy(opt_.first().at(name).data(), f->get(kM + name).f32(), w.nbytes());
    std::memcpy(opt_.second().at(name).data(), f->get(kV + name).f32(), w.nbytes());
  }
  model_->refresh_derived();
  opt_.set_steps(step);
  rng_.set_state(rng);
}

}  // namespace braid
