#include "overlay.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <utf8proc.h>
#if defined(OVSEG_HAVE_FREETYPE)
#include <opencv2/freetype.hpp>
#endif

#include "class_list.hpp"
#include "cli_log.hpp"

#if !defined(OVSEG_OVERLAY_FONT)
#define OVSEG_OVERLAY_FONT ""
#endif
#if !defined(OVSEG_OVERLAY_CJK_FONT)
#define OVSEG_OVERLAY_CJK_FONT ""
#endif

namespace ovseg::cli {
namespace {

constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

// UTF-8 → code points (utf8proc's decoder); a byte that does not start a well-formed character
// becomes U+FFFD.
std::vector<char32_t> decode_utf8(const std::string& s) {
  std::vector<char32_t> out;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    utf8proc_int32_t cp = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(p + i, static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
    out.push_back(n > 0 ? static_cast<char32_t>(cp) : U'\uFFFD');
    i += n > 0 ? static_cast<std::size_t>(n) : 1;
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
}

// Han, kana, Hangul, CJK punctuation and full-width forms: what DejaVu Sans does not draw.
bool is_cjk(char32_t c) {
  return (c >= 0x1100 && c <= 0x11FF) || (c >= 0x2E80 && c <= 0x2FDF) || (c >= 0x3000 && c <= 0x9FFF) ||
         (c >= 0xA960 && c <= 0xA97F) || (c >= 0xAC00 && c <= 0xD7FF) || (c >= 0xF900 && c <= 0xFAFF) ||
         (c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF00 && c <= 0xFFEF) || (c >= 0x20000 && c <= 0x3FFFF);
}

// Writes text with OpenCV's freetype module where the build has it and the fonts load, with the
// Hershey font in ASCII otherwise. Positions are those of cv::putText: `org` is the left end of
// the baseline; sizes are cv::getTextSize's (height above the baseline, `baseline` below it).
class Painter {
 public:
  explicit Painter(const OverlayFonts& fonts) {
#if defined(OVSEG_HAVE_FREETYPE)
    main_ = load(fonts.main);
    if (main_) cjk_ = load(fonts.cjk);
#else
    (void)fonts;
#endif
  }

  bool truetype() const {
#if defined(OVSEG_HAVE_FREETYPE)
    return !main_.empty();
#else
    return false;
#endif
  }

  // The text as it will be drawn: ASCII with '?' for the Hershey font; control characters
  // become spaces either way.
  std::string label(const std::string& utf8) const {
    if (!truetype()) return ascii_label(utf8);
    std::string out;
    for (char32_t c : decode_utf8(utf8)) append_utf8(out, c < 0x20 || (c >= 0x7F && c < 0xA0) ? U' ' : c);
    return out;
  }

  cv::Size size(const std::string& text, double scale, int thickness, int* baseline) const {
#if defined(OVSEG_HAVE_FREETYPE)
    if (truetype()) {
      const int px = pixel_height(scale);
      cv::Size total(0, 0);
      for (const auto& run : runs(text)) {
        int b = 0;
        const cv::Size s = font(run)->getTextSize(run.text, px, -1, &b);
        total.width += s.width;
        total.height = std::max(total.height, s.height);
      }
      // Outlines grow the text by their width on every side.
      total.width += thickness;
      total.height = std::max(total.height, px * 3 / 4) + thickness / 2;
      *baseline = px / 4 + thickness / 2;
      return total;
    }
#endif
    return cv::getTextSize(text, kFont, scale, thickness, baseline);
  }

  void put(cv::Mat& img, const std::string& text, cv::Point org, double scale, const cv::Scalar& colour,
           int thickness, bool outline_only = false) const {
#if defined(OVSEG_HAVE_FREETYPE)
    if (truetype()) {
      const int px = pixel_height(scale);
      for (const auto& run : runs(text)) {
        const auto& f = font(run);
        f->putText(img, run.text, org, px, colour, outline_only ? std::max(1, thickness) : -1, cv::LINE_AA, true);
        int b = 0;
        org.x += f->getTextSize(run.text, px, -1, &b).width;
      }
      return;
    }
#endif
    (void)outline_only;
    cv::putText(img, text, org, kFont, scale, colour, thickness, cv::LINE_AA);
  }

  // Text with a dark outline so it stays legible on any colour.
  void outlined(cv::Mat& img, const std::string& text, cv::Point org, double scale, int thickness,
                const cv::Scalar& colour = cv::Scalar(255, 255, 255)) const {
    if (truetype()) {
      put(img, text, org, scale, cv::Scalar(0, 0, 0), thickness + 1, /*outline_only=*/true);
      put(img, text, org, scale, colour, thickness);
      return;
    }
    put(img, text, org, scale, cv::Scalar(0, 0, 0), thickness + 2 + thickness / 2);
    put(img, text, org, scale, colour, thickness);
  }

 private:
#if defined(OVSEG_HAVE_FREETYPE)
  struct Run {
    std::string text;
    bool cjk = false;
  };

  // The Hershey font's scale 1 is about 30 pixels from ascender to descender.
  static int pixel_height(double scale) { return std::max(8, static_cast<int>(std::lround(30.0 * scale))); }

  static cv::Ptr<cv::freetype::FreeType2> load(const std::string& path) {
    if (path.empty()) return {};
    std::error_code ec;
    std::string problem;
    if (!std::filesystem::is_regular_file(path, ec)) {
      problem = "not found";
    } else {
      try {
        auto f = cv::freetype::createFreeType2();
        f->loadFontData(path, 0);
        return f;
      } catch (const cv::Exception& e) {
        problem = e.what();
      }
    }
    static std::mutex mu;
    static std::set<std::string> warned;
    std::lock_guard<std::mutex> lock(mu);
    if (warned.insert(path).second)
      cli_log().warn("overlay font {}: {}; class names are drawn without it (ASCII, '?' for other characters)",
                         path, problem);
    return {};
  }

  // Consecutive characters that one font draws. Without a CJK font, CJK characters become '?'.
  std::vector<Run> runs(const std::string& text) const {
    std::vector<Run> out;
    for (char32_t c : decode_utf8(text)) {
      const bool cjk = is_cjk(c) && !cjk_.empty();
      if (is_cjk(c) && !cjk) c = U'?';
      if (out.empty() || out.back().cjk != cjk) out.push_back({std::string(), cjk});
      append_utf8(out.back().text, c);
    }
    return out;
  }

  const cv::Ptr<cv::freetype::FreeType2>& font(const Run& r) const { return r.cjk ? cjk_ : main_; }

  cv::Ptr<cv::freetype::FreeType2> main_, cjk_;
#endif
};

cv::Scalar rgb_scalar(const std::array<std::uint8_t, 3>& c) { return cv::Scalar(c[0], c[1], c[2]); }

// "road, route" → "road": the datasets list synonyms after the first comma.
std::string primary_name(const std::string& s) { return trim(s.substr(0, s.find(','))); }

// At most `max_chars` characters (code points), the last three "..." when it is cut.
std::string truncate(const std::string& s, std::size_t max_chars) {
  const auto cps = decode_utf8(s);
  if (cps.size() <= max_chars) return s;
  std::string out;
  for (std::size_t i = 0; i + 3 < max_chars; ++i) append_utf8(out, cps[i]);
  return out + "...";
}

std::string format_share(double percent) {
  char buf[32];
  if (percent > 0 && percent < 0.1) std::snprintf(buf, sizeof buf, "<0.1%%");
  else std::snprintf(buf, sizeof buf, "%.1f%%", percent);
  return buf;
}

struct RegionLabel {
  int cls = 0;
  int area = 0;
  cv::Point anchor;  // the most interior point of the class's largest connected region
};

// For each class present: its largest 8-connected region and the point of that region farthest
// from its border (a centroid can fall outside a ring- or L-shaped region).
std::vector<RegionLabel> find_label_anchors(const cv::Mat& labels, int num_classes,
                                            const std::vector<std::int64_t>& class_pixels) {
  std::vector<RegionLabel> out;
  cv::Mat mask, cc, stats, centroids;
  for (int c = 0; c < num_classes; ++c) {
    if (c >= static_cast<int>(class_pixels.size()) || class_pixels[c] == 0) continue;
    cv::compare(labels, cv::Scalar(c), mask, cv::CMP_EQ);
    const int n = cv::connectedComponentsWithStats(mask, cc, stats, centroids, 8, CV_32S);
    int best = -1, best_area = 0;
    for (int i = 1; i < n; ++i) {
      const int a = stats.at<int>(i, cv::CC_STAT_AREA);
      if (a > best_area) best_area = a, best = i;
    }
    if (best < 0) continue;
    const cv::Rect box(stats.at<int>(best, cv::CC_STAT_LEFT), stats.at<int>(best, cv::CC_STAT_TOP),
                       stats.at<int>(best, cv::CC_STAT_WIDTH), stats.at<int>(best, cv::CC_STAT_HEIGHT));
    cv::Mat region = (cc(box) == best);
    cv::copyMakeBorder(region, region, 1, 1, 1, 1, cv::BORDER_CONSTANT, cv::Scalar(0));
    cv::Mat dist;
    cv::distanceTransform(region, dist, cv::DIST_L2, 3);
    cv::Point max_loc;
    cv::minMaxLoc(dist, nullptr, nullptr, nullptr, &max_loc);
    out.push_back({c, best_area, box.tl() + max_loc - cv::Point(1, 1)});
  }
  std::sort(out.begin(), out.end(), [](const RegionLabel& a, const RegionLabel& b) { return a.area > b.area; });
  return out;
}

}  // namespace

namespace {

std::array<double, 3> srgb_to_lab(const std::array<std::uint8_t, 3>& c) {
  auto lin = [](std::uint8_t v) {
    const double x = v / 255.0;
    return x <= 0.04045 ? x / 12.92 : std::pow((x + 0.055) / 1.055, 2.4);
  };
  const double r = lin(c[0]), g = lin(c[1]), b = lin(c[2]);
  const double X = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
  const double Y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  const double Z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
  auto f = [](double t) { return t > 216.0 / 24389.0 ? std::cbrt(t) : (24389.0 / 27.0 * t + 16.0) / 116.0; };
  const double fx = f(X), fy = f(Y), fz = f(Z);
  return {116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)};
}

double lab_distance(const std::array<double, 3>& a, const std::array<double, 3>& b) {
  return std::sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]));
}

}  // namespace

