// Checkpoints of an evaluation (one JSON file, written atomically) and the merge of shards.
#include <algorithm>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "common/fs_util.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::eval {

namespace {

constexpr const char* kFormat = "ovseg-eval-checkpoint";
constexpr std::int64_t kMaxPixelCount = std::int64_t{1} << 53;
constexpr int kFormatVersion = 1;

using nlohmann::json;

json problems_to_json(const std::vector<FileProblem>& v) {
  json a = json::array();
  for (const auto& p : v) a.push_back({{"name", p.name}, {"reason", p.reason}});
  return a;
}

std::vector<FileProblem> problems_from_json(const json& a) {
  std::vector<FileProblem> v;
  for (const auto& p : a) v.push_back({p.at("name").get<std::string>(), p.at("reason").get<std::string>()});
  return v;
}

json timings_to_json(const TimingTotals& t) {
  json j = {{"images", t.images},
            {"total_ms", t.model.total_ms},
            {"step_ms", t.step_ms},
            {"wall_s", t.wall_s},
            {"text_prepare_ms", t.text_prepare_ms}};
  for (const StageInfo& st : kStageTable) j[std::string(st.name) + "_ms"] = t.model.*st.ms;
  return j;
}

TimingTotals timings_from_json(const json& j) {
  TimingTotals t;
  t.images = j.at("images").get<std::int64_t>();
  for (const StageInfo& st : kStageTable) t.model.*st.ms = j.at(std::string(st.name) + "_ms").get<double>();
  t.model.total_ms = j.at("total_ms").get<double>();
  t.step_ms = j.at("step_ms").get<double>();
  t.wall_s = j.at("wall_s").get<double>();
  t.text_prepare_ms = j.at("text_prepare_ms").get<double>();
  return t;
}

void add_timings(TimingTotals& a, const TimingTotals& b) {
  a.images += b.images;
  a.model += b.model;
  a.step_ms += b.step_ms;
  a.wall_s += b.wall_s;
  a.text_prepare_ms += b.text_prepare_ms;
}

}  // namespace

void save_state(const std::string& path, const EvalState& s) {
  json j;
  j["format"] = kFormat;
  j["version"] = kFormatVersion;
  j["dataset"] = s.dataset;
  j["split"] = s.split;
  j["shard"] = {{"index", s.shard_index}, {"count", s.shard_count}};
  j["class_names"] = s.class_names;
  j["settings"] = s.settings;
  j["pairs_total"] = s.pairs_total;
  j["finished"] = s.finished;
  j["failed"] = problems_to_json(s.failed);
  j["unpaired"] = problems_to_json(s.unpaired);
  j["images_left_out"] = s.images_left_out;
  j["timings"] = timings_to_json(s.timings);
  j["merged_from"] = s.merged_from;
  // Sparse: the 848² matrix of A-847 is mostly zeros. [pred, gt, count] with count as int64.
  json entries = json::array();
  const int n = s.cm.size();
  for (int p = 0; p < n; ++p)
    for (int g = 0; g < n; ++g)
      if (const auto c = s.cm.at(p, g); c != 0) entries.push_back(json::array({p, g, c}));
  j["confusion"] = {{"num_classes", s.cm.num_classes()}, {"layout", "[pred, gt, count]"}, {"entries", entries}};
  detail::write_file_atomic(path, j.dump() + "\n");
}

