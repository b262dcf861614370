// Which shard a run is: "--shard I/N", or "--shard auto" from the environment of a Slurm array
// task or a Kubernetes Indexed Job; and the deterministic split of a list of names into shards.
#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <string>

#include "ovseg/eval.hpp"

namespace ovseg::eval {

namespace {

const char* lookup(const EnvLookup& env, const char* name) {
  const char* v = env ? env(name) : std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

// A non-negative decimal that fits an int; throws naming the variable otherwise.
long env_number(const EnvLookup& env, const char* name, bool required, const std::string& context) {
  const char* v = lookup(env, name);
  if (v == nullptr) {
    if (!required) return -1;
    throw Error(ErrorCode::kInvalidArgument, "--shard auto: " + context + " but " + name + " is not set");
  }
  const std::string s(v);
  if (s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw Error(ErrorCode::kInvalidArgument,
                "--shard auto: " + std::string(name) + "='" + s + "' is not a non-negative integer");
  return std::stol(s);
}

ShardSpec from_slurm(const EnvLookup& env, int shards) {
  const std::string ctx = "SLURM_ARRAY_TASK_ID is set";
  const long id = env_number(env, "SLURM_ARRAY_TASK_ID", true, ctx);
  const long min = env_number(env, "SLURM_ARRAY_TASK_MIN", true, ctx);
  const long count = env_number(env, "SLURM_ARRAY_TASK_COUNT", true, ctx);
  long step = env_number(env, "SLURM_ARRAY_TASK_STEP", false, ctx);
  const long max = env_number(env, "SLURM_ARRAY_TASK_MAX", false, ctx);
  if (step <= 0) step = 1;
  const std::string range = std::to_string(min) + "-" + (max >= 0 ? std::to_string(max) : std::string("?")) +
                            (step > 1 ? ":" + std::to_string(step) : std::string());
  // Tasks MIN, MIN+STEP, ..., MAX must be exactly COUNT tasks: a list like --array=1,3,5 (or a
  // resubmission of some indices only) cannot be mapped onto shards 0..COUNT-1.
  if (count < 1 || id < min || (id - min) % step != 0 || (id - min) / step >= count ||
      (max >= 0 && (max - min) / step + 1 != count))
    throw Error(ErrorCode::kInvalidArgument,
                "--shard auto: the Slurm array (tasks " + range + ", " + std::to_string(count) +
                    " in all, this one " + std::to_string(id) +
                    ") is not one contiguous range such as --array=0-" + std::to_string(count > 0 ? count - 1 : 0) +
                    " or --array=1-" + std::to_string(count) +
                    "; submit such a range, or pass --shard I/N explicitly (e.g. --shard $SLURM_ARRAY_TASK_ID/N)");
  if (shards > 0 && shards != count)
    throw Error(ErrorCode::kInvalidArgument, "--shards " + std::to_string(shards) + " disagrees with the Slurm array of " +
                                                 std::to_string(count) + " tasks");
  if (count > kMaxShards)
    throw Error(ErrorCode::kInvalidArgument, "--shard auto: a Slurm array of " + std::to_string(count) +
                                                 " tasks; at most " + std::to_string(kMaxShards) + " shards");
  ShardSpec s;
  s.index = static_cast<int>((id - min) / step);
  s.count = static_cast<int>(count);
  const char* job = lookup(env, "SLURM_ARRAY_JOB_ID");
  s.source = "Slurm array task " + std::to_string(id) + " of " + range + (job ? " (job " + std::string(job) + ")" : "");
  return s;
}

ShardSpec from_kubernetes(const EnvLookup& env, int shards) {
  const long index = env_number(env, "JOB_COMPLETION_INDEX", true, "JOB_COMPLETION_INDEX is set");
  long count = shards;
  std::string count_from = "--shards";
  if (count <= 0) {
    count = env_number(env, kShardCountEnv, false, "");
    count_from = kShardCountEnv;
  }
  if (count <= 0)
    throw Error(ErrorCode::kInvalidArgument,
                "--shard auto: a Kubernetes Indexed Job (JOB_COMPLETION_INDEX=" + std::to_string(index) +
                    ") does not tell the number of shards: pass --shards N or set " + kShardCountEnv +
                    " to the Job's .spec.completions");
  if (count > kMaxShards)
    throw Error(ErrorCode::kInvalidArgument, "--shard auto: " + std::to_string(count) + " shards (" + count_from +
                                                 "); at most " + std::to_string(kMaxShards));
  if (index >= count)
    throw Error(ErrorCode::kInvalidArgument, "--shard auto: JOB_COMPLETION_INDEX=" + std::to_string(index) +
                                                 " is not below the shard count " + std::to_string(count) + " (" +
                                                 count_from + "); it must equal the Job's .spec.completions");
  ShardSpec s;
  s.index = static_cast<int>(index);
  s.count = static_cast<int>(count);
  s.source = "Kubernetes Indexed Job, completion index " + std::to_string(index) + " of " + std::to_string(count);
  return s;
}

}  // namespace

ShardSpec resolve_shard(const std::string& text, int shards, const EnvLookup& env) {
  if (shards < 0) throw Error(ErrorCode::kInvalidArgument, "--shards must be positive");
  if (text == "auto") {
    if (lookup(env, "SLURM_ARRAY_TASK_ID")) return from_slurm(env, shards);
    if (lookup(env, "JOB_COMPLETION_INDEX")) return from_kubernetes(env, shards);
    std::string msg =
        "--shard auto: neither a Slurm array task (SLURM_ARRAY_TASK_ID is not set) nor a Kubernetes Indexed Job "
        "(JOB_COMPLETION_INDEX is not set)";
    if (lookup(env, "SLURM_JOB_ID"))
      msg += "; this Slurm job (" + std::string(lookup(env, "SLURM_JOB_ID")) +
             ") is not an array: submit it with sbatch --array=0-N-1";
    throw Error(ErrorCode::kInvalidArgument, msg + ", or pass --shard I/N");
  }
  const auto [index, count] = parse_shard(text);
  if (shards > 0 && shards != count)
    throw Error(ErrorCode::kInvalidArgument, "--shards " + std::to_string(shards) + " disagrees with --shard " + text);
  ShardSpec s;
  s.index = index;
  s.count = count;
  s.source = "--shard " + text;
  return s;
}

std::vector<std::size_t> shard_positions(const std::vector<std::string>& keys, int shard_index, int shard_count) {
  if (shard_count < 1 || shard_index < 0 || shard_index >= shard_count)
    throw Error(ErrorCode::kInvalidArgument, "invalid shard " + std::to_string(shard_index) + "/" +
                                                 std::to_string(shard_count) + " (need 0 <= I < N)");
  std::vector<std::size_t> order(keys.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  // Byte order of the keys (ties, which callers rule out, by position): independent of the order
  // the inputs were given or listed in.
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return keys[a] < keys[b]; });
  std::vector<std::size_t> out;
  for (std::size_t rank = static_cast<std::size_t>(shard_index); rank < order.size();
       rank += static_cast<std::size_t>(shard_count))
    out.push_back(order[rank]);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace ovseg::eval
