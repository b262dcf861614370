// to_rgb: every PixelFormat, with and without row padding.
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "ovseg/ovseg.hpp"

namespace ovseg {
namespace {

// A w×h image whose pixel (x, y) has colour (r, g, b) = (x*10+1, y*20+2, x+y+3), laid out in
// `format` with `pad` extra bytes per row (filled with 0xEE so that reading them shows).
std::vector<std::uint8_t> make_buffer(int w, int h, PixelFormat format, int pad, std::size_t* stride) {
  const int ch = format == PixelFormat::kGray ? 1 : (format == PixelFormat::kRgba || format == PixelFormat::kBgra) ? 4 : 3;
  *stride = static_cast<std::size_t>(w * ch + pad);
  std::vector<std::uint8_t> buf(*stride * h, 0xEE);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const std::uint8_t r = static_cast<std::uint8_t>(x * 10 + 1), g = static_cast<std::uint8_t>(y * 20 + 2),
                         b = static_cast<std::uint8_t>(x + y + 3);
      std::uint8_t* p = &buf[y * *stride + x * ch];
      switch (format) {
        case PixelFormat::kRgb: p[0] = r; p[1] = g; p[2] = b; break;
        case PixelFormat::kBgr: p[0] = b; p[1] = g; p[2] = r; break;
        case PixelFormat::kRgba: p[0] = r; p[1] = g; p[2] = b; p[3] = static_cast<std::uint8_t>(x * 30); break;
        case PixelFormat::kBgra: p[0] = b; p[1] = g; p[2] = r; p[3] = static_cast<std::uint8_t>(y * 30); break;
        case PixelFormat::kGray: p[0] = r; break;
      }
    }
  }
  return buf;
}

class ToRgb : public ::testing::TestWithParam<std::tuple<PixelFormat, int>> {};

TEST_P(ToRgb, ConvertsEveryPixel) {
  const auto [format, pad] = GetParam();
  const int w = 7, h = 5;
  std::size_t stride = 0;
  const std::vector<std::uint8_t> buf = make_buffer(w, h, format, pad, &stride);
  const ImageView view{buf.data(), w, h, format, pad == 0 ? 0 : stride};
  const Image out = to_rgb(view);
  ASSERT_EQ(out.width, w);
  ASSERT_EQ(out.height, h);
  ASSERT_EQ(out.rgb.size(), static_cast<std::size_t>(w * h * 3));
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const std::uint8_t* p = &out.rgb[(y * w + x) * 3];
      const std::uint8_t r = static_cast<std::uint8_t>(x * 10 + 1);
      if (format == PixelFormat::kGray) {
        EXPECT_EQ(p[0], r);
        EXPECT_EQ(p[1], r);
        EXPECT_EQ(p[2], r);
      } else {
        EXPECT_EQ(p[0], r) << x << "," << y;
        EXPECT_EQ(p[1], y * 20 + 2) << x << "," << y;
        EXPECT_EQ(p[2], x + y + 3) << x << "," << y;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, ToRgb,
                         ::testing::Combine(::testing::Values(PixelFormat::kRgb, PixelFormat::kBgr, PixelFormat::kRgba,
                                                              PixelFormat::kBgra, PixelFormat::kGray),
                                            ::testing::Values(0, 5)));

TEST(ToRgbErrors, RejectsBadViews) {
  std::vector<std::uint8_t> buf(100, 0);
  auto code_of = [](const ImageView& v) {
    try {
      to_rgb(v);
    } catch (const Error& e) {
      return static_cast<int>(e.code());
    }
    return -1;
  };
  EXPECT_EQ(code_of(ImageView{nullptr, 2, 2, PixelFormat::kRgb, 0}), static_cast<int>(ErrorCode::kInvalidArgument));
  EXPECT_EQ(code_of(ImageView{buf.data(), 0, 2, PixelFormat::kRgb, 0}), static_cast<int>(ErrorCode::kInvalidArgument));
  EXPECT_EQ(code_of(ImageView{buf.data(), 4, 2, PixelFormat::kRgb, 11}), static_cast<int>(ErrorCode::kInvalidArgument));
  EXPECT_EQ(code_of(ImageView{buf.data(), 4, 2, PixelFormat::kRgb, 12}), -1);
  EXPECT_EQ(code_of(ImageView{buf.data(), 2, 2, static_cast<PixelFormat>(42), 0}), static_cast<int>(ErrorCode::kBadImage));
}

TEST(ToRgbMisc, ImageViewRoundTrip) {
  Image img;
  img.width = 3;
  img.height = 2;
  img.rgb = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
  const Image copy = to_rgb(img.view());
  EXPECT_EQ(copy.rgb, img.rgb);
  EXPECT_EQ(copy.width, 3);
  EXPECT_EQ(copy.height, 2);
}

}  // namespace
}  // namespace ovseg
