// PLACEHOLDER: replaced by the real subcommand implementation.
#include <cstdio>

#include "commands.hpp"

namespace ovseg::cli {

Command add_segment_command(CLI::App& parent) {
  Command c;
  c.app = parent.add_subcommand("segment", "(not implemented yet)");
  c.run = [] {
    std::fprintf(stderr, "ovseg segment: not implemented yet\n");
    return kExitUsage;
  };
  return c;
}

}  // namespace ovseg::cli
