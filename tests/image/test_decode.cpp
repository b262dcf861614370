// Decoding against Pillow: open → ImageOps.exif_transpose → convert("RGB") (docs/reference-behaviour.md §3.1 step 1),
// on files Pillow writes in the test (orientations, pixel layouts, bit depths, truncations).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "image/image_ops.hpp"
#include "image_test_util.hpp"

namespace ovseg {
namespace {

using test::TempDir;

// Writes the test files into argv[1] and a manifest "name tolerance orientation" per decodable
// file (expected pixels in <name>.expected), plus truncated files with whether Pillow opens them.
const char* kMakeFilesScript = R"PY(
import io, os, random, struct, sys, zlib
from PIL import Image, ImageOps, PngImagePlugin, features

out = sys.argv[1]
rnd = random.Random(5)
manifest = []
truncated = []

def P(name):
    return os.path.join(out, name)

def write_raw(path, im):
    assert im.mode == "RGB"
    with open(path, "wb") as f:
        f.write(struct.pack("<II", *im.size))
        f.write(im.tobytes())

def reference(path):
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")

def orientation(path):
    v = Image.open(path).getexif().get(0x0112)
    return v if isinstance(v, int) and 1 <= v <= 8 else 0

def add(name, tol=0, expected=None, orient=None):
    if expected is None:
        expected = reference(P(name))
    write_raw(P(name + ".expected"), expected)
    manifest.append((name, tol, orientation(P(name)) if orient is None else orient))

def noise(w, h, mode="RGB"):
    n = w * h * len(mode)
    return Image.frombytes(mode, (w, h), bytes(rnd.randrange(256) for _ in range(n)))

def smooth(w, h):
    im = Image.new("RGB", (w, h))
    im.putdata([((x * 7 + y) % 256, (y * 5) % 256, (x * y) % 256) for y in range(h) for x in range(w)])
    return im

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

def write_png(name, w, h, depth, color_type, rows, extra=b""):
    raw = b"".join(b"\x00" + r for r in rows)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
            + extra + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
    with open(P(name), "wb") as f:
        f.write(data)

def pack_bits(values, depth):
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(values), per):
        b = 0
        for j in range(per):
            v = values[i + j] if i + j < len(values) else 0
            b |= v << (8 - depth * (j + 1))
        out.append(b)
    return bytes(out)

T = Image.Transpose
methods = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
           6: T.ROTATE_270, 7: T.TRANSVERSE, 8: T.ROTATE_90}
have_webp = features.check("webp")

# ---- EXIF orientation 1..8 in every container that carries it ----
base = noise(13, 7)
for o in range(1, 9):
    ex = Image.Exif()
    ex[0x0112] = o
    exb = ex.tobytes()
    formats = [("jpg", {"quality": 92}), ("png", {}), ("tif", {})]
    if have_webp:
        formats.append(("webp", {"lossless": True}))
    for ext, kw in formats:
        name = "orient%d.%s" % (o, ext)
        base.save(P(name), exif=exb, **kw)
        if ext == "tif":
            # Pillow 9.4 already orients a TIFF while loading it and exif_transpose then applies
            # the tag a second time; the reference behaviour (docs/reference-behaviour.md §3.1) is to apply it once.
            add(name, expected=base if o == 1 else base.transpose(methods[o]))
        else:
            add(name)