const std::vector<std::array<std::uint8_t, 3>>& distinct_colours() {
  static const std::vector<std::array<std::uint8_t, 3>> colours = [] {
    constexpr std::size_t kCount = 256;
    // Candidates: a 12-step RGB grid, without the very dark and very light colours (lightness
    // 35..85), against which neither the image under the tint nor the white labels would show.
    std::vector<std::array<std::uint8_t, 3>> cand;
    std::vector<std::array<double, 3>> lab;
    for (int r = 0; r < 12; ++r)
      for (int g = 0; g < 12; ++g)
        for (int b = 0; b < 12; ++b) {
          const std::array<std::uint8_t, 3> c{static_cast<std::uint8_t>(r * 255 / 11), static_cast<std::uint8_t>(g * 255 / 11),
                                              static_cast<std::uint8_t>(b * 255 / 11)};
          const auto l = srgb_to_lab(c);
          if (l[0] < 35.0 || l[0] > 85.0) continue;
          cand.push_back(c);
          lab.push_back(l);
        }
    // Start from a strong red; then each next colour is the candidate farthest from all chosen.
    std::vector<double> nearest(cand.size(), 1e300);
    std::vector<std::array<std::uint8_t, 3>> out;
    std::size_t pick = 0;
    double best = -1e300;
    const auto red = srgb_to_lab({230, 25, 40});
    for (std::size_t i = 0; i < cand.size(); ++i) {
      const double d = -lab_distance(lab[i], red);
      if (d > best) best = d, pick = i;
    }
    while (out.size() < kCount && out.size() < cand.size()) {
      out.push_back(cand[pick]);
      best = -1.0;
      std::size_t next = 0;
      for (std::size_t i = 0; i < cand.size(); ++i) {
        nearest[i] = std::min(nearest[i], lab_distance(lab[i], lab[pick]));
        if (nearest[i] > best) best = nearest[i], next = i;
      }
      pick = next;
    }
    return out;
  }();
  return colours;
}

