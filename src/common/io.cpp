// The file helpers of the public API (include/ovseg/io.hpp) over the library's own.
#include "ovseg/io.hpp"

#include "common/fs_util.hpp"

namespace ovseg {

void write_file_atomic(const std::string& path, const void* bytes, std::size_t size) {
  detail::write_file_atomic(path, bytes, size);
}

std::size_t sweep_stale_temporaries(const std::string& dir) { return detail::sweep_stale_temporaries(dir); }

std::string read_text_file(const std::string& path, std::uint64_t max_bytes) {
  return detail::read_text_file(path, max_bytes);
}

std::string read_stream(std::FILE* f, const std::string& name, std::uint64_t max_bytes) {
  return detail::read_stream(f, name, max_bytes);
}

std::string file_kind(unsigned mode) { return detail::file_kind(mode); }

std::string sha256_file(const std::string& path) { return detail::sha256_file(path); }

std::string sha256_bytes(const void* bytes, std::size_t size) { return detail::sha256_hex(bytes, size); }

void write_npy(const std::string& path, const float* data, const std::vector<std::int64_t>& shape) {
  const auto bytes = detail::npy_float32(data, shape);
  detail::write_file_atomic(path, bytes.data(), bytes.size());
}

void write_scores_npy(const std::string& path, const Result& r) {
  const auto c = static_cast<std::int64_t>(r.score_classes.size());
  if (r.scores.empty())
    throw Error(ErrorCode::kInvalidArgument, path + ": the result holds no scores (SegmentOptions::keep_scores)");
  if (r.scores.size() != static_cast<std::size_t>(c) * static_cast<std::size_t>(r.width) * static_cast<std::size_t>(r.height))
    throw Error(ErrorCode::kInvalidArgument, path + ": the result's score map does not match its size and classes");
  write_npy(path, r.scores.data(), {c, r.height, r.width});
}

LabelMap label_map(const Result& r) {
  LabelMap lm;
  lm.width = r.width;
  lm.height = r.height;
  lm.bit_depth = r.classes.size() <= 255 ? 8 : 16;
  lm.values = r.labels;
  if (lm.bit_depth == 8)
    for (auto& v : lm.values)
      if (v == kUnlabeled) v = unlabeled_value(8);
  return lm;
}

}  // namespace ovseg
