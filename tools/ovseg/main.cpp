// ovseg: command-line front end. Results go to stdout or files; logs and progress to stderr.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "ovseg/ovseg.hpp"

int main(int argc, char** argv) {
  using namespace ovseg::cli;
  CLI::App app{"ovseg " OVSEG_VERSION_STRING
               " - open-vocabulary semantic segmentation (ov-seg: MaskFormer proposals + mask-adapted CLIP)",
               "ovseg"};
  app.require_subcommand(1);
  app.set_version_flag("-V,--version", std::string("ovseg ") + ovseg::version());
  app.footer(
      "Exit codes: 0 all done; 1 some inputs failed (named in the summary); 2 usage error or the model could\n"
      "not be loaded; 4 a file the whole run needs is unreadable or bad; 5 the computation failed;\n"
      "130 interrupted.\n"
      "Run 'ovseg SUBCOMMAND --help' for the options of a subcommand.");
  int verbose = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbose, "More log output on stderr (-vv: trace)");
  app.add_flag("-q,--quiet", quiet, "Only errors on stderr");
  app.fallthrough();  // -q / -v are accepted after the subcommand too

  std::vector<Command> commands = {add_segment_command(app),   add_eval_command(app),
                                   add_eval_merge_command(app), add_info_command(app),
                                   add_tokenize_command(app),  add_bench_command(app),
                                   add_masks_command(app),     add_serve_command(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }

  ovseg::set_log_level(quiet ? ovseg::LogLevel::kError
                       : verbose >= 2 ? ovseg::LogLevel::kTrace
                       : verbose == 1 ? ovseg::LogLevel::kDebug
                                      : ovseg::LogLevel::kInfo);
  try {
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const ovseg::Error& e) {
    std::fprintf(stderr, "ovseg: error: %s\n", e.what());
    return exit_code(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ovseg: error: %s\n", e.what());
    return kExitRuntime;
  }
  return kExitUsage;
}