def tiff_exif(o, big_endian):
    e = ">" if big_endian else "<"
    value = (o << 16) if big_endian else o
    ifd = struct.pack(e + "H", 1) + struct.pack(e + "HHII", 0x0112, 3, 1, value) + struct.pack(e + "I", 0)
    return (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(e + "I", 8) + ifd

def jpeg_with_app1(name, payloads):
    buf = io.BytesIO()
    base.save(buf, "JPEG", quality=92)
    data = buf.getvalue()
    segs = b"".join(b"\xff\xe1" + struct.pack(">H", len(p) + 2) + p for p in payloads)
    with open(P(name), "wb") as f:
        f.write(data[:2] + segs + data[2:])

jpeg_with_app1("exif_bigendian6.jpg", [b"Exif\x00\x00" + tiff_exif(6, True)])
add("exif_bigendian6.jpg")
jpeg_with_app1("exif_two_app1.jpg", [b"Exif\x00\x00" + tiff_exif(3, False), b"Exif\x00\x00" + tiff_exif(6, False)])
add("exif_two_app1.jpg")
jpeg_with_app1("exif_bad_header.jpg", [b"Exif\x00\x00" + b"XX\x2a\x00" + b"\x00" * 20])
add("exif_bad_header.jpg")

ex8 = Image.Exif()
ex8[0x0112] = 8
exb8 = ex8.tobytes()
hexed = exb8.hex()
info = PngImagePlugin.PngInfo()
info.add_text("Raw profile type exif",
              "\nexif\n%8d\n" % len(exb8) + "\n".join(hexed[i:i + 72] for i in range(0, len(hexed), 72)) + "\n")
base.save(P("rawprofile8.png"), pnginfo=info)
add("rawprofile8.png")
for o, xmp in ((5, '<x:xmpmeta><rdf:Description tiff:Orientation="5"/></x:xmpmeta>'),
               (7, "<x:xmpmeta><tiff:Orientation>7</tiff:Orientation></x:xmpmeta>")):
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    base.save(P("xmp%d.png" % o), pnginfo=info)
    add("xmp%d.png" % o)
info = PngImagePlugin.PngInfo()
info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>')
ex3 = Image.Exif()
ex3[0x0112] = 3
base.save(P("exif_beats_xmp.png"), pnginfo=info, exif=ex3.tobytes())
add("exif_beats_xmp.png")

# ---- pixel layouts ----
noise(37, 23, "L").save(P("grey.png")); add("grey.png")
noise(37, 23, "L").save(P("grey.jpg"), quality=90); add("grey.jpg")
smooth(40, 30).save(P("rgb444.jpg"), quality=95, subsampling=0); add("rgb444.jpg")
smooth(40, 30).save(P("progressive.jpg"), quality=85, progressive=True); add("progressive.jpg")
noise(40, 30).save(P("rgb.bmp")); add("rgb.bmp")

# RGBA: transparent pixels ((x + y) % 4 == 0) keep a known colour that compositing would change.
rgba = noise(29, 17, "RGBA")
px = rgba.load()
for y in range(17):
    for x in range(29):
        r, g, b, a = px[x, y]
        px[x, y] = (200, 100, 50, 0) if (x + y) % 4 == 0 else (r, g, b, max(a, 1))
rgba.save(P("rgba.png")); add("rgba.png")
if have_webp:
    rgba.save(P("rgba.webp"), lossless=True); add("rgba.webp")
noise(29, 17, "LA").save(P("la.png")); add("la.png")

pal = Image.new("P", (31, 19))
pal.putpalette(bytes(rnd.randrange(256) for _ in range(768)))
pal.putdata([rnd.randrange(256) for _ in range(31 * 19)])
pal.save(P("palette.png")); add("palette.png")
pal.save(P("palette_trns.png"), transparency=5); add("palette_trns.png")
pal16 = Image.new("P", (31, 19))
pal16.putpalette(bytes(rnd.randrange(256) for _ in range(48)))
pal16.putdata([rnd.randrange(16) for _ in range(31 * 19)])
pal16.save(P("palette4.png"), bits=4); add("palette4.png")
noise(35, 9, "L").convert("1").save(P("bilevel.png")); add("bilevel.png")
noise(37, 23, "L").save(P("grey_trns.png"), transparency=77); add("grey_trns.png")
noise(37, 23).save(P("rgb_trns.png"), transparency=(10, 20, 30)); add("rgb_trns.png")

for depth in (2, 4):
    w, h = 21, 5
    rows = [pack_bits([rnd.randrange(1 << depth) for _ in range(w)], depth) for _ in range(h)]
    write_png("grey%d.png" % depth, w, h, depth, 0, rows)
    add("grey%d.png" % depth)

def u16_values(n):
    # Half small values (where clamping and >>8 disagree most visibly), half anywhere.
    return [rnd.randrange(300) if rnd.random() < 0.5 else rnd.randrange(65536) for _ in range(n)]

w, h = 23, 11
grey16 = Image.frombytes("I;16", (w, h), struct.pack("<%dH" % (w * h), *u16_values(w * h)))
grey16.save(P("grey16.png")); add("grey16.png")
grey16.save(P("grey16.tif")); add("grey16.tif")
rows = [struct.pack(">%dH" % w, *u16_values(w)) for _ in range(h)]
write_png("grey16_trns.png", w, h, 16, 0, rows, png_chunk(b"tRNS", struct.pack(">H", 5)))
add("grey16_trns.png")
for name, ct, ch in (("rgb16.png", 2, 3), ("rgba16.png", 6, 4), ("la16.png", 4, 2)):
    rows = [struct.pack(">%dH" % (w * ch), *u16_values(w * ch)) for _ in range(h)]
    write_png(name, w, h, 16, ct, rows)
    add(name)

# CMYK JPEG: OpenCV converts CMYK itself (best effort, see image_io.cpp); small differences allowed.
cmyk = Image.merge("CMYK", [Image.frombytes("L", (32, 24), bytes(((x * 9 + y * 3 + 50 * c) % 256)
        for y in range(24) for x in range(32))) for c in range(4)])
cmyk.save(P("cmyk.jpg"), quality=95); add("cmyk.jpg", tol=3)

# ---- truncated files: is each one still readable for Pillow? ----
noise(160, 120).save(P("tbase.jpg"), quality=90)
noise(160, 120).save(P("tbase_prog.jpg"), quality=90, progressive=True)
noise(160, 120).save(P("tbase.png"))
Image.new("RGB", (160, 120), (10, 20, 30)).save(P("tbase_flat.png"))
for src in ("tbase.jpg", "tbase_prog.jpg", "tbase.png", "tbase_flat.png"):
    data = open(P(src), "rb").read()
    n = len(data)
    # Around the PNG tail: IEND (12 bytes), the IDAT CRC (4), the zlib Adler-32 (4), deflate data.
    for cut in sorted({n - 1, n - 2, n - 3, n - 12, n - 13, n - 16, n - 17, n - 19, n - 20, n - 21,
                       n - 22, n - 23, n - 30, n // 2, 100}):
        name = "cut%d_%s" % (cut, src)
        with open(P(name), "wb") as f:
            f.write(data[:cut])
        try:
            write_raw(P(name + ".expected"), reference(P(name)))
            ok = 1
        except Exception:
            ok = 0
        # A PNG cut inside the last bytes of its zlib stream (the Adler-32 and just before it):
        # Pillow only needs every row, libpng may also want the end of the stream.
        strict = 0 if src.endswith(".png") and n - 21 <= cut <= n - 17 else 1
        truncated.append((name, ok, strict))

# ---- a container Pillow reads but OpenCV 4.6 cannot ----
noise(8, 8).save(P("image.gif"))

with open(P("manifest.txt"), "w") as f:
    for name, tol, o in manifest:
        f.write("%s %d %d\n" % (name, tol, o))
with open(P("truncated.txt"), "w") as f:
    for name, ok, strict in truncated:
        f.write("%s %d %d\n" % (name, ok, strict))
)PY";

class DecodeAgainstPillow : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_pillow()) return;
    dir_ = new TempDir("decode");
    std::string log;
    generated_ = test::run_python(*dir_, "make_files", kMakeFilesScript, "'" + dir_->path().string() + "'", &log) == 0;
    log_ = log;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    OVSEG_REQUIRE_PILLOW();
    ASSERT_TRUE(generated_) << "generating the test files with Pillow failed:\n" << log_;
  }
  static std::string file(const std::string& name) { return dir_->file(name); }

  static TempDir* dir_;
  static bool generated_;
  static std::string log_;
};
TempDir* DecodeAgainstPillow::dir_ = nullptr;
bool DecodeAgainstPillow::generated_ = false;
std::string DecodeAgainstPillow::log_;

