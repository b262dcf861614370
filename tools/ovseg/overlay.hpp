// The picture `ovseg segment --overlay` writes: the image blended with one colour per class,
// region boundaries, class names written on the regions, and a legend panel on the right that
// lists each class present with its colour and its share of the image.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "ovseg/ovseg.hpp"

namespace ovseg::cli {

// The overlay colours, RGB: a fixed sequence in which each colour is the one (of a grid of
// mid-lightness RGB colours) farthest in CIELAB from all colours before it (greedy max-min), so
// that any first k of them are as distinct as k colours can be. 256 entries.
const std::vector<std::array<std::uint8_t, 3>>& distinct_colours();

// CIE76 colour difference (Euclidean distance in CIELAB, D65) of two sRGB colours.
double colour_difference(const std::array<std::uint8_t, 3>& a, const std::array<std::uint8_t, 3>& b);

// The colours of one batch of overlays (one class list). A class gets a colour when it first
// appears in the batch, the next one of distinct_colours(), and keeps it for the rest of the
// batch; so the classes present in an image are clearly apart whatever their indices, and a class
// looks the same in every image of the batch. Thread-safe.
class Palette {
 public:
  // Gives colours to the classes of `present` that have none yet, in that order.
  void assign(const std::vector<int>& present);
  // The colour of `class_index` (given now if it has none yet).
  std::array<std::uint8_t, 3> colour(int class_index);

 private:
  std::mutex mutex_;
  std::map<int, std::size_t> slot_;
};

// Hershey fonts only draw ASCII: other characters become '?' (the JSON keeps the exact names).
std::string ascii_label(const std::string& utf8);

// The TrueType fonts that overlays write text with (OpenCV's freetype module): `main` for all
// text, `cjk` for runs of CJK characters (Han, kana, Hangul), which `main` (DejaVu Sans) lacks.
// An empty or missing `main` file, or a build without the freetype module, draws with OpenCV's
// Hershey font in ASCII ('?' for other characters); a missing `cjk` file draws CJK as '?'.
struct OverlayFonts {
  std::string main;
  std::string cjk;
  // The build's defaults (CMake OVSEG_OVERLAY_FONT, OVSEG_OVERLAY_CJK_FONT), overridden by the
  // environment variables of the same names (empty = none).
  static OverlayFonts defaults();
  static OverlayFonts ascii() { return {}; }
};

// Whether this build can draw TrueType text at all (OpenCV's freetype module was found).
bool overlay_truetype_available();

// The classes present in a result, largest pixel share first (ties in class order): the order in
// which the overlay's legend lists them and gives them colours.
std::vector<int> legend_classes(const Result& result);

// Renders the overlay. `image` is the decoded RGB input at the result's size. The output is
// image.height tall (taller only when the legend needs it) and wider than the image by the
// legend panel; the image occupies its top-left image.width × image.height corner. `palette`:
// the batch's colours (null: this image's own, as for a batch of one).
Image render_overlay(const Image& image, const Result& result, const OverlayFonts& fonts = OverlayFonts::defaults(),
                     Palette* palette = nullptr);

// The share of the class colour in a labelled pixel of the overlay (the rest is the image).
inline constexpr int kTintPercent = 40;

}  // namespace ovseg::cli
