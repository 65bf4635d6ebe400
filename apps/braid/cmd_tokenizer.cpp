// braid tokenizer train: learn a byte-level BPE tokenizer from text files and write a
// Hugging Face tokenizer.json that braid (and transformers) load.
#include <cstdio>
#include <filesystem>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/timer.hpp"
#include "tokenizer/byte_tokenizer.hpp"
#include "tokenizer/tokenizer.hpp"
#include "train/data.hpp"

namespace braid::cli {

namespace {

struct TokenizerTrainArgs {
  std::vector<std::string> data;
  std::string out;
  int64_t vocab_size = 4096;
  int64_t min_frequency = 2;
  bool quiet = false;
};

void train_tokenizer(const TokenizerTrainArgs& a) {
  check(a.vocab_size >= 257, "--vocab-size must be >= 257 (256 bytes + <|endoftext|>), found ", a.vocab_size);
  check(a.min_frequency >= 1, "--min-frequency must be >= 1, found ", a.min_frequency);
  const auto parent = std::filesystem::path(a.out).parent_path();
  check(parent.empty() || std::filesystem::is_directory(parent), a.out, ": directory ", parent.string(),
        " does not exist");
  Timer timer;
  BpeTrainer trainer;
  int64_t bytes = 0;
  for (const std::string& f : a.data) {
    const std::string text = read_training_text(f);
    try {
      trainer.add_text(text);
    } catch (const Error& e) {
      fail(f, ": ", e.what());
    }
    bytes += int64_t(text.size());
  }
  // The vocabulary holds the 256 bytes, <|endoftext|> and the merged tokens.
  const auto merges = trainer.train(a.vocab_size - 1, a.min_frequency, [&](int64_t n) {
    if (!a.quiet && (n % 256 == 0))
      std::fprintf(stderr, "\rtokens %lld / %lld", (long long)n + 1, (long long)a.vocab_size);
  });
  if (!a.quiet) std::fprintf(stderr, "\r%40s\r", "");
  const json j = byte_level_tokenizer_json(a.vocab_size, merges);
  write_json_file(a.out, j);

  // Check what was written by loading it, and report the compression on the corpus.
  const auto tok = Tokenizer::from_json(j, a.out);
  int64_t tokens = 0;
  for (const std::string& f : a.data) tokens += int64_t(tok->encode(read_training_text(f)).size());
  std::printf(
      "wrote %s: %lld merges, %lld tokens learned (vocab %lld), %lld distinct words, %.2f bytes/token "
      "on %lld bytes, %.1f s\n",
      a.out.c_str(), (long long)merges.size(), (long long)(byte_level_vocab_size(merges)),
      (long long)a.vocab_size, (long long)trainer.distinct_words(), double(bytes) / double(tokens),
      (long long)bytes, timer.seconds());
}

}  // namespace

void add_tokenizer(CLI::App& app, int& exit_code) {
  CLI::App* t = app.add_subcommand("tokenizer", "Tokenizer tools");
  t->require_subcommand(1);
  auto a = std::make_shared<TokenizerTrainArgs>();
  CLI::App* c =
      t->add_subcommand("train", "Learn a byte-level BPE tokenizer from text files (writes tokenizer.json)");
  c->add_option("--data", a->data, "UTF-8 text files")->required()->expected(1, -1);
  c->add_option("--out", a->out, "Output tokenizer.json path")->required();
  c->add_option("--vocab-size", a->vocab_size, "Vocabulary size, including the 256 bytes and <|endoftext|>")
      ->capture_default_str();
  c->add_option("--min-frequency", a->min_frequency, "Stop merging when the best pair occurs fewer times")
      ->capture_default_str();
  c->add_flag("--quiet", a->quiet, "No progress line");
  c->callback([a, &exit_code] {
    train_tokenizer(*a);
    exit_code = 0;
  });
}

}  // namespace braid::cli
