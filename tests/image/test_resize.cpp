// The test-time resize: size rule (docs/reference-behaviour.md §3.1 step 2) and bit-exactness
// against Pillow's BILINEAR.
#include <cstdint>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "image/image_ops.hpp"
#include "image_test_util.hpp"

namespace ovseg {
namespace {

using detail::resize_pillow_bilinear;
using detail::test_resize_size;
using test::TempDir;

// ---- size rule -----------------------------------------------------------------------------------

TEST(TestResizeSize, SpecExamples) {
  // docs/reference-behaviour.md §3.1: 512×683 (H×W) → (640, 853.75) → (640, 854).
  EXPECT_EQ(test_resize_size(512, 683, 640, 2560), std::make_pair(640, 854));
  // The fixture image (H0=402, W0=401) with MIN/MAX_SIZE_TEST 336/1280: W is the short side.
  EXPECT_EQ(test_resize_size(402, 401, 336, 1280), std::make_pair(337, 336));
  // Square: the "else" branch (H0 < W0 is strict) — both sides become S.
  EXPECT_EQ(test_resize_size(500, 500, 640, 2560), std::make_pair(640, 640));
  // Cap: (640, 6400) exceeds 2560, both float sizes scale by 0.4 before rounding.
  EXPECT_EQ(test_resize_size(100, 1000, 640, 2560), std::make_pair(256, 2560));
  EXPECT_EQ(test_resize_size(1000, 100, 640, 2560), std::make_pair(2560, 256));
  // R101c settings (512, 2048) on the image of docs/reference-behaviour.md §B: 512 / 512 = 1 → unchanged.
  EXPECT_EQ(test_resize_size(512, 683, 512, 2048), std::make_pair(512, 683));
}

TEST(TestResizeSize, RejectsNonPositiveSizes) {
  EXPECT_THROW(test_resize_size(0, 10, 640, 2560), Error);
  EXPECT_THROW(test_resize_size(10, -1, 640, 2560), Error);
  EXPECT_THROW(test_resize_size(10, 10, 0, 2560), Error);
}

// detectron2's ResizeShortestEdge.get_output_shape evaluated by Python on many random sizes.
TEST(TestResizeSize, MatchesPythonArithmetic) {
  TempDir dir("resize_size");
  std::mt19937 rng(1234);
  struct Case { int h, w, s, m; };
  std::vector<Case> cases;
  const int shorts[] = {336, 512, 640, 800};
  const int caps[] = {1280, 2048, 2560, 1333};
  for (int i = 0; i < 3000; ++i) {
    Case c;
    c.h = std::uniform_int_distribution<int>(1, i % 3 == 0 ? 6000 : 1200)(rng);
    c.w = i % 7 == 0 ? c.h : std::uniform_int_distribution<int>(1, i % 5 == 0 ? 6000 : 1200)(rng);
    c.s = shorts[i % 4];
    c.m = caps[(i / 4) % 4];
    cases.push_back(c);
  }
  {
    std::ofstream out(dir.file("cases.txt"));
    for (const Case& c : cases) out << c.h << ' ' << c.w << ' ' << c.s << ' ' << c.m << '\n';
  }
  static const char* kScript = R"PY(
import sys
def get_output_shape(oldh, oldw, short_edge_length, max_size):
    h, w = oldh, oldw
    size = short_edge_length * 1.0
    scale = size / min(h, w)
    if h < w:
        newh, neww = size, scale * w
    else:
        newh, neww = scale * h, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    return int(newh + 0.5), int(neww + 0.5)
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        h, w, s, m = map(int, line.split())
        out.write("%d %d\n" % get_output_shape(h, w, s, m))
)PY";
  std::string log;
  ASSERT_EQ(test::run_python(dir, "sizes", kScript, "'" + dir.file("cases.txt") + "' '" + dir.file("expected.txt") + "'",
                             &log),
            0)
      << log;
  std::ifstream in(dir.file("expected.txt"));
  int mismatches = 0;
  for (const Case& c : cases) {
    int eh = -1, ew = -1;
    ASSERT_TRUE(static_cast<bool>(in >> eh >> ew));
    const auto got = test_resize_size(c.h, c.w, c.s, c.m);
    if (got != std::make_pair(eh, ew) && ++mismatches <= 10)
      ADD_FAILURE() << "h0=" << c.h << " w0=" << c.w << " S=" << c.s << " M=" << c.m << ": got " << got.first << "x"
                    << got.second << ", python " << eh << "x" << ew;
  }
  EXPECT_EQ(mismatches, 0);
}

// ---- Pillow BILINEAR ---------------------------------------------------------------------------

enum class Pattern { kNoise, kGradient, kWhite, kBlocks };

Image make_image(int w, int h, Pattern pattern, std::uint32_t seed) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<std::size_t>(w) * h * 3);
  std::mt19937 rng(seed);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {
        std::uint8_t v = 0;
        switch (pattern) {
          case Pattern::kNoise: v = static_cast<std::uint8_t>(rng() & 0xFF); break;
          case Pattern::kGradient: v = static_cast<std::uint8_t>((x * 255 / std::max(w - 1, 1) + y * 3 + c * 40) & 0xFF); break;
          case Pattern::kWhite: v = 255; break;
          case Pattern::kBlocks: v = (((x / 3) + (y / 2) + c) % 2) ? 255 : 0; break;
        }
        img.rgb[(static_cast<std::size_t>(y) * w + x) * 3 + c] = v;
      }
    }
  }
  return img;
}

