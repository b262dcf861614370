// Label maps (ground truth and predictions) and RGB image files. Encoding happens in memory so
// that the file appears atomically (write_file_atomic).
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common/fs_util.hpp"
#include "image/image_ops.hpp"

namespace ovseg::detail {
namespace {

std::string lower_extension(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

std::vector<std::uint8_t> encode(const std::string& path, const std::string& ext, const cv::Mat& m,
                                 const std::vector<int>& params) {
  std::vector<std::uint8_t> out;
  bool ok = false;
  try {
    ok = cv::imencode(ext, m, out, params);
  } catch (const cv::Exception& e) {
    throw Error(ErrorCode::kIo, path + ": cannot encode image (" + e.what() + ")");
  }
  if (!ok || out.empty()) throw Error(ErrorCode::kIo, path + ": cannot encode image as " + ext);
  return out;
}

}  // namespace

}  // namespace ovseg::detail

namespace ovseg {

using detail::check_pixel_limit;
using detail::HeaderSize;
using detail::image_header_size;
using detail::encode;
using detail::lower_extension;
using detail::read_file;

LabelMap read_label_map(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(ErrorCode::kIo, path + ": cannot read label map (is a directory)");
  const std::vector<std::uint8_t> bytes = read_file(path);
  if (bytes.empty()) throw Error(ErrorCode::kBadData, path + ": empty label map file (0 bytes)");
  HeaderSize declared;
  if (image_header_size(bytes.data(), bytes.size(), &declared))
    if (const std::string too_large = check_pixel_limit(declared.width, declared.height, kDefaultMaxPixels);
        !too_large.empty())
      throw Error(ErrorCode::kBadData, path + ": label map " + too_large);
  cv::Mat m;
  try {
    const cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<std::uint8_t*>(bytes.data()));
    m = cv::imdecode(buf, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception&) {
    m.release();
  }
  if (m.empty()) throw Error(ErrorCode::kBadData, path + ": cannot decode label map (corrupt or unsupported file)");
  if (m.channels() != 1)
    throw Error(ErrorCode::kBadData, path + ": label map has " + std::to_string(m.channels()) +
                                         " channels (expected a single-channel 8- or 16-bit image; palette "
                                         "images are not supported)");
  if (m.depth() != CV_8U && m.depth() != CV_16U)
    throw Error(ErrorCode::kBadData, path + ": label map samples must be 8- or 16-bit unsigned integers");
  LabelMap map;
  map.width = m.cols;
  map.height = m.rows;
  map.bit_depth = m.depth() == CV_8U ? 8 : 16;
  map.values.resize(static_cast<std::size_t>(m.cols) * static_cast<std::size_t>(m.rows));
  cv::Mat dst(m.rows, m.cols, CV_16UC1, map.values.data());
  m.convertTo(dst, CV_16U);  // 8 → 16 bit is a plain widening
  return map;
}

std::vector<std::uint8_t> encode_label_map(const LabelMap& map, const std::string& ext_in, const std::string& name) {
  if (map.width <= 0 || map.height <= 0 ||
      map.values.size() != static_cast<std::size_t>(map.width) * static_cast<std::size_t>(map.height))
    throw Error(ErrorCode::kInvalidArgument, name + ": label map is empty or its size does not match its values");
  if (map.bit_depth != 8 && map.bit_depth != 16)
    throw Error(ErrorCode::kInvalidArgument, name + ": label map bit depth must be 8 or 16, not " +
                                                 std::to_string(map.bit_depth));
  const std::string ext = lower_extension("x" + ext_in);
  std::vector<int> params;
  if (ext == ".png") {
    params = {cv::IMWRITE_PNG_COMPRESSION, 3};
  } else if (ext == ".tif" || ext == ".tiff") {
    params = {};
  } else {
    throw Error(ErrorCode::kInvalidArgument, name + ": label maps are written as .png or .tif/.tiff");
  }
  const cv::Mat src16(map.height, map.width, CV_16UC1, const_cast<std::uint16_t*>(map.values.data()));
  cv::Mat m;
  if (map.bit_depth == 8) {
    const auto max_it = std::max_element(map.values.begin(), map.values.end());
    if (*max_it > 255)
      throw Error(ErrorCode::kInvalidArgument, name + ": value " + std::to_string(*max_it) +
                                                   " does not fit an 8-bit label map");
    src16.convertTo(m, CV_8U);
  } else {
    m = src16;
  }
  return encode(name, ext, m, params);
}

void write_label_map(const std::string& path, const LabelMap& map) {
  const std::vector<std::uint8_t> bytes = encode_label_map(map, lower_extension(path), path);
  write_file_atomic(path, bytes.data(), bytes.size());
}

std::vector<std::uint8_t> encode_image(const Image& image, const std::string& ext_in, const std::string& name) {
  if (image.width <= 0 || image.height <= 0 ||
      image.rgb.size() != static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height) * 3)
    throw Error(ErrorCode::kInvalidArgument, name + ": image is empty or its size does not match its pixels");
  const std::string ext = lower_extension("x" + ext_in);
  std::vector<int> params;
  if (ext == ".png") {
    params = {cv::IMWRITE_PNG_COMPRESSION, 3};
  } else if (ext == ".jpg" || ext == ".jpeg") {
    params = {cv::IMWRITE_JPEG_QUALITY, 95};
  } else if (ext == ".bmp" || ext == ".tif" || ext == ".tiff" || ext == ".webp") {
    params = {};
  } else {
    throw Error(ErrorCode::kInvalidArgument, name + ": unsupported image extension (use .png or .jpg)");
  }
  const cv::Mat rgb(image.height, image.width, CV_8UC3, const_cast<std::uint8_t*>(image.rgb.data()));
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  return encode(name, ext, bgr, params);
}

void write_image(const std::string& path, const Image& image) {
  const std::vector<std::uint8_t> bytes = encode_image(image, lower_extension(path), path);
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace ovseg
