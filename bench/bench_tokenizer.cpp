// Tokenizer encode throughput: bench_tokenizer TOKENIZER.json TEXT_FILE [RUNS]
// Prints MB/s (median of RUNS encodes of the whole file, first run discarded as
// warm-up of the word cache is part of real use and reported separately).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/error.hpp"
#include "core/timer.hpp"
#include "tokenizer/tokenizer.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_tokenizer TOKENIZER.json TEXT_FILE [RUNS]\n");
    return 2;
  }
  try {
    auto tok = braid::Tokenizer::load(argv[1]);
    std::ifstream in(argv[2], std::ios::binary);
    if (!in) braid::fail(argv[2], ": cannot open file");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    const int runs = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;
    braid::Timer t;
    size_t n_tokens = tok->encode(text).size();
    const double cold = t.seconds();
    std::vector<double> secs;
    for (int r = 0; r < runs; ++r) {
      t.reset();
      n_tokens = tok->encode(text).size();
      secs.push_back(t.seconds());
    }
    std::sort(secs.begin(), secs.end());
    const double mb = double(text.size()) / 1e6;
    std::printf(
        "{\"tokenizer\": \"%s\", \"bytes\": %zu, \"tokens\": %zu, \"cold_mb_per_s\": %.2f, "
        "\"warm_mb_per_s\": %.2f, \"runs\": %d}\n",
        argv[1], text.size(), n_tokens, mb / cold, mb / secs[secs.size() / 2], runs);
  } catch (const braid::Error& e) {
    std::fprintf(stderr, "bench_tokenizer: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
