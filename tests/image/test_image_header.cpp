// Image sizes from the header (the decompression-bomb check: too many pixels are refused before decoding).
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "image/image_ops.hpp"

namespace ovseg::detail {
namespace {

TEST(ImageHeader, EveryHeaderFormatGivesTheEncodedSize) {
  const cv::Mat img(37, 53, CV_8UC3, cv::Scalar(10, 20, 30));
  for (const char* ext : {".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm", ".ras", ".hdr", ".pfm"}) {
    std::vector<std::uint8_t> buf;
    cv::Mat src = img;
    if (std::string(ext) == ".pgm") cv::extractChannel(img, src, 0);
    if (std::string(ext) == ".hdr" || std::string(ext) == ".pfm") img.convertTo(src, CV_32FC3);
    ASSERT_TRUE(cv::imencode(ext, src, buf)) << ext;
    HeaderSize s;
    ASSERT_TRUE(image_header_size(buf.data(), buf.size(), &s)) << ext;
    EXPECT_EQ(s.width, 53) << ext;
    EXPECT_EQ(s.height, 37) << ext;
  }
}

TEST(ImageHeader, UnknownOrCutHeadersAreNotGuessed) {
  HeaderSize s;
  const std::uint8_t junk[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  EXPECT_FALSE(image_header_size(junk, sizeof junk, &s));
  const std::uint8_t png_cut[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H'};
  EXPECT_FALSE(image_header_size(png_cut, sizeof png_cut, &s));
}

TEST(ImageHeader, PixelLimitMessageSaysByHowMuch) {
  EXPECT_EQ(check_pixel_limit(100, 100, 10000), "");
  EXPECT_EQ(check_pixel_limit(100000, 100000, 0), "");  // 0 = no limit
  EXPECT_EQ(check_pixel_limit(30000, 30000, 178956970),
            "image too large: 30000x30000 = 900000000 pixels, 5.03x the limit of 178956970 (721043030 pixels over; "
            "raise it with --max-pixels, 0 = no limit)");
}

TEST(ImageHeader, DecodeRefusesABombBeforeDecoding) {
  // A PNG header declaring 100000 x 100000 pixels, followed by nothing decodable: the limit is
  // reported (not "corrupt data"), so the decoder was never asked.
  std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                   0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0, 8, 2, 0, 0, 0, 0, 0, 0, 0};
  try {
    decode_image(png.data(), png.size(), "bomb.png");
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadImage);
    EXPECT_EQ(std::string(e.what()).rfind("bomb.png: image too large: 100000x100000 = 10000000000 pixels", 0), 0u)
        << e.what();
  }
}

}  // namespace
}  // namespace ovseg::detail