// Pillow's Image.resize((w, h), Image.BILINEAR) for every "src dst" pair of a manifest.
const char* kPillowResizeScript = R"PY(
import struct, sys
from PIL import Image
def read_raw(path):
    with open(path, "rb") as f:
        data = f.read()
    w, h = struct.unpack("<II", data[:8])
    return Image.frombytes("RGB", (w, h), data[8:])
def write_raw(path, im):
    with open(path, "wb") as f:
        f.write(struct.pack("<II", *im.size))
        f.write(im.tobytes())
with open(sys.argv[1]) as f:
    for line in f:
        src, dst, w, h = line.split()
        write_raw(dst, read_raw(src).resize((int(w), int(h)), Image.BILINEAR))
)PY";

// Selects the resize kernels for one scope.
struct SimdGuard {
  explicit SimdGuard(bool enabled) { detail::set_resize_simd_enabled(enabled); }
  ~SimdGuard() { detail::set_resize_simd_enabled(true); }
};

struct ResizeCase {
  int src_w, src_h, dst_w, dst_h;
  Pattern pattern;
};

TEST(ResizePillowBilinear, BitExactAgainstPillow) {
  OVSEG_REQUIRE_PILLOW();
  const std::vector<ResizeCase> cases = {
      {401, 402, 336, 337, Pattern::kNoise},     // odd downscale ratio (fixture-like)
      {402, 401, 337, 336, Pattern::kGradient},
      {1000, 3, 17, 640, Pattern::kNoise},       // strong downscale in x, strong upscale in y
      {7, 5, 640, 457, Pattern::kNoise},         // strong upscale
      {853, 640, 640, 480, Pattern::kNoise},     // downscale 4:3
      {683, 512, 854, 640, Pattern::kNoise},     // the upscale of docs/reference-behaviour.md §B
      {683, 512, 854, 640, Pattern::kWhite},     // sums of rounded weights may exceed 1: clamp
      {2000, 1500, 853, 640, Pattern::kGradient},// large ratio downscale (wide kernels)
      {64, 48, 64, 48, Pattern::kNoise},         // identity
      {64, 48, 64, 100, Pattern::kNoise},        // vertical only
      {64, 48, 31, 48, Pattern::kBlocks},        // horizontal only
      {1, 1, 5, 3, Pattern::kNoise},
      {300, 200, 1, 1, Pattern::kNoise},
      {513, 7, 1280, 2, Pattern::kBlocks},
      {97, 389, 640, 2560, Pattern::kNoise},     // cap-sized tall output
      {640, 427, 641, 426, Pattern::kNoise},     // ±1 pixel: scales very close to 1
  };
  TempDir dir("resize");
  std::ostringstream manifest;
  std::vector<Image> inputs;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const ResizeCase& c = cases[i];
    inputs.push_back(make_image(c.src_w, c.src_h, c.pattern, static_cast<std::uint32_t>(100 + i)));
    const std::string src = dir.file("src" + std::to_string(i) + ".raw");
    test::write_raw_rgb(src, inputs.back());
    manifest << src << ' ' << dir.file("dst" + std::to_string(i) + ".raw") << ' ' << c.dst_w << ' ' << c.dst_h << '\n';
  }
  {
    std::ofstream out(dir.file("manifest.txt"));
    out << manifest.str();
  }
  std::string log;
  ASSERT_EQ(test::run_python(dir, "resize", kPillowResizeScript, "'" + dir.file("manifest.txt") + "'", &log), 0) << log;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const ResizeCase& c = cases[i];
    SCOPED_TRACE(std::to_string(c.src_w) + "x" + std::to_string(c.src_h) + " -> " + std::to_string(c.dst_w) + "x" +
                 std::to_string(c.dst_h));
    const Image expected = test::read_raw_rgb(dir.file("dst" + std::to_string(i) + ".raw"));
    ASSERT_EQ(expected.width, c.dst_w);
    ASSERT_EQ(expected.height, c.dst_h);
    // Both kernel sets: AVX2 (where the CPU has it) and the portable loops.
    for (const bool simd : {true, false}) {
      SCOPED_TRACE(simd ? "simd kernels" : "portable kernels");
      SimdGuard guard(simd);
      const Image got = resize_pillow_bilinear(inputs[i], c.dst_w, c.dst_h);
      EXPECT_EQ(got.width, c.dst_w);
      EXPECT_EQ(got.height, c.dst_h);
      EXPECT_TRUE(got.rgb == expected.rgb) << test::first_difference(got, expected);
    }
  }
}