int max_abs_diff(const Image& a, const Image& b) {
  int m = 0;
  for (std::size_t i = 0; i < a.rgb.size() && i < b.rgb.size(); ++i)
    m = std::max(m, std::abs(int{a.rgb[i]} - int{b.rgb[i]}));
  return m;
}

TEST_F(DecodeAgainstPillow, EveryFileMatchesPillow) {
  std::ifstream manifest(file("manifest.txt"));
  std::string name;
  int tol = 0, orientation = 0, count = 0;
  while (manifest >> name >> tol >> orientation) {
    SCOPED_TRACE(name);
    ++count;
    const Image expected = test::read_raw_rgb(file(name + ".expected"));
    Image got;
    try {
      got = load_image(file(name));
    } catch (const Error& e) {
      ADD_FAILURE() << "load_image failed: " << e.what();
      continue;
    }
    ASSERT_EQ(got.width, expected.width);
    ASSERT_EQ(got.height, expected.height);
    ASSERT_EQ(got.rgb.size(), static_cast<std::size_t>(got.width) * got.height * 3);
    if (tol == 0) {
      EXPECT_TRUE(got.rgb == expected.rgb) << test::first_difference(got, expected);
    } else {
      EXPECT_LE(max_abs_diff(got, expected), tol) << test::first_difference(got, expected);
    }
    // The tag as Pillow's getexif() reports it.
    const std::vector<std::uint8_t> bytes = test::slurp(file(name));
    EXPECT_EQ(detail::exif_orientation(bytes.data(), bytes.size()), orientation);
  }
  EXPECT_GT(count, 50);
}

