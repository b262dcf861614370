// The subcommands of the `ovseg` tool. Each lives in its own cmd_<name>.cpp and only wires flags
// to the library; main.cpp owns global flags, logging and the mapping of errors to exit codes.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace ovseg::cli {

// Exit codes (documented in README and --help).
inline constexpr int kExitOk = 0;         // everything done
inline constexpr int kExitSomeFailed = 1; // some inputs failed (each named in the summary)
inline constexpr int kExitUsage = 2;      // usage error, or the model could not be loaded

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

}  // namespace ovseg::cli
