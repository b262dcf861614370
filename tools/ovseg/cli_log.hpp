// The CLI's log lines go through the library's logger (ovseg::log_message), so -q/-v, the line
// format and a log callback apply to both alike. fmt-style formatting: log.info("{} images", n).
#pragma once

#include <string>
#include <utility>

#include <spdlog/fmt/fmt.h>

#include "ovseg/ovseg.hpp"

namespace ovseg::cli {

struct CliLog {
  template <class... Args>
  void debug(fmt::format_string<Args...> format, Args&&... args) const {
    log_message(LogLevel::kDebug, fmt::format(format, std::forward<Args>(args)...));
  }
  template <class... Args>
  void info(fmt::format_string<Args...> format, Args&&... args) const {
    log_message(LogLevel::kInfo, fmt::format(format, std::forward<Args>(args)...));
  }
  template <class... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) const {
    log_message(LogLevel::kWarn, fmt::format(format, std::forward<Args>(args)...));
  }
  template <class... Args>
  void error(fmt::format_string<Args...> format, Args&&... args) const {
    log_message(LogLevel::kError, fmt::format(format, std::forward<Args>(args)...));
  }
};

inline const CliLog& cli_log() {
  static const CliLog log;
  return log;
}

// A name (file name, class name, a reason quoting one) as it may be printed on a terminal: control
// characters (C0, DEL; ESC starts terminal escape sequences, a newline would forge a line) become
// \xNN, C1 controls (U+0080..U+009F) \u00NN; everything else, UTF-8 included, is kept.
inline std::string printable(const std::string& s) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(s[i + 1]) <= 0x9f) {
      const auto d = static_cast<unsigned char>(s[++i]);
      out += "\\u00";
      out += kHex[d >> 4];
      out += kHex[d & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace ovseg::cli
