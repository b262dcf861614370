// --shard auto (Slurm array tasks, Kubernetes Indexed Jobs), the split of a list of names into
// shards, and the checks eval-merge makes before it merges.
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "eval/eval_test_util.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::eval {
namespace {

// A fake environment.
struct Env {
  std::map<std::string, std::string> vars;
  EnvLookup lookup() const {
    return [this](const char* name) -> const char* {
      const auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(ResolveShard, ExplicitIndexKeepsWorkingWhateverTheEnvironment) {
  const Env env{{{"SLURM_ARRAY_TASK_ID", "5"}, {"SLURM_ARRAY_TASK_MIN", "0"}, {"SLURM_ARRAY_TASK_COUNT", "8"}}};
  const ShardSpec s = resolve_shard("2/4", 0, env.lookup());
  EXPECT_EQ(s.index, 2);
  EXPECT_EQ(s.count, 4);
  EXPECT_EQ(resolve_shard("0/1", 0, env.lookup()).count, 1);
  EXPECT_EQ(resolve_shard("2/4", 4, env.lookup()).index, 2);
  EXPECT_TRUE(contains(error_of([&] { resolve_shard("2/4", 3, env.lookup()); }), "--shards 3"));
  EXPECT_THROW(resolve_shard("4/4", 0, env.lookup()), Error);
  EXPECT_THROW(resolve_shard("Auto", 0, env.lookup()), Error);
}

TEST(ResolveShard, SlurmArrayTaskCountsFromTheArrayMinimum) {
  // --array=0-2
  for (int id = 0; id < 3; ++id) {
    const Env env{{{"SLURM_ARRAY_TASK_ID", std::to_string(id)},
                   {"SLURM_ARRAY_TASK_MIN", "0"},
                   {"SLURM_ARRAY_TASK_MAX", "2"},
                   {"SLURM_ARRAY_TASK_COUNT", "3"},
                   {"SLURM_ARRAY_TASK_STEP", "1"},
                   {"SLURM_ARRAY_JOB_ID", "812"}}};
    const ShardSpec s = resolve_shard("auto", 0, env.lookup());
    EXPECT_EQ(s.index, id);
    EXPECT_EQ(s.count, 3);
    EXPECT_TRUE(contains(s.source, "Slurm")) << s.source;
    EXPECT_TRUE(contains(s.source, "812")) << s.source;
  }
  // --array=1-8: task 1 is shard 0, task 8 is shard 7.
  Env env{{{"SLURM_ARRAY_TASK_ID", "8"},
           {"SLURM_ARRAY_TASK_MIN", "1"},
           {"SLURM_ARRAY_TASK_MAX", "8"},
           {"SLURM_ARRAY_TASK_COUNT", "8"}}};
  EXPECT_EQ(resolve_shard("auto", 0, env.lookup()).index, 7);
  env.vars["SLURM_ARRAY_TASK_ID"] = "1";
  EXPECT_EQ(resolve_shard("auto", 0, env.lookup()).index, 0);
  EXPECT_EQ(resolve_shard("auto", 8, env.lookup()).count, 8);  // --shards agrees
  EXPECT_TRUE(contains(error_of([&] { resolve_shard("auto", 4, env.lookup()); }), "8 tasks"));
  // --array=10-40:10 (4 tasks)
  const Env stepped{{{"SLURM_ARRAY_TASK_ID", "30"},
                     {"SLURM_ARRAY_TASK_MIN", "10"},
                     {"SLURM_ARRAY_TASK_MAX", "40"},
                     {"SLURM_ARRAY_TASK_STEP", "10"},
                     {"SLURM_ARRAY_TASK_COUNT", "4"}}};
  const ShardSpec s = resolve_shard("auto", 0, stepped.lookup());
  EXPECT_EQ(s.index, 2);
  EXPECT_EQ(s.count, 4);
}

TEST(ResolveShard, SlurmArraysThatAreNotOneRangeAreRefused) {
  // --array=1,3,5: Slurm reports MIN=1 MAX=5 STEP=1 COUNT=3.
  const Env list{{{"SLURM_ARRAY_TASK_ID", "3"},
                  {"SLURM_ARRAY_TASK_MIN", "1"},
                  {"SLURM_ARRAY_TASK_MAX", "5"},
                  {"SLURM_ARRAY_TASK_STEP", "1"},
                  {"SLURM_ARRAY_TASK_COUNT", "3"}}};
  const std::string e = error_of([&] { resolve_shard("auto", 0, list.lookup()); });
  EXPECT_TRUE(contains(e, "contiguous")) << e;
  EXPECT_TRUE(contains(e, "--shard I/N")) << e;
  // A missing or malformed variable is named.
  const Env no_count{{{"SLURM_ARRAY_TASK_ID", "0"}, {"SLURM_ARRAY_TASK_MIN", "0"}}};
  EXPECT_TRUE(contains(error_of([&] { resolve_shard("auto", 0, no_count.lookup()); }), "SLURM_ARRAY_TASK_COUNT"));
  const Env bad{{{"SLURM_ARRAY_TASK_ID", "x1"}, {"SLURM_ARRAY_TASK_MIN", "0"}, {"SLURM_ARRAY_TASK_COUNT", "2"}}};
  EXPECT_TRUE(contains(error_of([&] { resolve_shard("auto", 0, bad.lookup()); }), "SLURM_ARRAY_TASK_ID='x1'"));
}

TEST(ResolveShard, KubernetesIndexedJobTakesTheCountFromShardsOrTheEnvironment) {
  Env env{{{"JOB_COMPLETION_INDEX", "3"}}};
  const std::string e = error_of([&] { resolve_shard("auto", 0, env.lookup()); });
  EXPECT_TRUE(contains(e, "--shards N")) << e;
  EXPECT_TRUE(contains(e, kShardCountEnv)) << e;
  ShardSpec s = resolve_shard("auto", 5, env.lookup());
  EXPECT_EQ(s.index, 3);
  EXPECT_EQ(s.count, 5);
  EXPECT_TRUE(contains(s.source, "Kubernetes")) << s.source;
  env.vars[kShardCountEnv] = "4";
  s = resolve_shard("auto", 0, env.lookup());
  EXPECT_EQ(s.index, 3);
  EXPECT_EQ(s.count, 4);
  EXPECT_EQ(resolve_shard("auto", 6, env.lookup()).count, 6);  // --shards wins over the variable
  env.vars[kShardCountEnv] = "3";
  EXPECT_TRUE(contains(error_of([&] { resolve_shard("auto", 0, env.lookup()); }), "not below"));
}

TEST(ResolveShard, AutoOutsideAnArrayFailsClearly) {
  const Env none;
  const std::string e = error_of([&] { resolve_shard("auto", 0, none.lookup()); });
  EXPECT_TRUE(contains(e, "SLURM_ARRAY_TASK_ID")) << e;
  EXPECT_TRUE(contains(e, "JOB_COMPLETION_INDEX")) << e;
  const Env plain_job{{{"SLURM_JOB_ID", "77"}, {"SLURM_ARRAY_TASK_ID", ""}}};
  const std::string j = error_of([&] { resolve_shard("auto", 0, plain_job.lookup()); });
  EXPECT_TRUE(contains(j, "not an array")) << j;
  EXPECT_TRUE(contains(j, "--array")) << j;
}

TEST(ShardPositions, SortedKeysSplitIntoDisjointShardsWhateverTheirOrder) {
  const std::vector<std::string> keys = {"b/2", "a", "c", "b/10", "a/x", "z", "b/1"};
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::string> shuffled = {"z", "b/1", "a", "b/2", "c", "a/x", "b/10"};
  std::multiset<std::string> all;
  for (int s = 0; s < 3; ++s) {
    const auto pos = shard_positions(keys, s, 3);
    EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
    std::set<std::string> mine, mine_shuffled;
    for (std::size_t p : pos) mine.insert(keys[p]);
    for (std::size_t p : shard_positions(shuffled, s, 3)) mine_shuffled.insert(shuffled[p]);
    EXPECT_EQ(mine, mine_shuffled) << "shard " << s;
    std::set<std::string> expected;
    for (std::size_t r = static_cast<std::size_t>(s); r < sorted.size(); r += 3) expected.insert(sorted[r]);
    EXPECT_EQ(mine, expected) << "shard " << s;
    all.insert(mine.begin(), mine.end());
  }
  EXPECT_EQ(all, std::multiset<std::string>(keys.begin(), keys.end()));
  EXPECT_EQ(shard_positions(keys, 0, 1).size(), keys.size());
  EXPECT_TRUE(shard_positions({"a"}, 1, 2).empty());
  EXPECT_THROW(shard_positions(keys, 3, 3), Error);
}

using test::shard_state;

TEST(CheckShards, AFinishedConsistentSetHasNoProblems) {
  std::vector<EvalState> v = {shard_state(1, 3, 2, 2), shard_state(0, 3, 2, 1), shard_state(2, 3, 1, 1)};
  // An image that failed was attempted: the merge lists it, but the shard is finished.
  v[1].failed.push_back({"img0_1", "corrupt"});
  const auto p = check_shards(v, {"d1", "d0", "d2"});
  EXPECT_TRUE(p.empty()) << p.front();
}

TEST(CheckShards, EveryProblemIsNamed) {
  std::vector<EvalState> v = {shard_state(0, 4, 2, 2), shard_state(1, 4, 2, 1), shard_state(1, 4, 2, 2),
                              shard_state(3, 4, 2, 2)};
  v[3].settings["bundle_sha256"] = "fedcba9876543210ffff";
  v[2].class_names = {"a", "c"};
  const auto p = check_shards(v, {"out/s0", "out/s1", "out/s1again", "out/s3"});
  std::string all;
  for (const auto& s : p) all += s + "\n";
  EXPECT_TRUE(contains(all, "out/s1 (shard 1/4) is unfinished: 1 of 2")) << all;
  EXPECT_TRUE(contains(all, "shard 1/4 is given more than once: out/s1 and out/s1again")) << all;
  EXPECT_TRUE(contains(all, "shard 2/4 is missing")) << all;
  EXPECT_TRUE(contains(all, "out/s3 (shard 3/4) was evaluated with another model bundle")) << all;
  EXPECT_TRUE(contains(all, "out/s1again (shard 1/4) has another class list")) << all;
  EXPECT_EQ(p.size(), 5u) << all;

  std::vector<EvalState> w = {shard_state(0, 2, 1, 1), shard_state(1, 3, 1, 1)};
  w[1].settings["mode"] = "demo";
  w[1].dataset = "ade847";
  all.clear();
  for (const auto& s : check_shards(w, {"x", "y"})) all += s + "\n";
  EXPECT_TRUE(contains(all, "different splits (N = 2, 3)")) << all;
  EXPECT_TRUE(contains(all, "y (shard 1/3) was run with mode=demo, but x (shard 0/2) with mode=eval")) << all;
  EXPECT_TRUE(contains(all, "y (shard 1/3) evaluated ade847/validation")) << all;

  EvalState merged = shard_state(0, 1, 1, 1);
  merged.merged_from = {"0/2", "1/2"};
  EXPECT_TRUE(contains(check_shards({merged}, {"m"}).at(0), "merged result"));
}

}  // namespace
}  // namespace ovseg::eval
