// Finds the EXIF orientation tag (0x0112) the way Pillow 9's Image.getexif() sees it, so that the
// decoder can apply it for every container OpenCV leaves unrotated (see image_io.cpp).
#include <cstring>
#include <string_view>
#include <vector>

#include "image/image_ops.hpp"

namespace ovseg::detail {
namespace {

std::uint32_t be16(const std::uint8_t* p) { return (std::uint32_t{p[0]} << 8) | p[1]; }
std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}
std::uint32_t le32(const std::uint8_t* p) {
  return (std::uint32_t{p[3]} << 24) | (std::uint32_t{p[2]} << 16) | (std::uint32_t{p[1]} << 8) | p[0];
}

bool starts_with(const std::uint8_t* p, std::size_t n, std::string_view prefix) {
  return n >= prefix.size() && std::memcmp(p, prefix.data(), prefix.size()) == 0;
}

// Orientation from a TIFF structure (an EXIF block after its "Exif\0\0" header): IFD0 only, as
// Pillow's Exif.get(0x0112). Any structural problem means "no tag" (detectron2 swallows
// getexif() errors too).
int orientation_from_tiff(const std::uint8_t* p, std::size_t n) {
  if (n < 8) return 0;
  bool little;
  if (p[0] == 'I' && p[1] == 'I') little = true;
  else if (p[0] == 'M' && p[1] == 'M') little = false;
  else return 0;
  auto u16 = [&](std::size_t off) -> std::uint32_t {
    return little ? (std::uint32_t{p[off + 1]} << 8) | p[off] : be16(p + off);
  };
  auto u32 = [&](std::size_t off) -> std::uint32_t { return little ? le32(p + off) : be32(p + off); };
  if (u16(2) != 42) return 0;
  const std::size_t ifd = u32(4);
  if (ifd > n || n - ifd < 2) return 0;
  const std::size_t entries = u16(ifd);
  for (std::size_t i = 0; i < entries; ++i) {
    const std::size_t e = ifd + 2 + 12 * i;
    if (e + 12 > n) return 0;
    if (u16(e) != 0x0112) continue;
    const std::uint32_t type = u16(e + 2);
    const std::uint32_t count = u32(e + 4);
    std::size_t size;
    switch (type) {
      case 1: case 6: case 7: size = 1; break;  // BYTE, SBYTE, UNDEFINED
      case 3: case 8: size = 2; break;          // SHORT, SSHORT
      case 4: case 9: size = 4; break;          // LONG, SLONG
      default: return 0;
    }
    if (count != 1) return 0;  // Pillow would give a tuple, which maps to no transpose
    const std::size_t off = e + 8;  // 1 value of ≤ 4 bytes is stored inline
    long v;
    if (size == 1) v = type == 6 ? static_cast<std::int8_t>(p[off]) : p[off];
    else if (size == 2) v = type == 8 ? static_cast<std::int16_t>(u16(off)) : static_cast<long>(u16(off));
    else v = type == 9 ? static_cast<std::int32_t>(u32(off)) : static_cast<long>(u32(off));
    return (v >= 1 && v <= 8) ? static_cast<int>(v) : 0;
  }
  return 0;
}

int orientation_from_exif_block(const std::uint8_t* p, std::size_t n) {
  if (starts_with(p, n, std::string_view("Exif\0\0", 6))) {
    p += 6;
    n -= 6;
  }
  return orientation_from_tiff(p, n);
}

// Pillow reads only the first APP1 "Exif\0" segment; EXIF cannot follow the first scan.
int orientation_from_jpeg(const std::uint8_t* p, std::size_t n) {
  std::size_t i = 2;
  while (i + 4 <= n) {
    if (p[i] != 0xFF) return 0;
    while (i < n && p[i] == 0xFF) ++i;
    if (i >= n) return 0;
    const std::uint8_t marker = p[i++];
    if (marker == 0xD9 || marker == 0xDA) return 0;
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;
    if (i + 2 > n) return 0;
    const std::size_t len = be16(p + i);
    if (len < 2 || i + len > n) return 0;
    const std::uint8_t* seg = p + i + 2;
    const std::size_t seg_len = len - 2;
    if (marker == 0xE1 && starts_with(seg, seg_len, std::string_view("Exif\0", 5))) {
      // Pillow's Exif.load strips "Exif\0\0"; with any other sixth byte the TIFF header check fails.
      if (seg_len < 6 || seg[5] != 0) return 0;
      return orientation_from_tiff(seg + 6, seg_len - 6);
    }
    i += len;
  }
  return 0;
}

// "Raw profile type exif" text (ImageMagick): header lines, then the block as hex.
int orientation_from_raw_profile(std::string_view text) {
  // Pillow drops the first three "\n"-separated fields, joins the rest and parses hex.
  std::size_t pos = 0;
  for (int k = 0; k < 3; ++k) {
    pos = text.find('\n', pos);
    if (pos == std::string_view::npos) return 0;
    ++pos;
  }
  std::vector<std::uint8_t> bytes;
  bytes.reserve((text.size() - pos) / 2);
  int hi = -1;
  for (std::size_t i = pos; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n' || c == ' ') continue;
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else return 0;  // bytes.fromhex() raises
    if (hi < 0) {
      hi = v;
    } else {
      bytes.push_back(static_cast<std::uint8_t>(hi * 16 + v));
      hi = -1;
    }
  }
  if (hi >= 0) return 0;
  return orientation_from_exif_block(bytes.data(), bytes.size());
}

// Pillow: re.search(r'tiff:Orientation(="|>)([0-9])', xmp).
int orientation_from_xmp(std::string_view xmp) {
  constexpr std::string_view kKey = "tiff:Orientation";
  for (std::size_t pos = xmp.find(kKey); pos != std::string_view::npos; pos = xmp.find(kKey, pos + 1)) {
    std::size_t q = pos + kKey.size();
    if (q < xmp.size() && xmp[q] == '>') q += 1;
    else if (q + 1 < xmp.size() && xmp[q] == '=' && xmp[q + 1] == '"') q += 2;
    else continue;
    if (q < xmp.size() && xmp[q] >= '0' && xmp[q] <= '9') {
      const int v = xmp[q] - '0';
      return (v >= 1 && v <= 8) ? v : 0;
    }
  }
  return 0;
}

// PNG: an eXIf chunk, else a "Raw profile type exif" text chunk, and XMP (iTXt
// "XML:com.adobe.xmp") only when the EXIF has no orientation. Compressed text chunks (zTXt,
// compressed iTXt) are not inflated here.
int orientation_from_png(const std::uint8_t* p, std::size_t n) {
  int exif = -1, raw = -1, xmp = 0;
  std::size_t i = 8;
  while (i + 12 <= n) {
    const std::size_t len = be32(p + i);
    const std::uint8_t* type = p + i + 4;
    const std::uint8_t* data = p + i + 8;
    if (len > n - i - 12) break;
    if (std::memcmp(type, "IEND", 4) == 0) break;
    const std::string_view body(reinterpret_cast<const char*>(data), len);
    if (std::memcmp(type, "eXIf", 4) == 0) {
      exif = orientation_from_exif_block(data, len);
    } else if (std::memcmp(type, "tEXt", 4) == 0) {
      const std::size_t nul = body.find('\0');
      if (nul != std::string_view::npos && body.substr(0, nul) == "Raw profile type exif")
        raw = orientation_from_raw_profile(body.substr(nul + 1));
    } else if (std::memcmp(type, "iTXt", 4) == 0) {
      const std::size_t nul = body.find('\0');
      if (nul != std::string_view::npos && nul + 3 <= body.size() && body[nul + 1] == 0) {
        const std::size_t lang_end = body.find('\0', nul + 3);
        const std::size_t tkey_end =
            lang_end == std::string_view::npos ? lang_end : body.find('\0', lang_end + 1);
        if (tkey_end != std::string_view::npos) {
          const std::string_view key = body.substr(0, nul);
          const std::string_view text = body.substr(tkey_end + 1);
          if (key == "XML:com.adobe.xmp") xmp = orientation_from_xmp(text);
          else if (key == "Raw profile type exif") raw = orientation_from_raw_profile(text);
        }
      }
    }
    i += 12 + len;
  }
  const int from_exif = exif >= 0 ? exif : (raw >= 0 ? raw : 0);
  return from_exif != 0 ? from_exif : xmp;
}

int orientation_from_webp(const std::uint8_t* p, std::size_t n) {
  std::size_t i = 12;
  while (i + 8 <= n) {
    const std::size_t len = le32(p + i + 4);
    if (len > n - i - 8) return 0;
    if (std::memcmp(p + i, "EXIF", 4) == 0) return orientation_from_exif_block(p + i + 8, len);
    i += 8 + len + (len & 1);
  }
  return 0;
}

}  // namespace

