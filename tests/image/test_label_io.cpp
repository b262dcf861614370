// Label maps (8-bit PNG, 16-bit PNG/TIFF) and RGB image files: round trips, cross-checks with
// Pillow, atomic writes and errors.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "image/image_ops.hpp"
#include "image_test_util.hpp"

namespace ovseg {
namespace {

using detail::LabelMap;
using detail::read_label_map;
using detail::write_label_map;
using test::TempDir;

LabelMap make_map(int w, int h, int bit_depth, std::uint32_t seed) {
  LabelMap m;
  m.width = w;
  m.height = h;
  m.bit_depth = bit_depth;
  std::mt19937 rng(seed);
  const std::uint32_t limit = bit_depth == 8 ? 256 : 65536;
  for (int i = 0; i < w * h; ++i) m.values.push_back(static_cast<std::uint16_t>(rng() % limit));
  // The extremes are always present.
  m.values[0] = 0;
  m.values[1] = static_cast<std::uint16_t>(limit - 1);
  return m;
}

// A 256×256 16-bit map holding every value 0..65535 once.
LabelMap every_u16_value() {
  LabelMap m;
  m.width = 256;
  m.height = 256;
  m.bit_depth = 16;
  m.values.resize(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) m.values[i] = static_cast<std::uint16_t>((i * 40503u) & 0xFFFF);
  return m;
}

std::vector<std::string> directory_entries(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void expect_same(const LabelMap& a, const LabelMap& b) {
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  EXPECT_EQ(a.bit_depth, b.bit_depth);
  EXPECT_TRUE(a.values == b.values);
}

TEST(LabelMapIo, EightBitPngRoundTrip) {
  TempDir dir("labels");
  const LabelMap m = make_map(61, 37, 8, 1);
  write_label_map(dir.file("a.png"), m);
  expect_same(read_label_map(dir.file("a.png")), m);
}

TEST(LabelMapIo, SixteenBitPngRoundTripAllValues) {
  TempDir dir("labels");
  const LabelMap m = every_u16_value();
  write_label_map(dir.file("a.png"), m);
  expect_same(read_label_map(dir.file("a.png")), m);
}

TEST(LabelMapIo, SixteenBitTiffRoundTripAllValues) {
  TempDir dir("labels");
  const LabelMap m = every_u16_value();
  for (const char* name : {"a.tif", "b.TIFF"}) {
    write_label_map(dir.file(name), m);
    expect_same(read_label_map(dir.file(name)), m);
  }
}

TEST(LabelMapIo, AtomicWriteLeavesOnlyTheTarget) {
  TempDir dir("labels");
  const LabelMap a = make_map(20, 10, 8, 2);
  const LabelMap b = make_map(20, 10, 16, 3);
  write_label_map(dir.file("out.png"), a);
  EXPECT_EQ(directory_entries(dir.path()), std::vector<std::string>{"out.png"});
  write_label_map(dir.file("out.png"), b);  // overwrite in place
  EXPECT_EQ(directory_entries(dir.path()), std::vector<std::string>{"out.png"});
  expect_same(read_label_map(dir.file("out.png")), b);
  write_label_map(dir.file("sub/dir/out.tif"), b);  // parent directories are created
  EXPECT_EQ(directory_entries(dir.path() / "sub" / "dir"), std::vector<std::string>{"out.tif"});
}

TEST(LabelMapIo, WriteErrors) {
  TempDir dir("labels");
  LabelMap m = make_map(4, 4, 8, 4);
  auto code_of = [&](const std::string& path, const LabelMap& map) {
    try {
      write_label_map(path, map);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      return static_cast<int>(e.code());
    }
    return -1;
  };
  const int invalid = static_cast<int>(ErrorCode::kInvalidArgument);
  LabelMap too_big = m;
  too_big.values[3] = 256;
  EXPECT_EQ(code_of(dir.file("x.png"), too_big), invalid);  // does not fit 8 bits
  EXPECT_EQ(code_of(dir.file("x.jpg"), m), invalid);        // lossy / unknown extension
  LabelMap bad_depth = m;
  bad_depth.bit_depth = 12;
  EXPECT_EQ(code_of(dir.file("x.png"), bad_depth), invalid);
  LabelMap short_values = m;
  short_values.values.pop_back();
  EXPECT_EQ(code_of(dir.file("x.png"), short_values), invalid);
  EXPECT_TRUE(directory_entries(dir.path()).empty());
}

TEST(LabelMapIo, ReadErrors) {
  TempDir dir("labels");
  auto code_of = [&](const std::string& path) {
    try {
      read_label_map(path);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      return static_cast<int>(e.code());
    }
    return -1;
  };
  EXPECT_EQ(code_of(dir.file("missing.png")), static_cast<int>(ErrorCode::kIo));
  test::spit(dir.file("junk.png"), {1, 2, 3, 4, 5, 6, 7, 8, 9});
  EXPECT_EQ(code_of(dir.file("junk.png")), static_cast<int>(ErrorCode::kBadData));
  test::spit(dir.file("empty.png"), {});
  EXPECT_EQ(code_of(dir.file("empty.png")), static_cast<int>(ErrorCode::kBadData));
  Image rgb;
  rgb.width = 3;
  rgb.height = 2;
  rgb.rgb.assign(18, 7);
  write_image(dir.file("rgb.png"), rgb);
  EXPECT_EQ(code_of(dir.file("rgb.png")), static_cast<int>(ErrorCode::kBadData));  // 3 channels
}

// Files written here are what Pillow (the reference's reader) sees, and Pillow-written label
// maps read back unchanged.
TEST(LabelMapIo, InteroperatesWithPillow) {
  OVSEG_REQUIRE_PILLOW();
  TempDir dir("labels_pil");
  const LabelMap m8 = make_map(45, 33, 8, 5);
  const LabelMap m16 = every_u16_value();
  write_label_map(dir.file("ours8.png"), m8);
  write_label_map(dir.file("ours16.png"), m16);
  write_label_map(dir.file("ours16.tif"), m16);
  {
    std::ofstream out(dir.file("m8.txt"));
    for (auto v : m8.values) out << v << '\n';
    std::ofstream out16(dir.file("m16.txt"));
    for (auto v : m16.values) out16 << v << '\n';
  }
  static const char* kScript = R"PY(
import os, struct, sys
from PIL import Image
d = sys.argv[1]
def load(name):
    with open(os.path.join(d, name)) as f:
        return [int(x) for x in f.read().split()]
m8, m16 = load("m8.txt"), load("m16.txt")
def values(im):
    if im.mode in ("L", "P"):
        return list(im.getdata())
    if im.mode in ("I;16", "I;16B", "I;16L"):
        return list(struct.unpack("<%dH" % (im.size[0] * im.size[1]), im.tobytes("raw", "I;16")))
    if im.mode == "I":
        return list(im.getdata())
    raise SystemExit("unexpected mode " + im.mode)
checks = [("ours8.png", (45, 33), m8), ("ours16.png", (256, 256), m16), ("ours16.tif", (256, 256), m16)]
for name, size, expected in checks:
    im = Image.open(os.path.join(d, name))
    if im.size != size or values(im) != expected:
        raise SystemExit("%s: Pillow reads different values (mode %s)" % (name, im.mode))
# Pillow-written maps for the reverse direction.
Image.frombytes("L", (45, 33), bytes(m8)).save(os.path.join(d, "pil8.png"))
im16 = Image.frombytes("I;16", (256, 256), struct.pack("<65536H", *m16))
im16.save(os.path.join(d, "pil16.tif"))
im16.save(os.path.join(d, "pil16.png"))
print("ok")
)PY";
  std::string log;
  ASSERT_EQ(test::run_python(dir, "labels", kScript, "'" + dir.path().string() + "'", &log), 0) << log;
  expect_same(read_label_map(dir.file("pil8.png")), m8);
  expect_same(read_label_map(dir.file("pil16.tif")), m16);
  expect_same(read_label_map(dir.file("pil16.png")), m16);
}

TEST(RgbImageIo, PngIsLosslessAndJpegIsClose) {
  TempDir dir("rgb_io");
  Image img;
  img.width = 64;
  img.height = 48;
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 64; ++x)
      img.rgb.insert(img.rgb.end(), {static_cast<std::uint8_t>(x * 4), static_cast<std::uint8_t>(y * 5),
                                     static_cast<std::uint8_t>(200 - x)});
  write_image(dir.file("a.png"), img);
  const Image png = load_image(dir.file("a.png"));
  EXPECT_TRUE(png.rgb == img.rgb) << test::first_difference(png, img);
  write_image(dir.file("a.JPG"), img);
  const Image jpg = load_image(dir.file("a.JPG"));
  ASSERT_EQ(jpg.width, 64);
  ASSERT_EQ(jpg.height, 48);
  // Smooth content at quality 95: a channel swap would show as errors near 200.
  int worst = 0;
  for (std::size_t i = 0; i < jpg.rgb.size(); ++i) worst = std::max(worst, std::abs(jpg.rgb[i] - img.rgb[i]));
  EXPECT_LE(worst, 12);
  EXPECT_EQ(directory_entries(dir.path()), (std::vector<std::string>{"a.JPG", "a.png"}));
  try {
    write_image(dir.file("a.xyz"), img);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace ovseg
