// Small file-system helpers shared by the library and the CLI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ovseg::detail {

// Reads a whole file; throws Error(kIo) naming the file.
std::vector<std::uint8_t> read_file(const std::string& path);
std::string read_text_file(const std::string& path);

// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
// Creates missing parent directories. Throws Error(kIo) naming the file.
void write_file_atomic(const std::string& path, const void* bytes, std::size_t size);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

// Hex sha256 of a file (streamed) or of a buffer.
std::string sha256_file(const std::string& path);
std::string sha256_hex(const void* bytes, std::size_t size);

// A .npy (format 1.0, little-endian float32, C order) file as bytes.
std::vector<std::uint8_t> npy_float32(const float* data, const std::vector<std::int64_t>& shape);

}  // namespace ovseg::detail
