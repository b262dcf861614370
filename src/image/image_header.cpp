// Image dimensions from the file header, before anything is decoded: the decompression-bomb
// check (a 2.6 MB PNG can declare 30000×30000 pixels) must not need the pixels.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "image/image_ops.hpp"

namespace ovseg::detail {
namespace {

std::uint32_t be16(const std::uint8_t* p) { return (std::uint32_t{p[0]} << 8) | p[1]; }
std::uint32_t be32(const std::uint8_t* p) { return (be16(p) << 16) | be16(p + 2); }
std::uint32_t le16(const std::uint8_t* p) { return (std::uint32_t{p[1]} << 8) | p[0]; }
std::uint32_t le32(const std::uint8_t* p) { return (le16(p + 2) << 16) | le16(p); }

bool png_size(const std::uint8_t* p, std::size_t n, HeaderSize* s) {
  if (n < 24 || std::memcmp(p + 12, "IHDR", 4) != 0) return false;
  s->width = be32(p + 16);
  s->height = be32(p + 20);
  return true;
}

// The first start-of-frame marker (SOF0..SOF15 except DHT, JPG, DAC) carries the frame size.
bool jpeg_size(const std::uint8_t* p, std::size_t n, HeaderSize* s) {
  std::size_t i = 2;
  while (i + 4 <= n) {
    if (p[i] != 0xFF) {
      ++i;
      continue;
    }
    while (i < n && p[i] == 0xFF) ++i;
    if (i >= n) return false;
    const std::uint8_t marker = p[i++];
    if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;
    if (marker == 0xD9 || marker == 0xDA) return false;  // end, or scan data before any frame header
    if (i + 2 > n) return false;
    const std::size_t len = be16(p + i);
    if (len < 2) return false;
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (i + 7 > n) return false;
      s->height = be16(p + i + 3);
      s->width = be16(p + i + 5);
      return true;
    }
    i += len;
  }
  return false;
}

bool bmp_size(const std::uint8_t* p, std::size_t n, HeaderSize* s) {
  if (n < 26 || p[0] != 'B' || p[1] != 'M') return false;
  const std::uint32_t header = le32(p + 14);
  if (header == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sizes
    s->width = le16(p + 18);
    s->height = le16(p + 20);
    return true;
  }
  const auto w = static_cast<std::int32_t>(le32(p + 18));
  const auto h = static_cast<std::int32_t>(le32(p + 22));  // negative: top-down rows
  s->width = w < 0 ? -static_cast<std::int64_t>(w) : w;
  s->height = h < 0 ? -static_cast<std::int64_t>(h) : h;
  return true;
}

bool webp_size(const std::uint8_t* p, std::size_t n, HeaderSize* s) {
  if (n < 30 || std::memcmp(p, "RIFF", 4) != 0 || std::memcmp(p + 8, "WEBP", 4) != 0) return false;
  const std::uint8_t* c = p + 12;
  if (std::memcmp(c, "VP8X", 4) == 0) {
    s->width = 1 + (le32(c + 12) & 0xFFFFFF);
    s->height = 1 + (le32(c + 15) & 0xFFFFFF);
    return true;
  }
  if (std::memcmp(c, "VP8L", 4) == 0) {
    if (c[8] != 0x2F) return false;
    const std::uint32_t bits = le32(c + 9);
    s->width = 1 + (bits & 0x3FFF);
    s->height = 1 + ((bits >> 14) & 0x3FFF);
    return true;
  }
  if (std::memcmp(c, "VP8 ", 4) == 0) {
    if (c[11] != 0x9D || c[12] != 0x01 || c[13] != 0x2A) return false;
    s->width = le16(c + 14) & 0x3FFF;
    s->height = le16(c + 16) & 0x3FFF;
    return true;
  }
  return false;
}

// TIFF: ImageWidth (256) and ImageLength (257) of the first IFD.
bool tiff_size(const std::uint8_t* p, std::size_t n, HeaderSize* s) {
  if (n < 8) return false;
  const bool le = p[0] == 'I';
  auto u16 = [&](std::size_t o) { return le ? le16(p + o) : be16(p + o); };
  auto u32 = [&](std::size_t o) { return le ? le32(p + o) : be32(p + o); };
  const std::size_t ifd = u32(4);
  if (ifd < 8 || ifd + 2 > n) return false;
  const std::size_t count = u16(ifd);
  bool have_w = false, have_h = false;
  for (std::size_t k = 0; k < count; ++k) {
    const std::size_t e = ifd + 2 + 12 * k;
    if (e + 12 > n) break;
    const std::uint32_t tag = u16(e), type = u16(e + 2);
    const std::uint32_t value = type == 3 ? u16(e + 8) : u32(e + 8);
    if (tag == 256) { s->width = value; have_w = true; }
    if (tag == 257) { s->height = value; have_h = true; }
  }
  return have_w && have_h;
}

// PNM (P1..P6) and PFM (Pf/PF): ASCII header "P6 <w> <h> ...", with # comments.
bool pnm_size(const std::uint8_t* p, std::size_t n, HeaderSize* s) {
  if (n < 3 || p[0] != 'P') return false;
  const char kind = static_cast<char>(p[1]);
  if (!((kind >= '1' && kind <= '6') || kind == 'f' || kind == 'F')) return false;
  std::size_t i = 2;
  std::int64_t v[2] = {0, 0};
  for (int k = 0; k < 2; ++k) {
    while (i < n) {
      if (p[i] == '#') {
        while (i < n && p[i] != '\n' && p[i] != '\r') ++i;
      } else if (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r' || p[i] == '\v' || p[i] == '\f') {
        ++i;
      } else {
        break;
      }
    }
    if (i >= n || p[i] < '0' || p[i] > '9') return false;
    while (i < n && p[i] >= '0' && p[i] <= '9' && v[k] < (std::int64_t{1} << 40)) v[k] = v[k] * 10 + (p[i++] - '0');
  }
  s->width = v[0];
  s->height = v[1];
  return true;
}

bool sun_raster_size(const std::uint8_t* p, std::size_t n, HeaderSize* s) {
  if (n < 12 || be32(p) != 0x59A66A95u) return false;
  s->width = be32(p + 4);
  s->height = be32(p + 8);
  return true;
}

// Radiance HDR: "#?RADIANCE" ... blank line, then "-Y <h> +X <w>".
bool hdr_size(const std::uint8_t* p, std::size_t n, HeaderSize* s) {
  if (n < 11 || std::memcmp(p, "#?", 2) != 0) return false;
  const std::string head(reinterpret_cast<const char*>(p), std::min<std::size_t>(n, 8192));
  const std::size_t blank = head.find("\n\n");
  if (blank == std::string::npos) return false;
  long long a = 0, b = 0;
  char ya = 0, xa = 0, yc = 0, xc = 0;
  if (std::sscanf(head.c_str() + blank + 2, "%c%c %lld %c%c %lld", &ya, &yc, &a, &xa, &xc, &b) != 6) return false;
  if (yc == 'Y') {
    s->height = a;
    s->width = b;
  } else {
    s->width = a;
    s->height = b;
  }
  return true;
}

}  // namespace

