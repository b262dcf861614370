// The subcommands of the `ovseg` tool. Each lives in its own cmd_<name>.cpp and only wires flags
// to the library; main.cpp owns global flags, logging and the mapping of errors to exit codes.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "ovseg/ovseg.hpp"

namespace ovseg::cli {

// Exit codes (documented in README and --help).
inline constexpr int kExitOk = 0;          // everything done
inline constexpr int kExitSomeFailed = 1;  // some inputs failed (each named in the summary)
// Usage error (a bad option or class list) or a model bundle that cannot be loaded: both are
// fixed by changing the command line, and a bad bundle is refused with exit 2 when it is loaded.
inline constexpr int kExitUsage = 2;
inline constexpr int kExitData = 4;        // a file or directory that the whole run needs is unreadable or bad
inline constexpr int kExitRuntime = 5;     // the computation failed (out of memory, no CUDA, ...)
inline constexpr int kExitInterrupted = 130;  // SIGINT / SIGTERM, after the image in flight

// The exit code of a run that stopped with this error.
constexpr int exit_code(ovseg::ErrorCode code) {
  switch (code) {
    case ovseg::ErrorCode::kInvalidArgument: return kExitUsage;
    case ovseg::ErrorCode::kBadModel: return kExitUsage;
    case ovseg::ErrorCode::kIo:
    case ovseg::ErrorCode::kBadImage:
    case ovseg::ErrorCode::kBadData: return kExitData;
    case ovseg::ErrorCode::kRuntime: return kExitRuntime;
    case ovseg::ErrorCode::kCancelled: return kExitInterrupted;
  }
  return kExitRuntime;
}

struct Command {
  CLI::App* app = nullptr;     // the subcommand
  std::function<int()> run;    // runs it after parsing; returns the exit code
};

Command add_tokenize_command(CLI::App& parent);
Command add_info_command(CLI::App& parent);
Command add_segment_command(CLI::App& parent);
Command add_eval_command(CLI::App& parent);
Command add_eval_merge_command(CLI::App& parent);
Command add_bench_command(CLI::App& parent);
Command add_masks_command(CLI::App& parent);
Command add_serve_command(CLI::App& parent);

}  // namespace ovseg::cli
