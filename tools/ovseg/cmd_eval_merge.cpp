// `ovseg eval-merge`: sums the confusion matrices of `ovseg eval --shard I/N` runs into the numbers
// of one unsharded run.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "cli_log.hpp"
#include "ovseg/eval.hpp"

namespace fs = std::filesystem;

namespace ovseg::cli {
namespace {

struct MergeArgs {
  std::string output;
  std::vector<std::string> shard_dirs;
  bool partial = false;
};

int run_merge(const MergeArgs& a, const CLI::App& root) {
  const bool quiet = root.count("--quiet") > 0;
  // 0. The output is not one of the inputs: merging into a shard's folder would overwrite its state.
  {
    std::error_code ec;
    const fs::path out = fs::weakly_canonical(a.output, ec);
    for (const auto& dir : a.shard_dirs) {
      const fs::path in = fs::weakly_canonical(fs::is_directory(dir) ? fs::path(dir) : fs::path(dir).parent_path(), ec);
      if (!ec && out == in)
        throw Error(ErrorCode::kInvalidArgument, "eval-merge: -o " + a.output + " is the shard " + dir +
                                                     " given as input; merge into another directory");
    }
  }
  // 1. Every shard's checkpoint, and every reason not to merge them, before anything is written.
  std::vector<eval::EvalState> shards;
  std::vector<std::string> names;
  std::vector<std::string> blockers;
  for (const auto& dir : a.shard_dirs) {
    // A shard's output directory, or its checkpoint file itself.
    const fs::path p = fs::is_directory(dir) ? fs::path(dir) / eval::kCheckpointFile : fs::path(dir);
    if (!fs::exists(p)) {
      blockers.push_back(dir + ": no " + std::string(eval::kCheckpointFile) +
                         " (the shard has not started, or this is not an 'ovseg eval' output)");
      continue;
    }
    shards.push_back(eval::load_state(p.string()));  // a malformed checkpoint: exit 2, naming it
    names.push_back(dir);
  }
  if (!shards.empty()) {
    const auto found = eval::check_shards(shards, names);
    blockers.insert(blockers.end(), found.begin(), found.end());
  }
  if (!blockers.empty() && (!a.partial || shards.empty())) {
    for (const auto& b : blockers) std::fprintf(stderr, "eval-merge: %s\n", printable(b).c_str());
    std::fprintf(stderr, "eval-merge: nothing merged (%zu problem%s)%s\n", blockers.size(),
                 blockers.size() == 1 ? "" : "s",
                 a.partial ? "" : "; --partial merges what is there into numbers marked incomplete");
    return kExitUsage;
  }

  // 2. The sum. With --partial the blockers are listed in the reports as what makes it incomplete.
  std::vector<std::string> problems;
  eval::EvalState merged = eval::merge_states(shards, &problems);
  for (std::size_t i = 0; i < merged.merged_from.size() && i < names.size(); ++i)
    merged.merged_from[i] += ": " + names[i];
  if (a.partial) problems = blockers;
  const eval::Metrics m = eval::compute_metrics(merged.cm);
  eval::save_state((fs::path(a.output) / eval::kCheckpointFile).string(), merged);
  eval::write_reports(a.output, merged, m, problems);
  // Shards run with --save-json: one sem_seg_predictions.json over all of them.
  std::vector<std::string> json_parts;
  for (const auto& dir : a.shard_dirs) {
    const fs::path parts = (fs::is_directory(dir) ? fs::path(dir) : fs::path(dir).parent_path()) /
                           eval::kSemSegJsonPartsDir;
    if (fs::is_directory(parts)) json_parts.push_back(parts.string());
  }
  if (!json_parts.empty()) {
    const auto missing = eval::write_sem_seg_json(a.output, json_parts, merged.finished);
    if (!missing.empty())
      std::fprintf(stderr, "eval-merge: %s lacks %zu evaluated images (shards without --save-json), first: %s\n",
                   eval::kSemSegJsonFile, missing.size(), missing.front().c_str());
  }

  const std::size_t skipped = merged.unpaired.size() + merged.failed.size();
  if (!quiet)
    std::fprintf(stderr, "eval-merge: %zu shards, %zu images evaluated, %zu skipped or failed; reports in %s\n",
                 shards.size(), merged.finished.size(), skipped, a.output.c_str());
  for (const auto& p : problems) std::fprintf(stderr, "eval-merge: incomplete: %s\n", printable(p).c_str());
  if (skipped > 0) {
    std::fprintf(stderr, "eval-merge: %zu files skipped or failed:\n", skipped);
    for (const auto& p : merged.unpaired)
      std::fprintf(stderr, "  %s: %s\n", printable(p.name).c_str(), printable(p.reason).c_str());
    for (const auto& p : merged.failed)
      std::fprintf(stderr, "  %s: %s\n", printable(p.name).c_str(), printable(p.reason).c_str());
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
  app->add_flag("--partial", args->partial,
                "Merge what is there when shards are missing or unfinished (the reports say so, exit 1); "
                "inconsistent shards are never merged");
  app->footer(
      "Before merging, every shard must come from the same model bundle (checksum), dataset, split, class\n"
      "list and settings, every index 0..N-1 must be there exactly once, and every shard must be finished.\n"
      "Otherwise each problem is named, nothing is written, and the exit code is 2.");
  c.run = [args, &parent] { return run_merge(*args, parent); };
  return c;
}

}  // namespace ovseg::cli
