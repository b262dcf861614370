// Overlay text (tools/ovseg/overlay.cpp): class names that are not ASCII are drawn with their own
// glyphs when OpenCV's freetype module and the fonts are there, and the ASCII rendering ('?' for
// other characters) is what a missing font falls back to.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "overlay.hpp"

namespace {

using ovseg::cli::OverlayFonts;
using ovseg::cli::render_overlay;

constexpr int kW = 240, kH = 160;

// A grey photo, the left half labelled class 0 and the right half class 1.
ovseg::Image render(const std::vector<std::string>& names, const OverlayFonts& fonts) {
  ovseg::Image img;
  img.width = kW;
  img.height = kH;
  img.rgb.assign(static_cast<std::size_t>(kW) * kH * 3, 110);
  ovseg::Result r;
  r.width = kW;
  r.height = kH;
  r.classes = names;
  r.labels.resize(static_cast<std::size_t>(kW) * kH);
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) r.labels[static_cast<std::size_t>(y) * kW + x] = x < kW / 2 ? 0 : 1;
  r.class_pixels = {kW / 2 * kH, kW / 2 * kH};
  return render_overlay(img, r, fonts);
}

bool same(const ovseg::Image& a, const ovseg::Image& b) {
  return a.width == b.width && a.height == b.height && a.rgb == b.rgb;
}

// Pixels of the region labels (the image part, where both renderings have the same size) that differ.
long differing_image_pixels(const ovseg::Image& a, const ovseg::Image& b) {
  long n = 0;
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) {
      const std::size_t ia = (static_cast<std::size_t>(y) * a.width + x) * 3, ib = (static_cast<std::size_t>(y) * b.width + x) * 3;
      if (a.rgb[ia] != b.rgb[ib] || a.rgb[ia + 1] != b.rgb[ib + 1] || a.rgb[ia + 2] != b.rgb[ib + 2]) ++n;
    }
  return n;
}

const OverlayFonts kTrueType{OVSEG_TEST_OVERLAY_FONT, OVSEG_TEST_OVERLAY_CJK_FONT};

void require_truetype() {
  if (!ovseg::cli::overlay_truetype_available())
    GTEST_SKIP() << "this build has no OpenCV freetype module (Debian libopencv-contrib-dev): overlays are ASCII";
  for (const std::string& f : {kTrueType.main, kTrueType.cjk})
    if (!std::filesystem::is_regular_file(f))
      GTEST_SKIP() << "font not installed: " << f << " (Debian fonts-dejavu-core, fonts-droid-fallback)";
}

TEST(OverlayText, NonAsciiNamesAreDrawnWithTheirOwnGlyphs) {
  require_truetype();
  const auto named = render({"café", "街道"}, kTrueType);
  // Not the '?' rendering: the same engine and font drawing what the ASCII fallback would draw.
  const auto question = render({"caf?", "??"}, kTrueType);
  EXPECT_GT(differing_image_pixels(named, question), 20);
  EXPECT_FALSE(same(named, question));
  // The accent is drawn: "café" differs from "cafe" on the region label.
  EXPECT_GT(differing_image_pixels(named, render({"cafe", "街道"}, kTrueType)), 5);
  // Two different CJK glyphs, not two equal boxes of a font without them: swapping the
  // characters changes the picture.
  EXPECT_GT(differing_image_pixels(named, render({"café", "道街"}, kTrueType)), 20);
  // And there are glyph pixels on the right region's label: white text over the blend (whose
  // brightest channel is below 200 here).
  long bright = 0;
  for (int y = 0; y < kH; ++y)
    for (int x = kW / 2; x < kW; ++x) {
      const std::size_t i = (static_cast<std::size_t>(y) * named.width + x) * 3;
      if (named.rgb[i] > 200 && named.rgb[i + 1] > 200 && named.rgb[i + 2] > 200) ++bright;
    }
  EXPECT_GT(bright, 5);
}

TEST(OverlayText, MissingCjkFontDrawsQuestionMarks) {
  require_truetype();
  const OverlayFonts no_cjk{kTrueType.main, "/nonexistent/cjk-font.ttf"};
  EXPECT_TRUE(same(render({"café", "街道"}, no_cjk), render({"café", "??"}, no_cjk)));
  EXPECT_FALSE(same(render({"café", "街道"}, no_cjk), render({"caf?", "??"}, no_cjk)));
}

TEST(OverlayText, MissingFontFallsBackToAscii) {
  const auto ascii = render({"café", "街道"}, OverlayFonts::ascii());
  EXPECT_TRUE(same(ascii, render({"caf?", "??"}, OverlayFonts::ascii())));
  EXPECT_TRUE(same(ascii, render({"café", "街道"}, OverlayFonts{"/nonexistent/font.ttf", kTrueType.cjk})));
  if (ovseg::cli::overlay_truetype_available() && std::filesystem::is_regular_file(kTrueType.main)) {
    EXPECT_FALSE(same(ascii, render({"café", "街道"}, kTrueType)));
  }
}

TEST(OverlayText, MalformedUtf8IsDrawnAsReplacementCharacters) {
  // A truncated sequence, a stray continuation byte, an overlong '/' and a UTF-16 surrogate: each
  // bad byte is one U+FFFD, the rest of the name is kept.
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_TRUE(same(render({"caf\xC3", "\x80x"}, kTrueType), render({"caf" + r, r + "x"}, kTrueType)));
  EXPECT_TRUE(same(render({"\xC0\xAFy", "\xED\xA0\x80z"}, kTrueType), render({r + r + "y", r + r + r + "z"}, kTrueType)));
  EXPECT_FALSE(same(render({"caf\xC3", "\x80x"}, kTrueType), render({"caf", "x"}, kTrueType)));
}

TEST(OverlayText, LongNamesAreCutBetweenCharacters) {
  // 30 two-byte characters: cutting bytes at 24 would split one; the result must stay valid.
  std::string name;
  for (int i = 0; i < 30; ++i) name += "é";
  const auto img = render({name, "街道街道街道街道街道街道街道街道街道街道街道街道"}, OverlayFonts::defaults());
  EXPECT_GT(img.width, kW);
}

}  // namespace
