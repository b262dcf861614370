// Image decoding with the reference's semantics (Pillow open → EXIF transpose → convert("RGB")),
// built on OpenCV. OpenCV is asked for the file's own layout (IMREAD_UNCHANGED) because its
// colour mode would hide what Pillow distinguishes (16-bit grey vs colour); orientation is then
// applied here, since IMREAD_UNCHANGED skips it for JPEG/PNG and OpenCV never does it for WebP.
#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common/fs_util.hpp"
#include "image/image_ops.hpp"

namespace ovseg {
namespace {

[[noreturn]] void bad_image(const std::string& name, const std::string& problem) {
  throw Error(ErrorCode::kBadImage, name + ": " + problem);
}

// Pillow refuses a JPEG whose stream stops before the end-of-image marker ("image file is
// truncated"), whereas libjpeg in OpenCV fills the missing rows with grey and succeeds. Walks
// the marker structure (segment lengths, entropy-coded data) so that EOI bytes inside an
// embedded thumbnail do not count.
bool jpeg_reaches_eoi(const std::uint8_t* p, std::size_t n) {
  std::size_t i = 2;
  while (i < n) {
    if (p[i] != 0xFF) {  // stray bytes between segments: libjpeg skips them with a warning
      ++i;
      continue;
    }
    while (i < n && p[i] == 0xFF) ++i;
    if (i >= n) return false;
    const std::uint8_t marker = p[i++];
    if (marker == 0xD9) return true;
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;
    if (n - i < 2) return false;
    const std::size_t len = (std::size_t{p[i]} << 8) | p[i + 1];
    if (len < 2) return true;  // malformed: leave the verdict to the decoder
    if (n - i < len) return false;
    i += len;
    if (marker != 0xDA) continue;
    // Entropy-coded data ends at the first 0xFF that is not stuffing (FF00), a restart marker
    // or fill (FFFF).
    while (i < n) {
      const void* ff = std::memchr(p + i, 0xFF, n - i);
      if (!ff) return false;
      i = static_cast<std::size_t>(static_cast<const std::uint8_t*>(ff) - p);
      if (i + 1 >= n) return false;
      const std::uint8_t b = p[i + 1];
      if (b == 0x00 || (b >= 0xD0 && b <= 0xD7)) {
        i += 2;
      } else if (b == 0xFF) {
        i += 1;
      } else {
        break;
      }
    }
  }
  return false;
}

struct PngHeader {
  bool valid = false;
  int bit_depth = 0;
  int color_type = -1;
};

PngHeader png_header(const std::uint8_t* p, std::size_t n) {
  PngHeader h;
  if (n >= 8 + 8 + 13 && std::memcmp(p + 12, "IHDR", 4) == 0) {
    h.valid = true;
    h.bit_depth = p[24];
    h.color_type = p[25];
  }
  return h;
}

std::uint32_t crc32(const std::uint8_t* p, std::size_t n) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

void put_be32(std::vector<std::uint8_t>& v, std::uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<std::uint8_t>(x >> s));
}

// Pillow accepts a PNG whose tail is cut off as long as every row decodes: a missing IEND, a
// missing IDAT CRC, even the last bytes of the zlib stream (its Adler-32). libpng in OpenCV
// rejects all of these. Rebuild such a file: complete chunks as they are, a cut IDAT shortened to
// the bytes present with a fresh CRC, then IEND. libpng then decides whether the rows are all
// there. Returns empty when there is nothing to repair.
std::vector<std::uint8_t> png_with_closed_tail(const std::uint8_t* p, std::size_t n) {
  std::size_t i = 8;
  bool seen_idat = false;
  std::vector<std::uint8_t> fixed;
  while (i + 8 <= n) {
    const std::size_t len = (std::size_t{p[i]} << 24) | (std::size_t{p[i + 1]} << 16) |
                            (std::size_t{p[i + 2]} << 8) | p[i + 3];
    const std::uint8_t* type = p + i + 4;
    if (std::memcmp(type, "IEND", 4) == 0 && len == 0 && n - i >= 12) return {};  // nothing cut
    const bool idat = std::memcmp(type, "IDAT", 4) == 0;
    if (len <= n - i - 8 && n - i - 8 - len >= 4) {  // complete chunk
      if (fixed.empty()) fixed.assign(p, p + i);
      fixed.insert(fixed.end(), p + i, p + i + 12 + len);
      seen_idat = seen_idat || idat;
      i += 12 + len;
      continue;
    }
    if (idat) {  // cut inside this IDAT (data or CRC): keep what is there
      const std::size_t have = std::min(len, n - i - 8);
      if (fixed.empty()) fixed.assign(p, p + i);
      put_be32(fixed, static_cast<std::uint32_t>(have));
      const std::size_t start = fixed.size();
      fixed.insert(fixed.end(), type, type + 4 + have);
      put_be32(fixed, crc32(fixed.data() + start, 4 + have));
      seen_idat = true;
    }
    break;
  }
  if (!seen_idat) return {};
  if (fixed.empty()) fixed.assign(p, p + i);
  static const std::uint8_t kIend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
  fixed.insert(fixed.end(), kIend, kIend + sizeof(kIend));
  return fixed;
}

cv::Mat imdecode_unchanged(const std::uint8_t* bytes, std::size_t size) {
  try {
    const cv::Mat buf(1, static_cast<int>(size), CV_8UC1, const_cast<std::uint8_t*>(bytes));
    return cv::imdecode(buf, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception&) {
    return {};
  }
}

// 16-bit → 8-bit as Pillow's convert("RGB") does it: 16-bit greyscale opens as mode "I"/"I;16"
// and is clamped to 255; colour and grey+alpha 16-bit samples are unpacked to their high byte.
cv::Mat to_8bit(const cv::Mat& m, bool clamp_grey) {
  cv::Mat out(m.rows, m.cols, CV_MAKETYPE(CV_8U, m.channels()));
  const int n = m.cols * m.channels();
  for (int y = 0; y < m.rows; ++y) {
    const auto* s = m.ptr<std::uint16_t>(y);
    auto* d = out.ptr<std::uint8_t>(y);
    if (clamp_grey) {
      for (int x = 0; x < n; ++x) d[x] = static_cast<std::uint8_t>(s[x] > 255 ? 255 : s[x]);
    } else {
      for (int x = 0; x < n; ++x) d[x] = static_cast<std::uint8_t>(s[x] >> 8);
    }
  }
  return out;
}

// Writes `src` (8-bit, 1..4 channels in OpenCV order) as RGB into `dst` (CV_8UC3).
void convert_to_rgb(const cv::Mat& src, cv::Mat& dst) {
  switch (src.channels()) {
    case 1: cv::cvtColor(src, dst, cv::COLOR_GRAY2RGB); break;
    case 2: {  // grey + alpha: the alpha is dropped, not blended
      cv::Mat grey;
      cv::extractChannel(src, grey, 0);
      cv::cvtColor(grey, dst, cv::COLOR_GRAY2RGB);
      break;
    }
    case 3: cv::cvtColor(src, dst, cv::COLOR_BGR2RGB); break;
    default: cv::cvtColor(src, dst, cv::COLOR_BGRA2RGB); break;
  }
}

// Pillow's transpose methods for orientations 2..8 (ImageOps.exif_transpose's table).
void apply_orientation(const cv::Mat& src, cv::Mat& dst, int orientation) {
  switch (orientation) {
    case 2: cv::flip(src, dst, 1); break;                                       // FLIP_LEFT_RIGHT
    case 3: cv::rotate(src, dst, cv::ROTATE_180); break;                        // ROTATE_180
    case 4: cv::flip(src, dst, 0); break;                                       // FLIP_TOP_BOTTOM
    case 5: cv::transpose(src, dst); break;                                     // TRANSPOSE
    case 6: cv::rotate(src, dst, cv::ROTATE_90_CLOCKWISE); break;               // ROTATE_270
    case 7: {                                                                   // TRANSVERSE
      cv::Mat t;
      cv::transpose(src, t);
      cv::rotate(t, dst, cv::ROTATE_180);
      break;
    }
    case 8: cv::rotate(src, dst, cv::ROTATE_90_COUNTERCLOCKWISE); break;        // ROTATE_90
    default: src.copyTo(dst); break;
  }
}

Image make_image(int width, int height) {
  Image img;
  img.width = width;
  img.height = height;
  img.rgb.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
  return img;
}

cv::Mat wrap(Image& img) { return cv::Mat(img.height, img.width, CV_8UC3, img.rgb.data()); }

}  // namespace

Image decode_image(const std::uint8_t* bytes, std::size_t size, const std::string& name, std::uint64_t max_pixels) {
  if (size == 0 || bytes == nullptr) bad_image(name, "empty file (0 bytes)");
  if (size > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    bad_image(name, "file too large to decode (" + std::to_string(size) + " bytes)");
  const detail::ContainerFormat container = detail::sniff_container(bytes, size);
  // Decompression bombs: refused from the header, before the decoder allocates anything.
  detail::HeaderSize declared;
  const bool have_header = detail::image_header_size(bytes, size, &declared);
  if (have_header) {
    const std::string too_large = detail::check_pixel_limit(declared.width, declared.height, max_pixels);
    if (!too_large.empty()) bad_image(name, too_large);
  }
  if (container == detail::ContainerFormat::kJpeg && !jpeg_reaches_eoi(bytes, size))
    bad_image(name, "truncated JPEG data (the stream ends before its end-of-image marker)");

  cv::Mat decoded = imdecode_unchanged(bytes, size);
  if (decoded.empty() && container == detail::ContainerFormat::kPng) {
    const std::vector<std::uint8_t> fixed = png_with_closed_tail(bytes, size);
    if (!fixed.empty()) decoded = imdecode_unchanged(fixed.data(), fixed.size());
  }
  if (decoded.empty()) {
    // OpenCV's own limit (OPENCV_IO_MAX_IMAGE_PIXELS, 2^30) when --max-pixels was raised above it.
    if (have_header && static_cast<double>(declared.width) * static_cast<double>(declared.height) > double(1 << 30))
      bad_image(name, "image too large for the decoder: " + std::to_string(declared.width) + "x" +
                          std::to_string(declared.height) + " pixels (OpenCV decodes at most 2^30 = 1073741824)");
    if (container == detail::ContainerFormat::kOther)
      bad_image(name, "cannot decode image (unknown or unsupported format, or corrupt data)");
    bad_image(name, "cannot decode image (corrupt or truncated data)");
  }
  if (decoded.cols <= 0 || decoded.rows <= 0) bad_image(name, "image has zero width or height");
  // Formats whose header is not read above (JPEG 2000, OpenEXR): checked once decoded.
  if (const std::string too_large = detail::check_pixel_limit(decoded.cols, decoded.rows, max_pixels);
      !too_large.empty())
    bad_image(name, too_large);
  if (decoded.channels() < 1 || decoded.channels() > 4)
    bad_image(name, "unsupported pixel layout (" + std::to_string(decoded.channels()) + " channels)");

  if (decoded.depth() == CV_16U) {
    const PngHeader png = container == detail::ContainerFormat::kPng ? png_header(bytes, size) : PngHeader{};
    // A grey PNG with a tRNS colour comes back from OpenCV with an alpha channel, but Pillow
    // still opens it as mode "I".
    const bool grey = decoded.channels() == 1 || (png.valid && png.color_type == 0);
    decoded = to_8bit(decoded, grey);
  } else if (decoded.depth() != CV_8U) {
    bad_image(name, "unsupported sample type (only 8- and 16-bit integer images are supported)");
  }

  // OpenCV's TIFF reader already orients the image (libtiff), even with IMREAD_UNCHANGED.
  const int orientation =
      container == detail::ContainerFormat::kTiff ? 0 : detail::exif_orientation(bytes, size);
  const bool swaps_axes = orientation >= 5 && orientation <= 8;
  Image out = make_image(swaps_axes ? decoded.rows : decoded.cols, swaps_axes ? decoded.cols : decoded.rows);
  cv::Mat dst = wrap(out);
  if (orientation >= 2 && orientation <= 8) {
    cv::Mat rgb;
    convert_to_rgb(decoded, rgb);
    apply_orientation(rgb, dst, orientation);
  } else {
    convert_to_rgb(decoded, dst);
  }
  // cv functions reallocate instead of failing on a size mismatch; make sure they wrote in place.
  if (dst.data != out.rgb.data()) bad_image(name, "internal error: unexpected decoded size");
  return out;
}

Image load_image(const std::string& path, std::uint64_t max_pixels) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(ErrorCode::kIo, path + ": cannot read image (is a directory)");
  const std::vector<std::uint8_t> bytes = detail::read_file(path);
  return decode_image(bytes.data(), bytes.size(), path, max_pixels);
}

Image to_rgb(const ImageView& view) {
  if (view.data == nullptr) throw Error(ErrorCode::kInvalidArgument, "to_rgb: image data is null");
  if (view.width <= 0 || view.height <= 0)
    throw Error(ErrorCode::kInvalidArgument, "to_rgb: image has zero width or height (" +
                                                 std::to_string(view.width) + "x" + std::to_string(view.height) + ")");
  int channels, type, code;
  switch (view.format) {
    case PixelFormat::kRgb: channels = 3; type = CV_8UC3; code = -1; break;
    case PixelFormat::kBgr: channels = 3; type = CV_8UC3; code = cv::COLOR_BGR2RGB; break;
    case PixelFormat::kRgba: channels = 4; type = CV_8UC4; code = cv::COLOR_RGBA2RGB; break;
    case PixelFormat::kBgra: channels = 4; type = CV_8UC4; code = cv::COLOR_BGRA2RGB; break;
    case PixelFormat::kGray: channels = 1; type = CV_8UC1; code = cv::COLOR_GRAY2RGB; break;
    default: throw Error(ErrorCode::kBadImage, "to_rgb: unsupported pixel format");
  }
  const std::size_t row_bytes = static_cast<std::size_t>(view.width) * static_cast<std::size_t>(channels);
  const std::size_t stride = view.stride == 0 ? row_bytes : view.stride;
  if (stride < row_bytes)
    throw Error(ErrorCode::kInvalidArgument, "to_rgb: stride " + std::to_string(stride) +
                                                 " is smaller than a row (" + std::to_string(row_bytes) + " bytes)");
  const cv::Mat src(view.height, view.width, type, const_cast<std::uint8_t*>(view.data), stride);
  Image out = make_image(view.width, view.height);
  cv::Mat dst = wrap(out);
  if (code < 0) src.copyTo(dst);
  else cv::cvtColor(src, dst, code);
  if (dst.data != out.rgb.data()) throw Error(ErrorCode::kRuntime, "to_rgb: unexpected conversion result");
  return out;
}

}  // namespace ovseg
