// Writing a whole text file atomically: to PATH.tmp, then renamed over PATH, so a reader (or
// a crash) never sees half a file.
#pragma once
#include <string>

namespace braid {

// Throws naming the file when it cannot be created, written or renamed.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace braid
