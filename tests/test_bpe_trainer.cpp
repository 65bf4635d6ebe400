// The byte-level BPE trainer: a worked example, agreement with a naive trainer that
// recounts every pair at every step, a tokenizer.json that loads and round-trips, and
// braid tokenizer train's errors.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "fixtures.hpp"
#include "tokenizer/bpe_trainer.hpp"
#include "tokenizer/byte_tokenizer.hpp"
#include "tokenizer/tokenizer.hpp"

namespace braid {
namespace {

TEST(BpeTrainer, WorkedExample) {
  // Pieces: "ab" x1, " ab" x2, " abc" x1. Pair counts: (a,b) 4, (Ġ,a) 3, (b,c) 1, so
  // a+b merges first, then Ġ+ab (3); (Ġab,c) occurs once, below min_frequency 2.
  BpeTrainer t;
  t.add_text("ab ab ab abc");
  const auto merges = t.train(1000, 2);
  ASSERT_EQ(merges.size(), 2u);
  EXPECT_EQ(merges[0], BpeMerge("a", "b"));
  EXPECT_EQ(merges[1], BpeMerge("\xC4\xA0", "ab"));  // Ġ is the byte-level space
  const auto tok = Tokenizer::from_json(byte_level_tokenizer_json(300, merges), "test");
  const auto ids = tok->encode("ab ab ab abc");
  EXPECT_EQ(ids, (std::vector<int32_t>{257, 258, 258, 258, 'c'}));
  // A budget stops merging: 256 bytes + 1 learned token.
  EXPECT_EQ(t.train(257, 1).size(), 1u);
}

// Recounts every pair over every word at each step; ties go to the smaller (left, right).
std::vector<BpeMerge> naive_train(const std::map<std::string, int64_t>& words, size_t n_merges) {
  std::vector<std::pair<std::vector<std::string>, int64_t>> w;
  for (const auto& [word, n] : words) {
    std::vector<std::string> sym;
    for (unsigned char c : word) sym.push_back(c == ' ' ? "\xC4\xA0" : std::string(1, char(c)));
    w.emplace_back(sym, n);
  }
  std::vector<BpeMerge> out;
  while (out.size() < n_merges) {
    std::map<BpeMerge, int64_t> count;
    for (const auto& [sym, n] : w)
      for (size_t j = 0; j + 1 < sym.size(); ++j) count[{sym[j], sym[j + 1]}] += n;
    const BpeMerge* best = nullptr;
    int64_t best_n = 0;
    for (const auto& [p, n] : count)  // map order: smaller pairs first, so '>' keeps the first
      if (n > best_n) best = &p, best_n = n;
    if (!best) break;
    const BpeMerge m = *best;
    out.push_back(m);
    for (auto& [sym, n] : w) {
      std::vector<std::string> merged;
      for (size_t j = 0; j < sym.size();) {
        if (j + 1 < sym.size() && sym[j] == m.first && sym[j + 1] == m.second) {
          merged.push_back(m.first + m.second);
          j += 2;
        } else {
          merged.push_back(sym[j++]);
        }
      }
      sym = merged;
    }
  }
  return out;
}

TEST(BpeTrainer, AgreesWithNaiveTrainer) {
  // Letters-only words joined by single spaces: the pieces are the first word and
  // " word" for every later one, so the naive trainer can count them directly.
  Rng rng(7);
  std::vector<std::string> lexicon;
  for (int i = 0; i < 60; ++i) {
    std::string s;
    const int len = 1 + int(rng.next() % 7);
    for (int k = 0; k < len; ++k) s += char('a' + rng.next() % 6);
    lexicon.push_back(s);
  }
  std::string text;
  std::map<std::string, int64_t> words;
  for (int i = 0; i < 3000; ++i) {
    // Zipf-like: low indices far more frequent.
    const size_t k = size_t(double(lexicon.size()) * std::pow(rng.uniform(), 3.0));
    const std::string piece = (i ? " " : "") + lexicon[k];
    text += piece;
    ++words[piece];
  }
  BpeTrainer t;
  t.add_text(text);
  const auto got = t.train(256 + 400, 1);
  const auto want = naive_train(words, got.size() + 1);
  // The naive trainer counts merges, the fast one distinct tokens, so the fast one stops
  // no earlier than the naive one would have run out of pairs.
  ASSERT_GE(want.size(), got.size());
  ASSERT_GT(got.size(), 100u);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "merge " << i;
}

TEST(BpeTrainer, TokenizerRoundTripsAndCompresses) {
  std::ifstream in(std::string(BRAID_SOURCE_DIR) + "/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str() + "\n\tünïcödé — ✓ 🙂\r\n";
  BpeTrainer t;
  t.add_text(text);
  const auto merges = t.train(511, 2);
  EXPECT_EQ(byte_level_vocab_size(merges), 512);
  const json j = byte_level_tokenizer_json(520, merges);
  const auto tok = Tokenizer::from_json(j, "trained");
  EXPECT_EQ(tok->vocab_size(), 520);
  const auto ids = tok->encode(text);
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_LT(double(ids.size()), 0.6 * double(text.size()));  // merges shorten the text
  EXPECT_EQ(tok->token_id("<|endoftext|>"), 256);
  EXPECT_TRUE(tok->is_special(519));
  EXPECT_THROW(byte_level_tokenizer_json(300, merges), Error);  // too small for the merges
}

TEST(BpeTrainer, RejectsInvalidUtf8) {
  BpeTrainer t;
  EXPECT_THROW(t.add_text("ok \xff\xfe"), Error);
}

int braid_rc(const std::string& args, const TempDir& d, std::string* err) {
  const std::string cmd = std::string(BRAID_BINARY) + " " + args + " >/dev/null 2>" + (d / "err");
  const int status = std::system(cmd.c_str());
  std::ifstream in(d / "err");
  std::stringstream ss;
  ss << in.rdbuf();
  *err = ss.str();
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(BpeTrainer, CliWritesLoadableTokenizerAndRejectsBadInput) {
  TempDir d;
  std::string text;
  for (int i = 0; i < 300; ++i) text += "the quick brown fox " + std::to_string(i % 17) + " jumps\n";
  std::ofstream(d / "a.txt") << text;
  std::ofstream(d / "bad.txt") << "bad \xff bytes";
  std::ofstream(d / "empty.txt");
  std::string err;
  ASSERT_EQ(braid_rc("tokenizer train --quiet --data " + (d / "a.txt") + " --vocab-size 300 --out " +
                         (d / "tok.json"),
                     d, &err),
            0)
      << err;
  const auto tok = Tokenizer::load(d / "tok.json");
  EXPECT_EQ(tok->vocab_size(), 300);
  EXPECT_EQ(tok->decode(tok->encode(text)), text);

  struct Case {
    std::string args, says;
  };
  const std::vector<Case> cases = {
      {"--data " + (d / "missing.txt"), "cannot read training data"},
      {"--data " + (d / "empty.txt"), "training data file is empty"},
      {"--data " + (d / "bad.txt"), "not valid UTF-8"},
      {"--data " + (d / "a.txt") + " --vocab-size 100", "--vocab-size must be >= 257"},
      {"--data " + (d / "a.txt") + " --min-frequency 0", "--min-frequency must be >= 1"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(braid_rc("tokenizer train --quiet " + c.args + " --out " + (d / "t2.json"), d, &err), 2)
        << c.args;
    EXPECT_NE(err.find(c.says), std::string::npos) << c.args << ": " << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  }
  EXPECT_FALSE(std::filesystem::exists(d / "t2.json"));
}

}  // namespace
}  // namespace braid
