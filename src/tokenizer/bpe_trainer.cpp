#include "tokenizer/bpe_trainer.hpp"

#include <algorithm>
#include <queue>

#include "core/error.hpp"
#include "io/json.hpp"
#include "tokenizer/components.hpp"
#include "tokenizer/unicode.hpp"

namespace braid {

namespace {

uint64_t pack(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
int32_t left_of(uint64_t p) { return int32_t(p >> 32); }
int32_t right_of(uint64_t p) { return int32_t(uint32_t(p)); }

struct Word {
  std::vector<int32_t> sym;
  int64_t n;
};

}  // namespace

BpeTrainer::BpeTrainer()
    : pre_(tok::make_pre_tokenizer(json{{"type", "ByteLevel"},
                                        {"add_prefix_space", false},
                                        {"trim_offsets", true},
                                        {"use_regex", true}},
                                   "bpe trainer")) {}

BpeTrainer::~BpeTrainer() = default;

void BpeTrainer::add_text(std::string_view text) {
  check(unicode::valid_utf8(text), "training text is not valid UTF-8");
  pre_->apply(text, true, [&](std::string_view piece, bool) { ++counts_[std::string(piece)]; });
}

std::vector<BpeMerge> BpeTrainer::train(int64_t token_budget, int64_t min_frequency,
                                        const std::function<void(int64_t)>& progress) const {
  check(token_budget >= 256, "a byte-level BPE vocabulary needs at least the 256 byte tokens, asked for ",
        token_budget);
  check(min_frequency >= 1, "min_frequency must be >= 1, found ", min_frequency);

  std::vector<std::string> tokens;
  std::unordered_map<std::string, int32_t> ids;
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(unicode::byte_to_char(uint8_t(b)));
    ids.emplace(tokens.back(), b);
  }

  // Words in sorted order, so that nothing depends on hash-table iteration order.
  std::vector<const std::pair<const std::string, int64_t>*> sorted;
  sorted.reserve(counts_.size());
  for (const auto& kv : counts_) sorted.push_back(&kv);
  std::sort(sorted.begin(), sorted.end(), [](auto* x, auto* y) { return x->first < y->first; });
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (const auto* kv : sorted) {
    Word w{{}, kv->second};
    const std::string& s = kv->first;
    for (size_t i = 0; i < s.size();) w.sym.push_back(unicode::char_to_byte(unicode::next_cp(s, i)));
    words.push_back(std::move(w));
  }

  std::unordered_map<uint64_t, int64_t> pair_n;              // pair -> occurrences over all words
  std::unordered_map<uint64_t, std::vector<int32_t>> where;  // pair -> words holding it (may be stale)
  auto note_word = [&](uint64_t p, int32_t i) {
    auto& v = where[p];
    if (v.empty() || v.back() != i) v.push_back(i);
  };
  for (size_t i = 0; i < words.size(); ++i)
    for (size_t j = 0; j + 1 < words[i].sym.size(); ++j) {
      const uint64_t p = pack(words[i].sym[j], words[i].sym[j + 1]);
      pair_n[p] += words[i].n;
      note_word(p, int32_t(i));
    }

  // Max-heap on count, ties to the pair whose (left, right) strings sort first. Entries
  // go stale as counts change; a fresh one is pushed on every change and stale ones are
  // skipped when they surface.
  struct Entry {
    int64_t n;
    uint64_t pair;
  };
  auto after = [&](const Entry& x, const Entry& y) {
    if (x.n != y.n) return x.n < y.n;
    const std::string &xl = tokens[size_t(left_of(x.pair))], &yl = tokens[size_t(left_of(y.pair))];
    if (xl != yl) return xl > yl;
    return tokens[size_t(right_of(x.pair))] > tokens[size_t(right_of(y.pair))];
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(after)> heap(after);
  for (const auto& kv : pair_n) heap.push({kv.second, kv.first});

  std::vector<BpeMerge> merges;
  std::unordered_map<uint64_t, int64_t> delta;
  std::vector<int32_t> merged_sym;
  while (int64_t(tokens.size()) < token_budget && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    auto it = pair_n.find(top.pair);
    if (it == pair_n.end() || it->second != top.n) continue;  // stale
    if (top.n < min_frequency) break;
    const int32_t a = left_of(top.pair), b = right_of(top.pair);
    const std::string joined = tokens[size_t(a)] + tokens[size_t(b)];
    int32_t id;
    if (auto f = ids.find(joined); f != ids.end()) {
      id = f->second;
    } else {
      id = int32_t(tokens.size());
      tokens.push_back(joined);
      ids.emplace(joined, id);
    }
    merges.emplace_back(tokens[size_t(a)], tokens[size_t(b)]);

    delta.clear();
    const std::vector<int32_t> holders = std::move(where[top.pair]);
    where.erase(top.pair);
    for (int32_t wi : holders) {
      Word& w = words[size_t(wi)];
      merged_sym.clear();
      bool changed = false;
      for (size_t j = 0; j < w.sym.size();) {
        if (j + 1 < w.sym.size() && w.sym[j] == a && w.sym[j + 1] == b) {
          merged_sym.push_back(id);
          j += 2;
          changed = true;
        } else {
          merged_sym.push_back(w.sym[j++]);
        }
      }
      if (!changed) continue;
      for (size_t j = 0; j + 1 < w.sym.size(); ++j) delta[pack(w.sym[j], w.sym[j + 1])] -= w.n;
      for (size_t j = 0; j + 1 < merged_sym.size(); ++j) {
        const uint64_t p = pack(merged_sym[j], merged_sym[j + 1]);
        delta[p] += w.n;
        note_word(p, wi);
      }
      w.sym.swap(merged_sym);
    }
    for (const auto& [p, d] : delta) {
      if (d == 0) continue;
      int64_t& n = pair_n[p];
      n += d;
      if (n > 0)
        heap.push({n, p});
      else
        pair_n.erase(p);
    }
    if (progress) progress(int64_t(tokens.size()));
  }
  return merges;
}

}  // namespace braid