ContainerFormat sniff_container(const std::uint8_t* bytes, std::size_t size) {
  if (starts_with(bytes, size, "\xFF\xD8\xFF")) return ContainerFormat::kJpeg;
  if (starts_with(bytes, size, "\x89PNG\r\n\x1A\n")) return ContainerFormat::kPng;
  if (size >= 12 && std::memcmp(bytes, "RIFF", 4) == 0 && std::memcmp(bytes + 8, "WEBP", 4) == 0)
    return ContainerFormat::kWebp;
  if (starts_with(bytes, size, std::string_view("II*\0", 4)) || starts_with(bytes, size, std::string_view("MM\0*", 4)))
    return ContainerFormat::kTiff;
  return ContainerFormat::kOther;
}

int exif_orientation(const std::uint8_t* bytes, std::size_t size) {
  switch (sniff_container(bytes, size)) {
    case ContainerFormat::kJpeg: return orientation_from_jpeg(bytes, size);
    case ContainerFormat::kPng: return orientation_from_png(bytes, size);
    case ContainerFormat::kWebp: return orientation_from_webp(bytes, size);
    case ContainerFormat::kTiff: return orientation_from_tiff(bytes, size);
    case ContainerFormat::kOther: break;
  }
  return 0;
}

}  // namespace ovseg::detail