TEST_F(DecodeAgainstPillow, AllEightOrientationsChangeTheImageAsPillowDoes) {
  // The orientation files share one 13×7 source: 5..8 swap the axes and all eight differ.
  std::vector<std::vector<std::uint8_t>> seen;
  for (int o = 1; o <= 8; ++o) {
    const Image img = load_image(file("orient" + std::to_string(o) + ".png"));
    EXPECT_EQ(img.width, o >= 5 ? 7 : 13) << "orientation " << o;
    EXPECT_EQ(img.height, o >= 5 ? 13 : 7) << "orientation " << o;
    for (const auto& other : seen) EXPECT_NE(img.rgb, other) << "orientation " << o;
    seen.push_back(img.rgb);
  }
}

TEST_F(DecodeAgainstPillow, AlphaIsDroppedNotComposited) {
  const Image img = load_image(file("rgba.png"));
  ASSERT_EQ(img.width, 29);
  ASSERT_EQ(img.height, 17);
  for (int y = 0; y < img.height; ++y) {
    for (int x = 0; x < img.width; ++x) {
      if ((x + y) % 4 != 0) continue;  // fully transparent pixels keep their stored colour
      const std::uint8_t* p = &img.rgb[(static_cast<std::size_t>(y) * img.width + x) * 3];
      ASSERT_EQ(p[0], 200) << x << "," << y;
      ASSERT_EQ(p[1], 100) << x << "," << y;
      ASSERT_EQ(p[2], 50) << x << "," << y;
    }
  }
}

TEST_F(DecodeAgainstPillow, SixteenBitGreyIsClampedLikePillow) {
  // Pillow opens 16-bit grey as mode "I" and convert("RGB") clamps to 255 (not >> 8): values
  // below 256 survive unchanged.
  const Image img = load_image(file("grey16.png"));
  const Image expected = test::read_raw_rgb(file("grey16.png.expected"));
  EXPECT_TRUE(img.rgb == expected.rgb) << test::first_difference(img, expected);
  int mid = 0;
  for (std::uint8_t v : img.rgb) mid += (v > 1 && v < 255);
  EXPECT_GT(mid, 0) << "the file should contain small values that >> 8 would zero";
}

TEST_F(DecodeAgainstPillow, TruncatedFilesFailExactlyWhenPillowFails) {
  std::ifstream list(file("truncated.txt"));
  std::string name;
  int pil_ok = 0, strict = 1, count = 0, failures = 0;
  while (list >> name >> pil_ok >> strict) {
    SCOPED_TRACE(name);
    ++count;
    Image got;
    std::string error;
    try {
      got = load_image(file(name));
    } catch (const Error& e) {
      error = e.what();
      EXPECT_EQ(e.code(), ErrorCode::kBadImage) << e.what();
      EXPECT_NE(error.find(file(name)), std::string::npos) << e.what();
    }
    if (pil_ok) {
      if (error.empty()) {
        const Image expected = test::read_raw_rgb(file(name + ".expected"));
        EXPECT_TRUE(got.rgb == expected.rgb && got.width == expected.width) << test::first_difference(got, expected);
      } else if (strict) {
        ADD_FAILURE() << "Pillow reads this file but load_image failed: " << error;
      }
    } else {
      ++failures;
      EXPECT_FALSE(error.empty()) << "Pillow rejects this truncated file but load_image accepted it";
    }
  }
  EXPECT_GT(count, 40);
  EXPECT_GT(failures, 10);
}

