#include "sam_output.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace ovseg::cli {

std::string python_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string s(buf, res.ptr);  // [-]d[.ddd]e±XX
  std::string sign;
  if (s[0] == '-') sign = "-", s.erase(0, 1);
  const auto epos = s.find('e');
  const int exp = std::atoi(s.c_str() + epos + 1);
  std::string digits = s.substr(0, epos);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the point
  if (v == 0.0) return sign + "0.0";
  if (exp < -4 || exp >= 16) {
    std::string m = digits.substr(0, 1);
    if (digits.size() > 1) m += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof(e), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    return sign + m + e;
  }
  std::string out;
  const int n = static_cast<int>(digits.size());
  if (exp < 0) {
    out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
  } else if (exp + 1 >= n) {
    out = digits + std::string(static_cast<size_t>(exp + 1 - n), '0') + ".0";
  } else {
    out = digits.substr(0, static_cast<size_t>(exp + 1)) + "." + digits.substr(static_cast<size_t>(exp + 1));
  }
  return sign + out;
}

std::string amg_metadata_csv(const SamResult& r) {
  std::string s =
      "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,stability_score,"
      "crop_box_x0,crop_box_y0,crop_box_w,crop_box_h";
  for (std::size_t i = 0; i < r.masks.size(); ++i) {
    const SamMask& m = r.masks[i];
    s += "\n" + std::to_string(i) + "," + std::to_string(m.area);
    for (auto v : m.bbox) s += "," + std::to_string(v);
    s += "," + python_float(m.point_x) + "," + python_float(m.point_y);
    s += "," + python_float(m.predicted_iou) + "," + python_float(m.stability_score);
    for (auto v : m.crop_box) s += "," + std::to_string(v);
  }
  return s;
}

std::string coco_rle_string(const std::vector<std::uint8_t>& mask, int h, int w) {
  std::vector<long> counts;
  std::uint8_t prev = 0;
  long run = 0;
  for (int x = 0; x < w; ++x)
    for (int y = 0; y < h; ++y) {
      const std::uint8_t v = mask[static_cast<std::size_t>(y) * w + x] ? 1 : 0;
      if (v != prev) {
        counts.push_back(run);
        run = 0;
        prev = v;
      }
      ++run;
    }
  counts.push_back(run);
  std::string out;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    long x = counts[i];
    if (i > 2) x -= counts[i - 2];
    bool more = true;
    while (more) {
      long c = x & 0x1f;
      x >>= 5;
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      out.push_back(static_cast<char>(c + 48));
    }
  }
  return out;
}

std::string amg_rle_json(const SamResult& r) {
  std::string s = "[";
  for (std::size_t i = 0; i < r.masks.size(); ++i) {
    const SamMask& m = r.masks[i];
    if (i) s += ", ";
    std::string counts;
    for (char c : coco_rle_string(m.segmentation, r.height, r.width)) {
      if (c == '"' || c == '\\') counts.push_back('\\');
      counts.push_back(c);
    }
    s += "{\"segmentation\": {\"size\": [" + std::to_string(r.height) + ", " + std::to_string(r.width) +
         "], \"counts\": \"" + counts + "\"}, \"area\": " + std::to_string(m.area) + ", \"bbox\": [" +
         std::to_string(m.bbox[0]) + ", " + std::to_string(m.bbox[1]) + ", " + std::to_string(m.bbox[2]) + ", " +
         std::to_string(m.bbox[3]) + "], \"predicted_iou\": " + python_float(m.predicted_iou) +
         ", \"point_coords\": [[" + python_float(m.point_x) + ", " + python_float(m.point_y) +
         "]], \"stability_score\": " + python_float(m.stability_score) + ", \"crop_box\": [" +
         std::to_string(m.crop_box[0]) + ", " + std::to_string(m.crop_box[1]) + ", " + std::to_string(m.crop_box[2]) +
         ", " + std::to_string(m.crop_box[3]) + "]}";
  }
  return s + "]";
}

}  // namespace ovseg::cli
