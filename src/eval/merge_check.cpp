// The checks eval-merge makes before it sums shards: all of them, each naming the shard.
#include <map>
#include <set>
#include <string>

#include "ovseg/eval.hpp"

namespace ovseg::eval {

namespace {

std::string shard_name(const EvalState& s, const std::string& name) {
  return name + " (shard " + std::to_string(s.shard_index) + "/" + std::to_string(s.shard_count) + ")";
}

std::string short_value(const std::string& v) { return v.empty() ? "(none)" : v.size() > 16 ? v.substr(0, 16) + "…" : v; }

}  // namespace

std::vector<std::string> check_shards(const std::vector<EvalState>& shards, const std::vector<std::string>& names) {
  std::vector<std::string> problems;
  if (shards.empty()) return {"no shards given"};
  const auto name_of = [&](std::size_t i) { return shard_name(shards[i], i < names.size() ? names[i] : "#" + std::to_string(i)); };
  const EvalState& first = shards.front();
  const std::string first_name = name_of(0);
  std::map<int, std::vector<std::size_t>> by_index;
  std::set<int> counts;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const EvalState& s = shards[i];
    const std::string who = name_of(i);
    if (!s.merged_from.empty()) {
      problems.push_back(who + " is itself a merged result, not a shard");
      continue;
    }
    counts.insert(s.shard_count);
    by_index[s.shard_index].push_back(i);
    if (i > 0) {
      if (s.dataset != first.dataset || s.split != first.split)
        problems.push_back(who + " evaluated " + s.dataset + "/" + s.split + ", but " + first_name + " evaluated " +
                           first.dataset + "/" + first.split);
      if (s.class_names != first.class_names)
        problems.push_back(who + " has another class list (" + std::to_string(s.class_names.size()) + " names) than " +
                           first_name + " (" + std::to_string(first.class_names.size()) + ")");
      std::set<std::string> keys;
      for (const auto& kv : s.settings) keys.insert(kv.first);
      for (const auto& kv : first.settings) keys.insert(kv.first);
      for (const auto& key : keys) {
        const auto a = s.settings.find(key), b = first.settings.find(key);
        const std::string va = a == s.settings.end() ? "(unset)" : a->second;
        const std::string vb = b == first.settings.end() ? "(unset)" : b->second;
        if (va == vb) continue;
        if (key == "bundle_sha256")
          problems.push_back(who + " was evaluated with another model bundle (manifest sha256 " + short_value(va) +
                             ") than " + first_name + " (" + short_value(vb) + ")");
        else
          problems.push_back(who + " was run with " + key + "=" + va + ", but " + first_name + " with " + key + "=" +
                             vb);
      }
    }
    // Failed images count as attempted: the merge lists them (exit 1; metrics.json says incomplete)
    // but they do not block it.
    if (!s.all_attempted())
      problems.push_back(who + " is unfinished: " + std::to_string(s.finished.size() + s.failed.size()) + " of " +
                         std::to_string(s.pairs_total) + " images done (run it again with --resume)");
  }
  if (counts.size() > 1) {
    std::string list;
    for (int n : counts) list += (list.empty() ? "" : ", ") + std::to_string(n);
    problems.push_back("the shards belong to different splits (N = " + list + ")");
  } else if (counts.size() == 1) {
    const int n = *counts.begin();
    // Memory and output independent of N: the missing shards are counted, the first few named.
    std::size_t missing = 0;
    std::string first_missing;
    constexpr std::size_t kNamed = 10;
    for (int i = 0; i < n; ++i) {
      const auto it = by_index.find(i);
      if (it == by_index.end()) {
        if (missing++ < kNamed) first_missing += (first_missing.empty() ? "" : ", ") + std::to_string(i);
      } else if (it->second.size() > 1) {
        std::string dirs;
        for (std::size_t k : it->second) dirs += (dirs.empty() ? "" : " and ") + (k < names.size() ? names[k] : "#" + std::to_string(k));
        problems.push_back("shard " + std::to_string(i) + "/" + std::to_string(n) + " is given more than once: " + dirs);
      }
    }
    if (missing == 1) problems.push_back("shard " + first_missing + "/" + std::to_string(n) + " is missing");
    else if (missing > 1)
      problems.push_back(std::to_string(missing) + " of the " + std::to_string(n) + " shards are missing (" +
                         first_missing + (missing > kNamed ? ", ..." : "") + ")");
  }
  return problems;
}

}  // namespace ovseg::eval
