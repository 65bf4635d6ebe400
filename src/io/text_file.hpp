// Whole text files: read in one go, and written atomically (to PATH.tmp, then renamed over
// PATH), so a reader (or a crash) never sees half a file.
#pragma once
#include <string>

namespace braid {

// Throws naming the file when it cannot be created, written or renamed.
void write_text_file(const std::string& path, const std::string& text);
// Throws "PATH: cannot open file" when it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace braid
