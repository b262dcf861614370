// SIGINT / SIGTERM for long CLI runs (segment, eval), handled the same way everywhere: the first
// signal asks the run to stop after the image in flight (stop_requested() turns true; the model's
// progress callback then cancels between stages), a second one of the same kind terminates at
// once (the default action). The previous handlers come back when the scope ends.
#pragma once

namespace ovseg::cli {

class StopSignals {
 public:
  StopSignals();   // installs the handlers and clears the flag
  ~StopSignals();  // restores the previous handlers
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // True once SIGINT or SIGTERM arrived.
  static bool stop_requested() noexcept;
  // The signal that arrived first (0 when none).
  static int signal_number() noexcept;

 private:
  using Handler = void (*)(int);
  Handler previous_int_;
  Handler previous_term_;
};

}  // namespace ovseg::cli
