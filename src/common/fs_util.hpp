// Small file-system helpers shared by the library and the CLI.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "ovseg/io.hpp"

namespace ovseg::detail {

// Largest file read_file() reads unless told otherwise (1 GiB): no input of ovseg is larger, and
// a bigger one would only exhaust memory.
using ::ovseg::kDefaultMaxFileBytes;

// Describes what kind of file `mode` (st_mode) is: "directory", "FIFO", "socket", "character
// device", "block device", "symbolic link" or "regular file".
std::string file_kind(unsigned mode);

// Opens `path` for reading without blocking (O_NONBLOCK, so a FIFO cannot hang the caller) and
// checks that it is a regular file. Returns the descriptor (O_CLOEXEC, blocking again) and, in
// *size, the file's size. Throws Error(kIo) naming the file: "not a regular file (FIFO)", etc.
int open_regular_file(const std::string& path, std::uint64_t* size = nullptr);
// The same check without keeping the file open (for readers that open the path themselves).
void check_regular_file(const std::string& path);

// Reads a whole regular file of at most `max_bytes`; throws Error(kIo) naming the file (special
// files, directories and oversized files are refused before anything is read).
std::vector<std::uint8_t> read_file(const std::string& path, std::uint64_t max_bytes = kDefaultMaxFileBytes);
std::string read_text_file(const std::string& path, std::uint64_t max_bytes = kDefaultMaxFileBytes);
// Reads a stream (stdin) up to `max_bytes`; throws Error(kIo) naming `name` when it is longer.
std::string read_stream(std::FILE* f, const std::string& name, std::uint64_t max_bytes);

// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
// Creates missing parent directories. Throws Error(kIo) naming the file.
void write_file_atomic(const std::string& path, const void* bytes, std::size_t size);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

// Removes the temporaries that write_file_atomic() left in `dir` (not recursive) when a process
// died mid-write (kill -9, power loss): "NAME.tmpPID-N" (or "NAME.tmpPID-N.EXT") whose PID is no longer running. Files of
// a live process, and anything not named like that, are left alone. Returns how many were removed.
std::size_t sweep_stale_temporaries(const std::string& dir);
// True if `name` looks like one of write_file_atomic's temporaries; *pid receives its process id.
bool parse_temporary_name(const std::string& name, long* pid);

// Hex sha256 of a file (streamed) or of a buffer.
std::string sha256_file(const std::string& path);
std::string sha256_hex(const void* bytes, std::size_t size);
// The portable implementation alone, and whether sha256_* use the CPU's SHA extensions (tests).
std::string sha256_hex_portable(const void* bytes, std::size_t size);
bool sha256_uses_sha_ni();

// A .npy (format 1.0, little-endian float32, C order) file as bytes.
std::vector<std::uint8_t> npy_float32(const float* data, const std::vector<std::int64_t>& shape);

}  // namespace ovseg::detail
