// Writing and reading what ovseg produces, for programs that use the library the way the `ovseg`
// command does: label maps, score maps, images, and files written atomically. No torch, OpenCV
// or spdlog type appears here.
//
//   ovseg::Result r = model.segment(image.view(), classes);
//   ovseg::write_label_map("out/photo.png", ovseg::label_map(r));   // as `ovseg segment` writes it
//   ovseg::write_scores_npy("out/photo.scores.npy", r);              // needs keep_scores
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "ovseg/export.hpp"
#include "ovseg/ovseg.hpp"

namespace ovseg {

// A single-channel label map: one value per pixel, row-major. The one label-map type of the API:
// segmentation results as written to disk, ground truth and evaluation predictions
// (eval::LabelImage is this type).
struct LabelMap {
  int width = 0;
  int height = 0;
  int bit_depth = 8;                  // of the file: 8 or 16
  std::vector<std::uint16_t> values;  // height * width
};

// The label map `ovseg segment` writes for a result: 8-bit for up to 255 classes with 255 =
// unlabeled, else 16-bit with 65535 (kUnlabeled) = unlabeled.
OVSEG_API LabelMap label_map(const Result& result);
// The value that marks an unlabeled pixel in a label map of this bit depth (255 or 65535).
inline constexpr std::uint16_t unlabeled_value(int bit_depth) noexcept { return bit_depth == 8 ? 255 : kUnlabeled; }

// Reads an 8-bit PNG or an 8/16-bit PNG/TIFF label map unchanged. Throws Error(kBadData / kIo)
// naming the file.
OVSEG_API LabelMap read_label_map(const std::string& path);
// Writes a label map as PNG (8- or 16-bit) or TIFF, by the extension, atomically.
OVSEG_API void write_label_map(const std::string& path, const LabelMap& map);
// The bytes write_label_map() writes for a file of this extension (".png", ".tif", ".tiff"), in
// memory (e.g. for an HTTP response); `name` is used in error messages.
OVSEG_API std::vector<std::uint8_t> encode_label_map(const LabelMap& map, const std::string& ext = ".png",
                                                     const std::string& name = "label map");

// Result::scores as NumPy .npy: float32 [C, H, W] (C = Result::score_classes.size()), atomically.
// Throws Error(kInvalidArgument) when the result holds no scores (SegmentOptions::keep_scores).
OVSEG_API void write_scores_npy(const std::string& path, const Result& result);
// Any float32 array as .npy (C order), atomically.
OVSEG_API void write_npy(const std::string& path, const float* data, const std::vector<std::int64_t>& shape);

// Encodes an RGB image as PNG, JPEG, BMP, TIFF or WebP (by the extension) and writes it atomically.
OVSEG_API void write_image(const std::string& path, const Image& image);
// The bytes write_image() writes for a file of this extension, in memory.
OVSEG_API std::vector<std::uint8_t> encode_image(const Image& image, const std::string& ext = ".png",
                                                 const std::string& name = "image");

// ---- Files ------------------------------------------------------------------------------------

// Largest file read_text_file() reads unless told otherwise (1 GiB).
inline constexpr std::uint64_t kDefaultMaxFileBytes = std::uint64_t{1} << 30;

// Writes `bytes` to `path` atomically: a temporary "NAME.tmpPID-N" in the same directory, fsync,
// rename. Creates missing parent directories. Throws Error(kIo) naming the file.
OVSEG_API void write_file_atomic(const std::string& path, const void* bytes, std::size_t size);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}
// Removes the temporaries that write_file_atomic() left in `dir` (not recursive) when a process
// died mid-write: those whose process is no longer running. Also "NAME.tmpPID-N.EXT", the form
// for files whose writer needs the extension (ovseg's video overlays). Returns how many were removed.
OVSEG_API std::size_t sweep_stale_temporaries(const std::string& dir);

// Reads a whole regular file of at most `max_bytes`; special files (FIFOs, devices, sockets),
// directories and larger files are refused before anything is read: Error(kIo) naming the file.
OVSEG_API std::string read_text_file(const std::string& path, std::uint64_t max_bytes = kDefaultMaxFileBytes);
// Reads a stream (e.g. stdin) up to `max_bytes`; Error(kIo) naming `name` when it is longer.
OVSEG_API std::string read_stream(std::FILE* f, const std::string& name, std::uint64_t max_bytes);
// What kind of file a st_mode is: "directory", "FIFO", "socket", "character device",
// "block device", "symbolic link" or "regular file".
OVSEG_API std::string file_kind(unsigned mode);
// Hex SHA-256 of a file (streamed). Throws Error(kIo) naming the file.
OVSEG_API std::string sha256_file(const std::string& path);
// Hex SHA-256 of bytes in memory (what sha256_file() gives for a file holding them).
OVSEG_API std::string sha256_bytes(const void* bytes, std::size_t size);

}  // namespace ovseg
