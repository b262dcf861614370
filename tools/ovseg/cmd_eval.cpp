// PLACEHOLDER: replaced by the real subcommand implementation.
#include <cstdio>

#include "commands.hpp"

namespace ovseg::cli {

Command add_eval_command(CLI::App& parent) {
  Command c;
  c.app = parent.add_subcommand("eval", "(not implemented yet)");
  c.run = [] {
    std::fprintf(stderr, "ovseg eval: not implemented yet\n");
    return kExitUsage;
  };
  return c;
}

}  // namespace ovseg::cli