// The fixture image through the whole pre-processing resize: decode, size rule, resample.
TEST(ResizePillowBilinear, FixtureImageMatchesPillow) {
  OVSEG_REQUIRE_PILLOW();
  const std::string path = test::fixture_dir() + "/image.png";
  OVSEG_REQUIRE_PATH(path);
  TempDir dir("resize_fixture");
  static const char* kScript = R"PY(
import struct, sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB")
w, h = im.size
r = im.resize((int(sys.argv[3]), int(sys.argv[4])), Image.BILINEAR)
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack("<II", *r.size))
    f.write(r.tobytes())
)PY";
  const Image img = load_image(path);
  ASSERT_EQ(img.height, 402);
  ASSERT_EQ(img.width, 401);
  const auto [h, w] = test_resize_size(img.height, img.width, 336, 1280);
  ASSERT_EQ(h, 337);
  ASSERT_EQ(w, 336);
  std::string log;
  ASSERT_EQ(test::run_python(dir, "fixture", kScript,
                             "'" + path + "' '" + dir.file("out.raw") + "' " + std::to_string(w) + " " + std::to_string(h),
                             &log),
            0)
      << log;
  const Image expected = test::read_raw_rgb(dir.file("out.raw"));
  const Image got = resize_pillow_bilinear(img, w, h);
  EXPECT_TRUE(got.rgb == expected.rgb && got.width == expected.width && got.height == expected.height)
      << test::first_difference(got, expected);
}

TEST(ResizePillowBilinear, SameSizeIsACopy) {
  const Image img = make_image(33, 21, Pattern::kNoise, 7);
  const Image out = resize_pillow_bilinear(img, 33, 21);
  EXPECT_EQ(out.width, 33);
  EXPECT_EQ(out.height, 21);
  EXPECT_TRUE(out.rgb == img.rgb);
}

TEST(ResizePillowBilinear, ConstantImageStaysConstant) {
  // Weights are normalised, so any resize of a flat colour must return that colour.
  Image img = make_image(50, 40, Pattern::kNoise, 1);
  for (std::size_t i = 0; i < img.rgb.size(); i += 3) {
    img.rgb[i] = 17;
    img.rgb[i + 1] = 128;
    img.rgb[i + 2] = 250;
  }
  for (auto [w, h] : {std::pair{13, 7}, std::pair{120, 97}, std::pair{50, 3}}) {
    const Image out = resize_pillow_bilinear(img, w, h);
    ASSERT_EQ(out.rgb.size(), static_cast<std::size_t>(w) * h * 3);
    for (std::size_t i = 0; i < out.rgb.size(); i += 3) {
      ASSERT_EQ(out.rgb[i], 17);
      ASSERT_EQ(out.rgb[i + 1], 128);
      ASSERT_EQ(out.rgb[i + 2], 250);
    }
  }
}

TEST(ResizePillowBilinear, RejectsBadArguments) {
  const Image img = make_image(4, 4, Pattern::kNoise, 3);
  EXPECT_THROW(resize_pillow_bilinear(img, 0, 4), Error);
  EXPECT_THROW(resize_pillow_bilinear(img, 4, -2), Error);
  Image broken = img;
  broken.rgb.pop_back();
  EXPECT_THROW(resize_pillow_bilinear(broken, 8, 8), Error);
  try {
    resize_pillow_bilinear(Image{}, 8, 8);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace ovseg