bool image_header_size(const std::uint8_t* bytes, std::size_t size, HeaderSize* out) {
  HeaderSize s;
  bool ok = false;
  switch (sniff_container(bytes, size)) {
    case ContainerFormat::kPng: ok = png_size(bytes, size, &s); break;
    case ContainerFormat::kJpeg: ok = jpeg_size(bytes, size, &s); break;
    case ContainerFormat::kWebp: ok = webp_size(bytes, size, &s); break;
    case ContainerFormat::kTiff: ok = tiff_size(bytes, size, &s); break;
    case ContainerFormat::kOther:
      ok = bmp_size(bytes, size, &s) || pnm_size(bytes, size, &s) || sun_raster_size(bytes, size, &s) ||
           hdr_size(bytes, size, &s);
      break;
  }
  if (ok && out) *out = s;
  return ok;
}

std::string check_pixel_limit(std::int64_t width, std::int64_t height, std::uint64_t max_pixels) {
  if (max_pixels == 0 || width <= 0 || height <= 0) return {};
  const auto pixels = static_cast<std::uint64_t>(width) * static_cast<std::uint64_t>(height);
  if (pixels <= max_pixels) return {};
  char ratio[32];
  std::snprintf(ratio, sizeof ratio, "%.2f", static_cast<double>(pixels) / static_cast<double>(max_pixels));
  return "image too large: " + std::to_string(width) + "x" + std::to_string(height) + " = " + std::to_string(pixels) +
         " pixels, " + ratio + "x the limit of " + std::to_string(max_pixels) + " (" +
         std::to_string(pixels - max_pixels) + " pixels over; raise it with --max-pixels, 0 = no limit)";
}

}  // namespace ovseg::detail