EvalState load_state(const std::string& path) {
  const std::string text = detail::read_text_file(path);
  EvalState s;
  try {
    const json j = json::parse(text);
    if (j.at("format").get<std::string>() != kFormat) throw Error(ErrorCode::kBadData, "not an ovseg checkpoint");
    if (j.at("version").get<int>() != kFormatVersion)
      throw Error(ErrorCode::kBadData, "unsupported checkpoint version " + j.at("version").dump());
    s.dataset = j.at("dataset").get<std::string>();
    s.split = j.at("split").get<std::string>();
    s.shard_index = j.at("shard").at("index").get<int>();
    s.shard_count = j.at("shard").at("count").get<int>();
    s.class_names = j.at("class_names").get<std::vector<std::string>>();
    s.settings = j.at("settings").get<std::map<std::string, std::string>>();
    s.pairs_total = j.at("pairs_total").get<std::int64_t>();
    s.finished = j.at("finished").get<std::vector<std::string>>();
    {
      std::set<std::string> names;
      for (const auto& name : s.finished)
        if (!names.insert(name).second)
          throw Error(ErrorCode::kBadData, "image \"" + name + "\" is listed twice as finished (tampered or corrupt)");
    }
    s.failed = problems_from_json(j.at("failed"));
    s.unpaired = problems_from_json(j.at("unpaired"));
    // Every count and name is checked: a shard's checkpoint may come from anywhere (a cluster's
    // shared folder), and its stems become file names of the merged outputs.
    if (s.shard_count < 1 || s.shard_count > kMaxShards || s.shard_index < 0 || s.shard_index >= s.shard_count)
      throw Error(ErrorCode::kBadData, "shard " + std::to_string(s.shard_index) + "/" + std::to_string(s.shard_count) +
                                           " out of range (0 <= I < N <= " + std::to_string(kMaxShards) + ")");
    if (s.pairs_total < 0 || s.pairs_total > (std::int64_t{1} << 40))
      throw Error(ErrorCode::kBadData, "pairs_total " + std::to_string(s.pairs_total) + " out of range");
    if (static_cast<std::int64_t>(s.finished.size() + s.failed.size()) > s.pairs_total)
      throw Error(ErrorCode::kBadData, std::to_string(s.finished.size() + s.failed.size()) +
                                           " images finished or failed, more than the shard's " +
                                           std::to_string(s.pairs_total));
    for (const auto* list : {&s.finished})
      for (const auto& stem : *list)
        if (!is_plain_stem(stem))
          throw Error(ErrorCode::kBadData, "image name " + json(stem).dump() + " is not a plain file name");
    // (unpaired entries name label files by path: they are only listed, never opened)
    for (const auto* list : {&s.failed})
      for (const auto& p : *list)
        if (!is_plain_stem(p.name))
          throw Error(ErrorCode::kBadData, "image name " + json(p.name).dump() + " is not a plain file name");

    s.images_left_out = j.value("images_left_out", std::int64_t{0});  // absent before the PC / VOC datasets
    if (s.images_left_out < 0) throw Error(ErrorCode::kBadData, "images_left_out is negative");
    s.timings = timings_from_json(j.at("timings"));
    s.merged_from = j.at("merged_from").get<std::vector<std::string>>();
    const auto& c = j.at("confusion");
    const int num_classes = c.at("num_classes").get<int>();
    // The largest benchmark has 847 classes; the bound keeps a tampered file from asking for a
    // matrix of terabytes.
    if (num_classes < 1 || num_classes > 4096)
      throw Error(ErrorCode::kBadData, "num_classes " + std::to_string(num_classes) + " out of range (1..4096)");
    s.cm = ConfusionMatrix(num_classes);
    std::set<std::pair<int, int>> cells;
    std::int64_t pixel_sum = 0;
    for (const auto& e : c.at("entries")) {
      if (!e.is_array() || e.size() != 3) throw Error(ErrorCode::kBadData, "confusion entry " + e.dump() + " is not [pred, gt, count]");
      const int p = e.at(0).get<int>(), g = e.at(1).get<int>();
      const auto count = e.at(2).get<std::int64_t>();
      if (p < 0 || g < 0 || p >= s.cm.size() || g >= s.cm.size() || count < 0)
        throw Error(ErrorCode::kBadData, "confusion entry " + e.dump() + " out of range");
      // All counts together at most 2^53 (exact in the metrics' doubles; a 2^63 count overflowed
      // pixel accuracy to -100).
      if (count > kMaxPixelCount - pixel_sum)
        throw Error(ErrorCode::kBadData, "confusion counts sum to more than 2^53 pixels (tampered or corrupt)");
      pixel_sum += count;
      if (!cells.insert({p, g}).second)
        throw Error(ErrorCode::kBadData, "confusion entry [" + std::to_string(p) + ", " + std::to_string(g) +
                                             "] appears twice (tampered or corrupt)");
      s.cm.at(p, g) = count;
    }
    if (!s.class_names.empty() && static_cast<int>(s.class_names.size()) != s.cm.num_classes())
      throw Error(ErrorCode::kBadData, std::to_string(s.class_names.size()) + " class names for a matrix of " +
                                           std::to_string(s.cm.num_classes()) + " classes");
  } catch (const Error& e) {
    throw Error(ErrorCode::kBadData, path + ": " + e.what());
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kBadData, path + ": malformed checkpoint (" + e.what() + ")");
  }
  return s;
}

