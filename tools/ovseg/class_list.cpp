#include "class_list.hpp"

#include <cstdint>
#include <cstdio>
#include <unordered_map>

#include "ovseg/io.hpp"
#include "ovseg/ovseg.hpp"

namespace ovseg::cli {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

}  // namespace

std::string control_character(const std::string& name) {
  char buf[16];
  for (std::size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7F) {
      std::snprintf(buf, sizeof buf, "U+%04X", c);
      return buf;
    }
    // C1 controls U+0080..U+009F: C2 80..C2 9F in UTF-8.
    if (c == 0xC2 && i + 1 < name.size()) {
      const auto d = static_cast<unsigned char>(name[i + 1]);
      if (d >= 0x80 && d <= 0x9F) {
        std::snprintf(buf, sizeof buf, "U+%04X", d);
        return buf;
      }
    }
  }
  return {};
}

std::string trim(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool is_valid_utf8(const std::string& text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) { ++i; continue; }
    int len = 0;
    std::uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

void check_class_list(const std::vector<std::string>& classes, const std::string& source) {
  if (classes.empty()) throw Error(ErrorCode::kInvalidArgument, source + ": no class names");
  // 65535 is the unlabeled value of a 16-bit label map, so at most 65535 classes (0..65534).
  if (classes.size() >= kUnlabeled)
    throw Error(ErrorCode::kInvalidArgument,
                source + ": " + std::to_string(classes.size()) + " classes, at most 65534 are supported");
  std::unordered_map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < classes.size(); ++i) {
    const std::string key = ascii_lower(trim(classes[i]));
    if (key.empty())
      throw Error(ErrorCode::kInvalidArgument, source + ": class " + std::to_string(i + 1) + " is empty");
    if (const std::string c = control_character(classes[i]); !c.empty())
      throw Error(ErrorCode::kInvalidArgument, source + ": class " + std::to_string(i + 1) + " contains the control character " +
                                                   c + " (names are printable text)");
    auto [it, inserted] = seen.emplace(key, i);
    if (!inserted)
      throw Error(ErrorCode::kInvalidArgument,
                  source + ": duplicate class \"" + classes[i] + "\" (entries " + std::to_string(it->second + 1) +
                      " and " + std::to_string(i + 1) + ")");
  }
}

std::vector<std::string> parse_class_string(const std::string& text) {
  const std::string source = "--classes";
  if (!is_valid_utf8(text)) throw Error(ErrorCode::kInvalidArgument, source + ": not valid UTF-8");
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string name = trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (name.empty())
      throw Error(ErrorCode::kInvalidArgument,
                  source + ": empty class name (entry " + std::to_string(out.size() + 1) + " of \"" + text +
                      "\"); a name with a comma needs --classes-file");
    out.push_back(name);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  check_class_list(out, source);
  return out;
}

std::vector<std::string> parse_class_lines(const std::string& text_in, const std::string& source) {
  std::string text = text_in;
  if (text.size() >= 3 && static_cast<unsigned char>(text[0]) == 0xEF &&
      static_cast<unsigned char>(text[1]) == 0xBB && static_cast<unsigned char>(text[2]) == 0xBF)
    text.erase(0, 3);
  std::vector<std::string> out;
  std::vector<int> line_of;
  std::size_t start = 0;
  int line_no = 0;
  while (start <= text.size()) {
    // LF, CRLF and a lone CR (classic Mac OS) all end a line.
    std::size_t nl = text.find_first_of("\r\n", start);
    if (nl == std::string::npos) nl = text.size();
    ++line_no;
    const std::string line = text.substr(start, nl - start);
    start = nl + 1;
    if (nl < text.size() && text[nl] == '\r' && start < text.size() && text[start] == '\n') ++start;
    if (!is_valid_utf8(line))
      throw Error(ErrorCode::kInvalidArgument, source + ":" + std::to_string(line_no) + ": not valid UTF-8");
    const std::string name = trim(line);
    if (name.empty() || name[0] == '#') continue;
    if (const std::string c = control_character(name); !c.empty())
      throw Error(ErrorCode::kInvalidArgument, source + ":" + std::to_string(line_no) + ": the name contains the control character " +
                                                   c + " (names are printable text)");
    out.push_back(name);
    line_of.push_back(line_no);
  }
  if (out.empty()) throw Error(ErrorCode::kInvalidArgument, source + ": no class names (only blank or # lines)");
  // Re-check for duplicates here to report line numbers rather than entry numbers.
  std::unordered_map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto [it, inserted] = seen.emplace(ascii_lower(out[i]), i);
    if (!inserted)
      throw Error(ErrorCode::kInvalidArgument,
                  source + ":" + std::to_string(line_of[i]) + ": duplicate class \"" + out[i] + "\" (first on line " +
                      std::to_string(line_of[it->second]) + ")");
  }
  check_class_list(out, source);
  return out;
}

std::vector<std::string> read_class_file(const std::string& path) {
  if (path == "-") return parse_class_lines(read_stream(stdin, "<stdin>", kMaxClassFileBytes), "<stdin>");
  return parse_class_lines(read_text_file(path, kMaxClassFileBytes), path);
}

}  // namespace ovseg::cli
