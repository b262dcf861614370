// The picture `ovseg segment --overlay` writes: the image blended with one colour per class,
// region boundaries, class names written on the regions, and a legend panel on the right that
// lists each class present with its colour and its share of the image.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "ovseg/ovseg.hpp"

namespace ovseg::cli {

// A stable colour for class `index` (golden-ratio hue steps, so neighbouring indices differ
// strongly and a class keeps its colour whatever the list's length). RGB.
std::array<std::uint8_t, 3> class_colour(int index);

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

// Renders the overlay. `image` is the decoded RGB input at the result's size. The output is
// image.height tall (taller only when the legend needs it) and wider than the image by the
// legend panel; the image occupies its top-left image.width × image.height corner.
Image render_overlay(const Image& image, const Result& result, const OverlayFonts& fonts = OverlayFonts::defaults());

}  // namespace ovseg::cli