TEST_F(DecodeAgainstPillow, UnsupportedContainerIsBadImage) {
  // GIF: Pillow reads it, OpenCV 4.6 has no GIF decoder. A clear kBadImage is the contract.
  try {
    load_image(file("image.gif"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadImage);
    EXPECT_NE(std::string(e.what()).find("image.gif"), std::string::npos);
  }
}

// ---- the shared fixture ---------------------------------------------------------------------

TEST(DecodeFixture, FixtureImageDecodesToPillowBytes) {
  OVSEG_REQUIRE_PILLOW();
  const std::string path = test::fixture_dir() + "/image.png";
  OVSEG_REQUIRE_PATH(path);
  TempDir dir("decode_fixture");
  static const char* kScript = R"PY(
import struct, sys
from PIL import Image, ImageOps
im = ImageOps.exif_transpose(Image.open(sys.argv[1])).convert("RGB")
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack("<II", *im.size))
    f.write(im.tobytes())
)PY";
  std::string log;
  ASSERT_EQ(test::run_python(dir, "fixture", kScript, "'" + path + "' '" + dir.file("out.raw") + "'", &log), 0) << log;
  const Image expected = test::read_raw_rgb(dir.file("out.raw"));
  const Image got = load_image(path);
  EXPECT_EQ(got.width, 401);
  EXPECT_EQ(got.height, 402);
  EXPECT_TRUE(got.rgb == expected.rgb && got.width == expected.width && got.height == expected.height)
      << test::first_difference(got, expected);
}

// ---- EXIF parsing corner cases (no Python needed) --------------------------------------------

// A JPEG header with one APP1 segment holding `tiff` (after "Exif\0\0"), then EOI.
std::vector<std::uint8_t> jpeg_with_exif(const std::vector<std::uint8_t>& tiff) {
  std::vector<std::uint8_t> j = {0xFF, 0xD8, 0xFF, 0xE1};
  const std::size_t len = tiff.size() + 8;
  j.push_back(static_cast<std::uint8_t>(len >> 8));
  j.push_back(static_cast<std::uint8_t>(len & 0xFF));
  for (char c : std::string("Exif\0\0", 6)) j.push_back(static_cast<std::uint8_t>(c));
  j.insert(j.end(), tiff.begin(), tiff.end());
  j.insert(j.end(), {0xFF, 0xD9});
  return j;
}

// Little-endian TIFF with one IFD0 entry (tag, type, count, inline value).
std::vector<std::uint8_t> tiff_le(std::uint16_t tag, std::uint16_t type, std::uint32_t count, std::uint32_t value) {
  std::vector<std::uint8_t> t = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0};
  auto put16 = [&](std::uint16_t v) { t.push_back(v & 0xFF); t.push_back(static_cast<std::uint8_t>(v >> 8)); };
  auto put32 = [&](std::uint32_t v) { for (int i = 0; i < 4; ++i) t.push_back(static_cast<std::uint8_t>(v >> (8 * i))); };
  put16(tag);
  put16(type);
  put32(count);
  put32(value);
  put32(0);
  return t;
}

int orientation_of(const std::vector<std::uint8_t>& bytes) {
  return detail::exif_orientation(bytes.data(), bytes.size());
}

TEST(ExifOrientation, ReadsShortLongAndByteValues) {
  EXPECT_EQ(orientation_of(jpeg_with_exif(tiff_le(0x0112, 3, 1, 6))), 6);  // SHORT
  EXPECT_EQ(orientation_of(jpeg_with_exif(tiff_le(0x0112, 4, 1, 8))), 8);  // LONG
  EXPECT_EQ(orientation_of(jpeg_with_exif(tiff_le(0x0112, 1, 1, 3))), 3);  // BYTE
}

TEST(ExifOrientation, IgnoresWhatPillowWouldNotTransposeFor) {
  EXPECT_EQ(orientation_of(jpeg_with_exif(tiff_le(0x0112, 3, 1, 9))), 0);   // out of range
  EXPECT_EQ(orientation_of(jpeg_with_exif(tiff_le(0x0112, 3, 2, 6))), 0);   // a tuple in Pillow
  EXPECT_EQ(orientation_of(jpeg_with_exif(tiff_le(0x0110, 3, 1, 6))), 0);   // another tag
  EXPECT_EQ(orientation_of(jpeg_with_exif(tiff_le(0x0112, 5, 1, 6))), 0);   // RATIONAL
  std::vector<std::uint8_t> cut = tiff_le(0x0112, 3, 1, 6);
  cut.resize(14);  // IFD entry cut off
  EXPECT_EQ(orientation_of(jpeg_with_exif(cut)), 0);
  std::vector<std::uint8_t> bad_offset = tiff_le(0x0112, 3, 1, 6);
  bad_offset[4] = 0xF0;  // IFD0 offset past the end
  EXPECT_EQ(orientation_of(jpeg_with_exif(bad_offset)), 0);
  const std::vector<std::uint8_t> not_an_image = {'h', 'e', 'l', 'l', 'o'};
  EXPECT_EQ(orientation_of(not_an_image), 0);
  EXPECT_EQ(detail::exif_orientation(nullptr, 0), 0);
}

