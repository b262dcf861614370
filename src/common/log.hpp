// The library's logger ("ovseg"). Internal header: spdlog stays out of the public API.
#pragma once

#include <spdlog/spdlog.h>

namespace ovseg::detail {

// The one logger of the library (created on first use, stderr by default).
spdlog::logger& log();

}  // namespace ovseg::detail