EvalState merge_states(const std::vector<EvalState>& shards, std::vector<std::string>* problems) {
  if (shards.empty()) throw Error(ErrorCode::kInvalidArgument, "merge: no shards given");
  const EvalState& first = shards.front();
  EvalState out;
  out.dataset = first.dataset;
  out.split = first.split;
  out.class_names = first.class_names;
  out.settings = first.settings;
  out.cm = ConfusionMatrix(first.cm.num_classes());
  std::set<std::string> seen_images, seen_unpaired;
  std::set<std::pair<int, int>> seen_shards;
  std::vector<std::string> incomplete;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const EvalState& s = shards[i];
    const std::string which = "shard " + std::to_string(s.shard_index) + "/" + std::to_string(s.shard_count);
    if (s.dataset != out.dataset || s.split != out.split)
      throw Error(ErrorCode::kInvalidArgument, "merge: " + which + " is " + s.dataset + "/" + s.split +
                                                   ", the first is " + out.dataset + "/" + out.split);
    if (s.cm.num_classes() != out.cm.num_classes() || s.class_names != out.class_names)
      throw Error(ErrorCode::kInvalidArgument, "merge: " + which + " has different classes (K = " +
                                                   std::to_string(s.cm.num_classes()) + ")");
    if (s.settings != out.settings) {
      std::string diff;
      for (const auto& [key, value] : s.settings) {
        const auto it = out.settings.find(key);
        if (it == out.settings.end() || it->second != value)
          diff += " " + key + "=" + value + " (first: " + (it == out.settings.end() ? "unset" : it->second) + ")";
      }
      for (const auto& [key, value] : out.settings)
        if (s.settings.find(key) == s.settings.end()) diff += " " + key + " unset (first: " + value + ")";
      throw Error(ErrorCode::kInvalidArgument, "merge: " + which + " was run with other settings:" + diff);
    }
    for (const auto& stem : s.finished)
      if (!seen_images.insert(stem).second)
        throw Error(ErrorCode::kInvalidArgument, "merge: image " + stem + " was evaluated by two shards (" + which +
                                                     " and an earlier one)");
    if (!seen_shards.insert({s.shard_index, s.shard_count}).second)
      throw Error(ErrorCode::kInvalidArgument, "merge: " + which + " given twice");
    if (!s.all_attempted())
      incomplete.push_back(which + " is unfinished (" + std::to_string(s.finished.size() + s.failed.size()) +
                           " of " + std::to_string(s.pairs_total) + " images)");
    out.cm.merge(s.cm);
    out.finished.insert(out.finished.end(), s.finished.begin(), s.finished.end());
    out.failed.insert(out.failed.end(), s.failed.begin(), s.failed.end());
    for (const auto& u : s.unpaired)
      if (seen_unpaired.insert(u.name).second) out.unpaired.push_back(u);
    if (__builtin_add_overflow(out.pairs_total, s.pairs_total, &out.pairs_total))
      throw Error(ErrorCode::kBadData, "merge: pairs_total overflows");
    out.images_left_out = std::max(out.images_left_out, s.images_left_out);  // every shard lists the same folders
    add_timings(out.timings, s.timings);
    out.merged_from.push_back(which);
  }
  if (out.cm.total() > kMaxPixelCount)
    throw Error(ErrorCode::kBadData, "merge: the shards' confusion counts sum to more than 2^53 pixels");
  std::sort(out.finished.begin(), out.finished.end());
  // Every shard of one scheme I/N must be present exactly once.
  std::set<int> counts;
  for (const auto& [index, count] : seen_shards) counts.insert(count);
  if (counts.size() > 1) {
    incomplete.push_back("shards of different schemes were merged (N = " + std::to_string(*counts.begin()) +
                         " and " + std::to_string(*counts.rbegin()) + ")");
  } else {
    const int n = *counts.begin();
    std::size_t missing = 0;
    int first = -1;
    for (int i = 0; i < n; ++i)
      if (!seen_shards.count({i, n}) && missing++ == 0) first = i;
    if (missing == 1)
      incomplete.push_back("shard " + std::to_string(first) + "/" + std::to_string(n) + " is missing");
    else if (missing > 1)
      incomplete.push_back(std::to_string(missing) + " of the " + std::to_string(n) + " shards are missing (the first: " +
                           std::to_string(first) + ")");
  }
  if (problems) *problems = incomplete;
  return out;
}

}  // namespace ovseg::eval
