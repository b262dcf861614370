// PLACEHOLDER: replaced by the real subcommand implementation.
#include <cstdio>

#include "commands.hpp"

namespace ovseg::cli {

Command add_info_command(CLI::App& parent) {
  Command c;
  c.app = parent.add_subcommand("info", "(not implemented yet)");
  c.run = [] {
    std::fprintf(stderr, "ovseg info: not implemented yet\n");
    return kExitUsage;
  };
  return c;
}

}  // namespace ovseg::cli
