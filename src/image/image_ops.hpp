// Internal image operations (no torch): decoding lives in image_io.cpp, the bit-exact Pillow
// BILINEAR resampler in resize_pillow.cpp, label/prediction maps in label_io.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ovseg/io.hpp"
#include "ovseg/ovseg.hpp"

namespace ovseg::detail {

// The test-time size of ResizeShortestEdge (docs/reference-behaviour.md §3.1 step 2): returns (h, w).
std::pair<int, int> test_resize_size(int h0, int w0, int short_edge, int max_size);

// Pillow's Image.resize((w, h), BILINEAR) on an 8-bit RGB image, bit-exact (docs/reference-behaviour.md §A.1).
Image resize_pillow_bilinear(const Image& src, int out_width, int out_height);

// Label maps and image writing are public (ovseg/io.hpp): ovseg::LabelMap, read_label_map,
// write_label_map, write_image (label_io.cpp).
using ::ovseg::LabelMap;
using ::ovseg::read_label_map;
using ::ovseg::write_label_map;

// ---- Helpers shared with the tests -----------------------------------------------------------

// The container of an encoded image, from its signature.
enum class ContainerFormat { kJpeg, kPng, kWebp, kTiff, kOther };
ContainerFormat sniff_container(const std::uint8_t* bytes, std::size_t size);

// Width and height as the file's header declares them (PNG, JPEG, WebP, TIFF, BMP, PNM/PFM, Sun
// raster, Radiance HDR), without decoding. False when the format is not one of these or the
// header is unreadable (the decoder then decides).
struct HeaderSize {
  std::int64_t width = 0;
  std::int64_t height = 0;
};
bool image_header_size(const std::uint8_t* bytes, std::size_t size, HeaderSize* out);
// Empty when width×height ≤ max_pixels (or max_pixels is 0); otherwise the message that says the
// image is too large and by how much.
std::string check_pixel_limit(std::int64_t width, std::int64_t height, std::uint64_t max_pixels);

// The EXIF orientation (1..8) Pillow's getexif() would report for an encoded image (JPEG APP1,
// PNG eXIf / "Raw profile type exif" / XMP, WebP EXIF, TIFF IFD0); 0 when absent or unreadable.
int exif_orientation(const std::uint8_t* bytes, std::size_t size);

// resize_pillow_bilinear uses AVX2 kernels where the CPU has them; false forces the portable
// kernels (for tests and benchmarks; the results are identical).
void set_resize_simd_enabled(bool enabled);

}  // namespace ovseg::detail