double colour_difference(const std::array<std::uint8_t, 3>& a, const std::array<std::uint8_t, 3>& b) {
  return lab_distance(srgb_to_lab(a), srgb_to_lab(b));
}

void Palette::assign(const std::vector<int>& present) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int c : present)
    if (!slot_.count(c)) {
      const std::size_t next = slot_.size();
      slot_.emplace(c, next);
    }
}

std::array<std::uint8_t, 3> Palette::colour(int class_index) {
  assign({class_index});
  std::lock_guard<std::mutex> lock(mutex_);
  const auto& colours = distinct_colours();
  return colours[slot_.at(class_index) % colours.size()];
}

std::string ascii_label(const std::string& utf8) {
  std::string out;
  for (std::size_t i = 0; i < utf8.size(); ++i) {
    const auto c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      out.push_back(c >= 0x20 && c != 0x7F ? static_cast<char>(c) : ' ');
    } else if ((c & 0xC0) != 0x80) {  // the lead byte of a multi-byte character
      out.push_back('?');
    }
  }
  return out;
}

OverlayFonts OverlayFonts::defaults() {
  OverlayFonts f{OVSEG_OVERLAY_FONT, OVSEG_OVERLAY_CJK_FONT};
  if (const char* e = std::getenv("OVSEG_OVERLAY_FONT")) f.main = e;
  if (const char* e = std::getenv("OVSEG_OVERLAY_CJK_FONT")) f.cjk = e;
  return f;
}

