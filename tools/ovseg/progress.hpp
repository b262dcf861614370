// Progress reporting for long CLI jobs: a one-line bar (done/total, items/s, ETA) redrawn in
// place on a terminal, and plain log lines every few seconds when stderr is not a terminal.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include <unistd.h>

namespace ovseg::cli {

class Progress {
 public:
  Progress(std::string what, long total, bool enabled = true)
      : what_(std::move(what)), total_(total), enabled_(enabled), tty_(::isatty(2) != 0),
        start_(Clock::now()), last_(start_) {}

  // Call after each finished item.
  void step(const std::string& item = {}) {
    ++done_;
    if (!enabled_) return;
    const auto now = Clock::now();
    const double since_last = std::chrono::duration<double>(now - last_).count();
    if (!tty_ && since_last < 5.0 && done_ != total_) return;
    last_ = now;
    draw(item);
  }
  void finish() {
    if (enabled_ && tty_) std::fputc('\n', stderr);
  }
  double elapsed_s() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  double rate() const { const double e = elapsed_s(); return e > 0 ? done_ / e : 0.0; }
  long done() const { return done_; }

 private:
  using Clock = std::chrono::steady_clock;
  void draw(const std::string& item) {
    const double rate_now = rate();
    const double eta = rate_now > 0 ? (total_ - done_) / rate_now : 0.0;
    char stats[160];
    std::snprintf(stats, sizeof stats, "%ld/%ld  %.2f %s/s  ETA %s", done_, total_, rate_now,
                  what_.c_str(), format_duration(eta).c_str());
    if (tty_) {
      const int width = 30;
      const int filled = total_ > 0 ? static_cast<int>(width * done_ / total_) : width;
      std::string bar(filled, '#');
      bar.append(width - filled, '.');
      std::fprintf(stderr, "\r[%s] %s  %.40s\x1b[K", bar.c_str(), stats, item.c_str());
    } else {
      std::fprintf(stderr, "progress: %s%s%s\n", stats, item.empty() ? "" : "  last: ", item.c_str());
    }
    std::fflush(stderr);
  }
  static std::string format_duration(double s) {
    const long t = static_cast<long>(s + 0.5);
    char buf[32];
    if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
    return buf;
  }

  std::string what_;
  long total_;
  long done_ = 0;
  bool enabled_;
  bool tty_;
  Clock::time_point start_, last_;
};

}  // namespace ovseg::cli
