#include "runtime/text_stream.hpp"

#include <algorithm>

#include "tokenizer/tokenizer.hpp"

namespace braid {

namespace {
const std::string kReplacement = "\xEF\xBF\xBD";  // what decode gives for an incomplete character
}

TextStream::TextStream(const Tokenizer* tok, std::vector<std::string> stop)
    : tok_(tok), stop_(std::move(stop)) {
  std::erase_if(stop_, [](const std::string& s) { return s.empty(); });
}

std::string TextStream::decoded() const {
  if (tok_) return tok_->decode(ids_, true);
  std::string s;
  for (size_t i = 0; i < ids_.size(); ++i) {
    if (i) s += ' ';
    s += std::to_string(ids_[i]);
  }
  return s;
}

// The part of `full` beyond what was emitted that is final now.
std::string TextStream::release(const std::string& full, bool final) {
  // A decoder may rewrite earlier text (rare: e.g. a space merged away); emit only a clean extension.
  if (full.size() < emitted_.size() || full.compare(0, emitted_.size(), emitted_) != 0) return "";
  size_t end = full.size();
  // The earliest stop string that ends in the new text ends the stream.
  const size_t from = emitted_.size();
  size_t cut = std::string::npos;
  for (const auto& s : stop_) {
    const size_t start = from >= s.size() ? from - s.size() + 1 : 0;
    const size_t at = full.find(s, start);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    stopped_ = true;
    end = std::max(cut, from);
  } else if (!final) {
    if (full.size() >= kReplacement.size() && full.compare(full.size() - 3, 3, kReplacement) == 0)
      return "";  // the last character is not complete yet
    // Hold back the longest tail that is a proper prefix of a stop string.
    for (const auto& s : stop_)
      for (size_t k = std::min(s.size() - 1, full.size() - from); k > 0; --k)
        if (full.compare(full.size() - k, k, s, 0, k) == 0) {
          end = std::min(end, full.size() - k);
          break;
        }
  }
  std::string out = full.substr(from, end - from);
  emitted_ += out;
  return out;
}

std::string TextStream::push(int32_t id) {
  if (stopped_) return "";
  ids_.push_back(id);
  return release(decoded(), false);
}

std::string TextStream::finish() {
  if (stopped_) return "";
  return release(decoded(), true);
}

}  // namespace braid