// ---- errors (no Python needed) ----------------------------------------------------------------

void expect_error(const std::string& path, ErrorCode code, const std::string& fragment = "") {
  try {
    load_image(path);
    ADD_FAILURE() << path << ": expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "message lacks the path: " << e.what();
    if (!fragment.empty()) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  }
}

TEST(DecodeErrors, MissingFileIsIo) {
  TempDir dir("decode_err");
  expect_error(dir.file("does_not_exist.jpg"), ErrorCode::kIo);
}

TEST(DecodeErrors, DirectoryIsIo) {
  TempDir dir("decode_err");
  expect_error(dir.path().string(), ErrorCode::kIo);
}

TEST(DecodeErrors, EmptyFileIsBadImage) {
  TempDir dir("decode_err");
  test::spit(dir.file("empty.png"), {});
  expect_error(dir.file("empty.png"), ErrorCode::kBadImage, "empty");
}

TEST(DecodeErrors, GarbageIsBadImage) {
  TempDir dir("decode_err");
  std::vector<std::uint8_t> junk(4096);
  for (std::size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 13);
  test::spit(dir.file("junk.jpg"), junk);
  expect_error(dir.file("junk.jpg"), ErrorCode::kBadImage);
  const std::string text = "this is not an image\n";
  test::spit(dir.file("notes.png"), std::vector<std::uint8_t>(text.begin(), text.end()));
  expect_error(dir.file("notes.png"), ErrorCode::kBadImage);
  // Valid signatures followed by garbage.
  std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  png.insert(png.end(), junk.begin(), junk.begin() + 200);
  test::spit(dir.file("bad.png"), png);
  expect_error(dir.file("bad.png"), ErrorCode::kBadImage);
  std::vector<std::uint8_t> jpg = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xD9};
  test::spit(dir.file("bad.jpg"), jpg);
  expect_error(dir.file("bad.jpg"), ErrorCode::kBadImage);
}

TEST(DecodeErrors, ZeroSizedPngIsBadImage) {
  // A structurally complete PNG whose IHDR says 0×0 (libpng refuses it, as does Pillow).
  const std::vector<std::uint8_t> png = {
      0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n',
      0, 0, 0, 13, 'I', 'H', 'D', 'R', 0, 0, 0, 0, 0, 0, 0, 0, 8, 2, 0, 0, 0, 0xB4, 0xE9, 0xEB, 0x45,
      0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
  TempDir dir("decode_err");
  test::spit(dir.file("zero.png"), png);
  expect_error(dir.file("zero.png"), ErrorCode::kBadImage);
}

TEST(DecodeErrors, DecodeImageUsesTheGivenName) {
  const std::uint8_t junk[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  try {
    decode_image(junk, sizeof(junk), "camera-frame-17");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadImage);
    EXPECT_EQ(std::string(e.what()).rfind("camera-frame-17: ", 0), 0u) << e.what();
  }
  try {
    decode_image(nullptr, 0, "nothing");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadImage);
  }
}

TEST(DecodeRoundTrip, DecodeImageEqualsLoadImage) {
  // write_image (PNG, lossless) → both entry points give the same pixels back.
  TempDir dir("decode_rt");
  Image img;
  img.width = 19;
  img.height = 11;
  for (int i = 0; i < 19 * 11 * 3; ++i) img.rgb.push_back(static_cast<std::uint8_t>(i * 37 + 5));
  write_image(dir.file("x.png"), img);
  const Image a = load_image(dir.file("x.png"));
  const std::vector<std::uint8_t> bytes = test::slurp(dir.file("x.png"));
  const Image b = decode_image(bytes.data(), bytes.size(), "x.png");
  EXPECT_TRUE(a.rgb == img.rgb && a.width == 19 && a.height == 11) << test::first_difference(a, img);
  EXPECT_TRUE(b.rgb == img.rgb) << test::first_difference(b, img);
}

}  // namespace
}  // namespace ovseg
