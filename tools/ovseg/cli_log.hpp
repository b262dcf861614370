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

}  // namespace ovseg::cli
