// Overlay colours (tools/ovseg/overlay.cpp): the classes present in an image get clearly distinct
// colours whatever their indices, a class keeps its colour across the images of one batch, and
// the image stays visible under the tint.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "overlay.hpp"

namespace {

using ovseg::cli::colour_difference;
using ovseg::cli::distinct_colours;
using ovseg::cli::OverlayFonts;
using ovseg::cli::Palette;
using ovseg::cli::render_overlay;
using Rgb = std::array<std::uint8_t, 3>;

constexpr int kW = 120, kH = 90;

// An image of one colour, split into vertical bands, band i labelled labels[i], from a list of
// `num_classes` names.
struct Scene {
  ovseg::Image image;
  ovseg::Result result;
};

Scene scene(const std::vector<int>& labels, int num_classes, Rgb colour = {150, 40, 30}) {
  Scene s;
  s.image.width = s.result.width = kW;
  s.image.height = s.result.height = kH;
  s.image.rgb.resize(static_cast<std::size_t>(kW) * kH * 3);
  for (std::size_t i = 0; i < s.image.rgb.size(); ++i) s.image.rgb[i] = colour[i % 3];
  for (int c = 0; c < num_classes; ++c) s.result.classes.push_back("class " + std::to_string(c));
  s.result.class_pixels.assign(num_classes, 0);
  s.result.labels.resize(static_cast<std::size_t>(kW) * kH);
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) {
      const int l = labels[static_cast<std::size_t>(x) * labels.size() / kW];
      s.result.labels[static_cast<std::size_t>(y) * kW + x] = static_cast<std::uint16_t>(l);
      ++s.result.class_pixels[l];
    }
  return s;
}

// The colour a band's centre pixel (away from boundaries and names: the top rows) got.
Rgb band_pixel(const ovseg::Image& overlay, std::size_t band, std::size_t bands) {
  const int x = static_cast<int>((2 * band + 1) * kW / (2 * bands));
  const std::size_t i = (static_cast<std::size_t>(2) * overlay.width + x) * 3;
  return {overlay.rgb[i], overlay.rgb[i + 1], overlay.rgb[i + 2]};
}

TEST(OverlayColours, FirstColoursOfTheSequenceAreFarApart) {
  const auto& colours = distinct_colours();
  ASSERT_GE(colours.size(), 64u);
  const std::set<Rgb> unique(colours.begin(), colours.end());
  EXPECT_EQ(unique.size(), colours.size());
  // The first is the candidate nearest a strong red.
  EXPECT_LT(colour_difference(colours[0], Rgb{230, 25, 40}), 12.0);
  // Any 8 classes present in one image: pairwise CIE76 difference of at least 40 (two greens
  // that look alike are < 10 apart); any 16: at least 25.
  auto min_pairwise = [&](std::size_t k) {
    double m = 1e9;
    for (std::size_t i = 0; i < k; ++i)
      for (std::size_t j = i + 1; j < k; ++j) m = std::min(m, colour_difference(colours[i], colours[j]));
    return m;
  };
  EXPECT_GE(min_pairwise(8), 40.0);
  EXPECT_GE(min_pairwise(16), 25.0);
}

TEST(OverlayColours, ClassesPresentAreDistinctWhateverTheirIndices) {
  // The main job's case: "brick wall" (2) and "striped green square" (36) of an 80-name list
  // used to get two nearly identical greens. Any two, three or five indices now get the first
  // colours of the sequence.
  for (const std::vector<int>& present : {std::vector<int>{2, 36}, {2, 36, 71}, {0, 1, 2, 3, 4}, {79, 5, 40, 12, 66}}) {
    Palette palette;
    palette.assign(present);
    double m = 1e9;
    for (std::size_t i = 0; i < present.size(); ++i)
      for (std::size_t j = i + 1; j < present.size(); ++j)
        m = std::min(m, colour_difference(palette.colour(present[i]), palette.colour(present[j])));
    EXPECT_GE(m, 40.0) << present.size() << " classes";
  }
}

TEST(OverlayColours, LegendSwatchesOfOneImageAreDistinct) {
  // Rendered: bands of classes 2 and 36 of 80 get clearly different tints over the same image.
  const Scene s = scene({2, 36}, 80, {110, 110, 110});
  const auto out = render_overlay(s.image, s.result, OverlayFonts::ascii());
  const Rgb a = band_pixel(out, 0, 2), b = band_pixel(out, 1, 2);
  // 40 % tint: the tints' difference is 0.4 of the colours' in RGB; still far apart.
  EXPECT_GE(colour_difference(a, b), 15.0);
}

TEST(OverlayColours, AClassKeepsItsColourAcrossTheImagesOfABatch) {
  Palette batch;
  const Scene first = scene({7, 3}, 20), second = scene({3, 11, 7}, 20);
  const auto o1 = render_overlay(first.image, first.result, OverlayFonts::ascii(), &batch);
  const auto o2 = render_overlay(second.image, second.result, OverlayFonts::ascii(), &batch);
  EXPECT_EQ(band_pixel(o1, 1, 2), band_pixel(o2, 0, 3));  // class 3
  EXPECT_EQ(band_pixel(o1, 0, 2), band_pixel(o2, 2, 3));  // class 7
  // The new class 11 gets a colour of its own.
  EXPECT_NE(band_pixel(o2, 1, 3), band_pixel(o2, 0, 3));
  EXPECT_NE(band_pixel(o2, 1, 3), band_pixel(o2, 2, 3));
  // Colours follow the order classes appear in, not their indices.
  Palette other;
  other.assign({50});
  EXPECT_EQ(other.colour(50), distinct_colours()[0]);
  EXPECT_EQ(batch.colour(3), distinct_colours()[0]);
  EXPECT_EQ(batch.colour(11), distinct_colours()[2]);
}

TEST(OverlayColours, TheImageStaysVisibleUnderTheTint) {
  // A red brick-like image under any class colour: each labelled pixel is 60 % image, so every
  // channel stays within the tint's share of the image's value.
  const Rgb brick{150, 40, 30};
  const Scene s = scene({0, 1, 2, 3}, 4, brick);
  const auto out = render_overlay(s.image, s.result, OverlayFonts::ascii());
  for (std::size_t band = 0; band < 4; ++band) {
    const Rgb p = band_pixel(out, band, 4);
    for (int k = 0; k < 3; ++k) {
      const int expected_min = brick[k] * (100 - ovseg::cli::kTintPercent) / 100;
      EXPECT_GE(p[k], expected_min - 1) << "band " << band << " channel " << k;
      EXPECT_LE(p[k], expected_min + 255 * ovseg::cli::kTintPercent / 100 + 1) << "band " << band << " channel " << k;
    }
  }
}

}  // namespace