bool overlay_truetype_available() {
#if defined(OVSEG_HAVE_FREETYPE)
  return true;
#else
  return false;
#endif
}

namespace {

// Pixels per class of the caller's list, counted from the label map.
std::vector<long long> class_pixel_counts(const Result& result) {
  std::vector<long long> pixels(result.classes.size(), 0);
  for (const std::uint16_t l : result.labels)
    if (l < pixels.size()) ++pixels[l];
  return pixels;
}

// The classes with pixels, most first (ties in class order).
std::vector<int> legend_order(const std::vector<long long>& pixels) {
  std::vector<int> present;
  for (int c = 0; c < static_cast<int>(pixels.size()); ++c)
    if (pixels[c] > 0) present.push_back(c);
  std::stable_sort(present.begin(), present.end(), [&](int a, int b) { return pixels[a] > pixels[b]; });
  return present;
}

}  // namespace

std::vector<int> legend_classes(const Result& result) { return legend_order(class_pixel_counts(result)); }

Image render_overlay(const Image& image, const Result& result, const OverlayFonts& fonts, Palette* palette) {
  const int w = image.width, h = image.height;
  if (w != result.width || h != result.height || result.labels.size() != static_cast<std::size_t>(w) * h)
    throw Error(ErrorCode::kRuntime, "overlay: image and label map sizes differ");
  const int num_classes = static_cast<int>(result.classes.size());
  const Painter painter(fonts);
  cv::Mat img(h, w, CV_8UC3, const_cast<std::uint8_t*>(image.rgb.data()));
  cv::Mat labels(h, w, CV_16UC1, const_cast<std::uint16_t*>(result.labels.data()));

  // The classes present, largest share first: the largest region gets the batch's next colour first.
  const std::vector<long long> pixels = class_pixel_counts(result);
  const std::vector<int> present = legend_order(pixels);
  Palette own;
  Palette& colours = palette ? *palette : own;
  colours.assign(present);
  std::vector<std::array<std::uint8_t, 3>> palette_rgb(num_classes, std::array<std::uint8_t, 3>{0, 0, 0});
  for (int c : present) palette_rgb[c] = colours.colour(c);

  // 1. Blend: kTintPercent class colour over the image, so that the image stays visible under it;
  // unlabelled pixels are dimmed instead.
  cv::Mat blend(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y) {
    const auto* src = img.ptr<std::uint8_t>(y);
    const auto* lab = labels.ptr<std::uint16_t>(y);
    auto* dst = blend.ptr<std::uint8_t>(y);
    for (int x = 0; x < w; ++x) {
      const int l = lab[x];
      for (int k = 0; k < 3; ++k) {
        const int v = src[3 * x + k];
        dst[3 * x + k] = static_cast<std::uint8_t>(
            l < num_classes ? ((100 - kTintPercent) * v + kTintPercent * palette_rgb[l][k] + 50) / 100 : (v * 3) / 8);
      }
    }
  }

  // 2. Region boundaries, 40% white, thicker on large images.
  const int short_side = std::min(w, h);
  {
    cv::Mat edge = cv::Mat::zeros(h, w, CV_8U);
    for (int y = 0; y < h; ++y) {
      const auto* lab = labels.ptr<std::uint16_t>(y);
      const auto* below = y + 1 < h ? labels.ptr<std::uint16_t>(y + 1) : nullptr;
      auto* e = edge.ptr<std::uint8_t>(y);
      for (int x = 0; x < w; ++x)
        if ((x + 1 < w && lab[x] != lab[x + 1]) || (below && lab[x] != below[x])) e[x] = 255;
    }
    const int t = std::max(1, short_side / 500);
    if (t > 1) cv::dilate(edge, edge, cv::getStructuringElement(cv::MORPH_RECT, cv::Size(t, t)));
    for (int y = 0; y < h; ++y) {
      const auto* e = edge.ptr<std::uint8_t>(y);
      auto* dst = blend.ptr<std::uint8_t>(y);
      for (int x = 0; x < w; ++x)
        if (e[x])
          for (int k = 0; k < 3; ++k) dst[3 * x + k] = static_cast<std::uint8_t>((dst[3 * x + k] * 3 + 255 * 2) / 5);
    }
  }

  // 3. Class names on the regions: the primary name (before the first comma, "road, route" →
  // "road") at the most interior point of the class's largest region, skipping regions too small
  // for the text and positions that would cover a name already written.
  const double scale = std::clamp(short_side / 700.0, 0.4, 3.0);
  const int thick = std::max(1, static_cast<int>(std::lround(scale * 1.4)));
  std::vector<cv::Rect> placed;
  for (const auto& rl : find_label_anchors(labels, num_classes, result.class_pixels)) {
    const std::string name = truncate(painter.label(primary_name(result.classes[rl.cls])), 24);
    int baseline = 0;
    const cv::Size ts = painter.size(name, scale, thick + 2, &baseline);
    if (rl.area < ts.area() / 2) continue;
    cv::Rect chosen;
    for (const int dy : {0, 1, -1, 2, -2}) {
      cv::Point org(rl.anchor.x - ts.width / 2, rl.anchor.y + ts.height / 2 + dy * (ts.height + baseline + 2));
      org.x = std::clamp(org.x, 1, std::max(1, w - ts.width - 1));
      org.y = std::clamp(org.y, ts.height + 1, std::max(ts.height + 1, h - baseline - 1));
      const cv::Rect r(org.x - 2, org.y - ts.height - 2, ts.width + 4, ts.height + baseline + 4);
      if (std::none_of(placed.begin(), placed.end(), [&](const cv::Rect& p) { return (p & r).area() > 0; })) {
        chosen = r;
        break;
      }
    }
    if (chosen.area() == 0) continue;
    placed.push_back(chosen);
    painter.outlined(blend, name, cv::Point(chosen.x + 2, chosen.y + 2 + ts.height), scale, thick);
  }

  // 4. Legend panel: one row per present class (largest share first), then "unlabeled".
  struct Entry {
    std::string text;
    std::string share;
    cv::Scalar colour;
    bool hatched;
  };
  const double total = static_cast<double>(w) * h;
  std::vector<Entry> entries;
  for (int c : present)
    entries.push_back({std::to_string(c) + " " + truncate(painter.label(result.classes[c]), 36),
                       format_share(100.0 * static_cast<double>(pixels[c]) / total), rgb_scalar(palette_rgb[c]), false});
  if (result.unlabeled_pixels > 0)
    entries.push_back({"unlabeled", format_share(100.0 * result.unlabeled_pixels / total), cv::Scalar(0, 0, 0), true});

  const double ls = std::clamp(h / 900.0, 0.45, 1.5);
  const int lthick = std::max(1, static_cast<int>(std::lround(ls * 1.3)));
  int base = 0;
  const int text_h = painter.size("Ag", ls, lthick, &base).height;
  const int row_h = text_h * 2 + base;
  const int margin = std::max(6, text_h);
  const int swatch = text_h + base + 2;
  int name_w = 0, share_w = 0;
  for (const auto& e : entries) {
    name_w = std::max(name_w, painter.size(e.text, ls, lthick, &base).width);
    share_w = std::max(share_w, painter.size(e.share, ls, lthick, &base).width);
  }
  const std::string title = std::to_string(present.size()) + " of " + std::to_string(num_classes) + " classes";
  const int title_w = painter.size(title, ls, lthick, &base).width;
  const int col_w = std::max(swatch + margin + name_w + 2 * margin + share_w, title_w) + margin;
  const int header_h = margin + row_h;
  const int min_rows = std::min<int>(static_cast<int>(entries.size()), 6);
  const int canvas_h = std::max(h, header_h + std::max(1, min_rows) * row_h + margin);
  const int rows_per_col = std::max(1, (canvas_h - header_h - margin) / row_h);
  const int cols = std::max(1, static_cast<int>((entries.size() + rows_per_col - 1) / rows_per_col));
  const int panel_w = cols * col_w + margin;

  cv::Mat canvas(canvas_h, w + panel_w, CV_8UC3, cv::Scalar(32, 32, 32));
  blend.copyTo(canvas(cv::Rect(0, 0, w, h)));
  const int px = w + margin;
  painter.put(canvas, title, cv::Point(px, margin + text_h), ls, cv::Scalar(230, 230, 230), lthick);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const int col = static_cast<int>(i) / rows_per_col, row = static_cast<int>(i) % rows_per_col;
    const int x = px + col * col_w;
    const int y = header_h + row * row_h;  // top of the row
    const cv::Rect sw(x, y + (row_h - swatch) / 2, swatch, swatch);
    cv::rectangle(canvas, sw, entries[i].colour, cv::FILLED);
    if (entries[i].hatched) cv::line(canvas, sw.tl(), sw.br(), cv::Scalar(200, 200, 200), 1, cv::LINE_AA);
    cv::rectangle(canvas, sw, cv::Scalar(200, 200, 200), 1);
    const int ty = y + (row_h + text_h) / 2;
    painter.put(canvas, entries[i].text, cv::Point(x + swatch + margin, ty), ls, cv::Scalar(240, 240, 240), lthick);
    const int sw_w = painter.size(entries[i].share, ls, lthick, &base).width;
    painter.put(canvas, entries[i].share, cv::Point(x + col_w - margin - sw_w, ty), ls, cv::Scalar(200, 200, 200), lthick);
  }

  Image out;
  out.width = canvas.cols;
  out.height = canvas.rows;
  out.rgb.assign(canvas.data, canvas.data + canvas.total() * 3);
  return out;
}

}  // namespace ovseg::cli
