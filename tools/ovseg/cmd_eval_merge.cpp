// `ovseg eval-merge`: sums the confusion matrices of `ovseg eval --shard I/N` runs into the numbers
// of one unsharded run.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "common/log.hpp"
#include "ovseg/eval.hpp"

namespace fs = std::filesystem;

namespace ovseg::cli {
namespace {

struct MergeArgs {
  std::string output;
  std::vector<std::string> shard_dirs;
};

int run_merge(const MergeArgs& a, const CLI::App& root) {
  const bool quiet = root.count("--quiet") > 0;
  std::vector<eval::EvalState> shards;
  for (const auto& dir : a.shard_dirs) {
    // A shard's output directory, or its checkpoint file itself.
    const fs::path p = fs::is_directory(dir) ? fs::path(dir) / eval::kCheckpointFile : fs::path(dir);
    if (!fs::exists(p)) throw Error(ErrorCode::kIo, p.string() + ": no checkpoint (is this an 'ovseg eval' output?)");
    shards.push_back(eval::load_state(p.string()));
  }
  std::vector<std::string> problems;
  eval::EvalState merged = eval::merge_states(shards, &problems);
  for (std::size_t i = 0; i < merged.merged_from.size() && i < a.shard_dirs.size(); ++i)
    merged.merged_from[i] += ": " + a.shard_dirs[i];
  const eval::Metrics m = eval::compute_metrics(merged.cm);
  eval::save_state((fs::path(a.output) / eval::kCheckpointFile).string(), merged);
  eval::write_reports(a.output, merged, m, problems);

  const std::size_t skipped = merged.unpaired.size() + merged.failed.size();
  if (!quiet)
    std::fprintf(stderr, "eval-merge: %zu shards, %zu images evaluated, %zu skipped or failed; reports in %s\n",
                 shards.size(), merged.finished.size(), skipped, a.output.c_str());
  for (const auto& p : problems) std::fprintf(stderr, "eval-merge: incomplete: %s\n", p.c_str());
  if (skipped > 0) {
    std::fprintf(stderr, "eval-merge: %zu files skipped or failed:\n", skipped);
    for (const auto& p : merged.unpaired) std::fprintf(stderr, "  %s: %s\n", p.name.c_str(), p.reason.c_str());
    for (const auto& p : merged.failed) std::fprintf(stderr, "  %s: %s\n", p.name.c_str(), p.reason.c_str());
  }
  std::printf("mIoU_gt_classes=%.2f\n%s\n", m.miou_gt_classes, eval::headline(m).c_str());
  std::fflush(stdout);
  return problems.empty() && skipped == 0 ? kExitOk : kExitSomeFailed;
}

}  // namespace

Command add_eval_merge_command(CLI::App& parent) {
  auto args = std::make_shared<MergeArgs>();
  Command c;
  CLI::App* app = parent.add_subcommand(
      "eval-merge", "Merge the outputs of 'ovseg eval --shard I/N' runs into the numbers of one run");
  c.app = app;
  app->add_option("-o,--output", args->output, "Output directory for the merged reports")->required();
  app->add_option("shards", args->shard_dirs, "Output directories (or checkpoint.json files) of the shard runs")
      ->required()
      ->check(CLI::ExistingPath);
  c.run = [args, &parent] { return run_merge(*args, parent); };
  return c;
}

}  // namespace ovseg::cli
