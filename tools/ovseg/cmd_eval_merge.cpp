// PLACEHOLDER: replaced by the real subcommand implementation.
#include <cstdio>

#include "commands.hpp"

namespace ovseg::cli {

Command add_eval_merge_command(CLI::App& parent) {
  Command c;
  c.app = parent.add_subcommand("eval-merge", "(not implemented yet)");
  c.run = [] {
    std::fprintf(stderr, "ovseg eval-merge: not implemented yet\n");
    return kExitUsage;
  };
  return c;
}

}  // namespace ovseg::cli
