// Wall-clock stage timings (Result::timings, SamReport): one clock and one conversion for every
// stage that reports milliseconds.
#pragma once

#include <chrono>

namespace ovseg::detail {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace ovseg::detail
