#include "stop_signal.hpp"

#include <atomic>
#include <csignal>

namespace ovseg::cli {
namespace {

std::atomic<int> g_signal{0};

extern "C" void on_stop_signal(int sig) {
  int none = 0;
  g_signal.compare_exchange_strong(none, sig);
  std::signal(sig, SIG_DFL);  // a second one of the same kind ends the process
}

}  // namespace

StopSignals::StopSignals() {
  g_signal.store(0);
  previous_int_ = std::signal(SIGINT, on_stop_signal);
  previous_term_ = std::signal(SIGTERM, on_stop_signal);
}

StopSignals::~StopSignals() {
  std::signal(SIGINT, previous_int_);
  std::signal(SIGTERM, previous_term_);
}

bool StopSignals::stop_requested() noexcept { return g_signal.load() != 0; }

int StopSignals::signal_number() noexcept { return g_signal.load(); }

}  // namespace ovseg::cli
