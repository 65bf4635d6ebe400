#include <cstdio>
#include <queue>

#include "core/error.hpp"
#include "tokenizer/components.hpp"
#include "tokenizer/unicode.hpp"

namespace braid::tok {

Bpe::Bpe(const json& model, const std::string& where) {
  JsonObject o(model, where);
  const std::string type = o.get_string("type", "BPE");
  check(type == "BPE", where, ": model type '", type, "' is not supported (supported: BPE)");
  check(model.contains("vocab") && model["vocab"].is_object(), where, ": 'vocab' must be an object");
  // Ids index a table, so they must be near-dense: gaps of up to 2^20 unused ids are accepted.
  const int64_t max_id = int64_t(model["vocab"].size()) + (int64_t(1) << 20);
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    check(it.value().is_number_integer(), where, ": vocab id of '", it.key(), "' is not an integer");
    const int64_t id = it.value().get<int64_t>();
    check(id >= 0 && id < max_id, where, ": vocab id ", id, " of '", it.key(), "' is out of range (",
          model["vocab"].size(), " entries: ids must be below ", max_id, ")");
    vocab_[it.key()] = int32_t(id);
    if (size_t(id) >= id_to_token_.size()) id_to_token_.resize(size_t(id) + 1);
    id_to_token_[size_t(id)] = it.key();
  }
  byte_fallback_ = o.get_bool("byte_fallback", false);
  fuse_unk_ = o.get_bool("fuse_unk", false);
  ignore_merges_ = o.get_bool("ignore_merges", false);
  prefix_ = o.get_string("continuing_subword_prefix", "");
  suffix_ = o.get_string("end_of_word_suffix", "");
  check(!o.has("dropout") || o.get_float("dropout") == 0.0, where,
        ": BPE dropout is not supported for inference");
  if (o.has("unk_token")) {
    const std::string u = o.get_string("unk_token");
    unk_ = token_id(u);
    check(unk_ >= 0, where, ": unk_token '", u, "' is not in the vocabulary");
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    byte_ids_[b] = token_id(name);
  }
  check(model.contains("merges") && model["merges"].is_array(), where, ": 'merges' must be an array");
  const json& merges = model["merges"];
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    std::string a, b;
    if (m.is_string()) {  // "a b"
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      check(sp != std::string::npos && sp > 0 && sp + 1 < s.size(), where, ": merge ", r, " \"", s,
            "\" is not two tokens separated by a space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      check(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), where, ": merge ", r,
            " is not a pair of strings");
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    }
    const int32_t ia = token_id(a), ib = token_id(b);
    check(ia >= 0 && ib >= 0, where, ": merge ", r, " uses a token missing from the vocabulary");
    const std::string merged =
        a + (prefix_.empty() || b.compare(0, prefix_.size(), prefix_) != 0 ? b : b.substr(prefix_.size()));
    const int32_t im = token_id(merged);
    check(im >= 0, where, ": merge ", r, " produces '", merged, "', which is not in the vocabulary");
    merges_.emplace((uint64_t(uint32_t(ia)) << 32) | uint32_t(ib), Merge{int32_t(r), im});
  }
}

int32_t Bpe::token_id(const std::string& t) const {
  auto it = vocab_.find(t);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string& Bpe::token(int32_t id) const {
  static const std::string empty;
  return id >= 0 && size_t(id) < id_to_token_.size() ? id_to_token_[size_t(id)] : empty;
}

void Bpe::tokenize(const std::string& word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (word.size() <= 256) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  tokenize_uncached(word, ids);
  if (word.size() <= 256) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() > 100000) cache_.clear();
    cache_.emplace(word, ids);
  }
  out.insert(out.end(), ids.begin(), ids.end());
}

void Bpe::tokenize_uncached(const std::string& word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    const int32_t id = token_id(word + suffix_);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  // Initial symbols: one per character (or per byte through <0xXX> fallback).
  struct Sym {
    int32_t id;
    int prev, next;
  };
  std::vector<Sym> sym;
  bool last_unk = false;
  size_t i = 0;
  while (i < word.size()) {
    const size_t start = i;
    i += size_t(unicode::utf8_len(static_cast<unsigned char>(word[i])));
    if (i > word.size()) i = word.size();
    std::string piece = word.substr(start, i - start);
    if (start > 0 && !prefix_.empty()) piece = prefix_ + piece;
    if (i == word.size()) piece += suffix_;
    int32_t id = token_id(piece);
    if (id >= 0) {
      sym.push_back({id, 0, 0});
      last_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (size_t k = start; k < i; ++k) all = all && byte_ids_[static_cast<unsigned char>(word[k])] >= 0;
      if (all) {
        for (size_t k = start; k < i; ++k)
          sym.push_back({byte_ids_[static_cast<unsigned char>(word[k])], 0, 0});
        last_unk = false;
        continue;
      }
    }
    if (unk_ >= 0) {
      if (!(fuse_unk_ && last_unk)) sym.push_back({unk_, 0, 0});
      last_unk = true;
    }
  }
  const int n = int(sym.size());
  for (int k = 0; k < n; ++k) sym[size_t(k)].prev = k - 1, sym[size_t(k)].next = k + 1 < n ? k + 1 : -1;

  // Merge the lowest-ranked pair first (leftmost on ties) until none applies.
  struct Cand {
    int32_t rank;
    int pos;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto find = [&](int a) -> const Merge* {
    const int b = sym[size_t(a)].next;
    if (b < 0) return nullptr;
    auto it = merges_.find((uint64_t(uint32_t(sym[size_t(a)].id)) << 32) | uint32_t(sym[size_t(b)].id));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::vector<char> alive(size_t(n), 1);
  for (int k = 0; k + 1 < n; ++k)
    if (const Merge* m = find(k)) heap.push({m->rank, k});
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    if (!alive[size_t(c.pos)]) continue;
    const Merge* m = find(c.pos);
    if (!m || m->rank != c.rank) continue;  // stale entry
    const int b = sym[size_t(c.pos)].next;
    sym[size_t(c.pos)].id = m->id;
    sym[size_t(c.pos)].next = sym[size_t(b)].next;
    if (sym[size_t(b)].next >= 0) sym[size_t(sym[size_t(b)].next)].prev = c.pos;
    alive[size_t(b)] = 0;
    if (const int p = sym[size_t(c.pos)].prev; p >= 0)
      if (const Merge* pm = find(p)) heap.push({pm->rank, p});
    if (const Merge* nm = find(c.pos)) heap.push({nm->rank, c.pos});
  }
  for (int k = n > 0 ? 0 : -1; k >= 0; k = sym[size_t(k)].next) out.push_back(sym[size_t(k)].id);
}

}  // namespace braid::tok
