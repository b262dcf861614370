// Dataset layouts as the ov-seg preparation scripts leave them (SPEC §8.1, §8.2), pairing,
// sharding, and reading/writing label maps in the dataset's format.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <string>
#include <system_error>

#include "common/log.hpp"
#include "image/image_ops.hpp"
#include "ovseg/eval.hpp"

namespace fs = std::filesystem;

namespace ovseg::eval {

namespace {

const std::vector<DatasetSpec>& specs() {
  static const std::vector<DatasetSpec> kSpecs = {
      {"ade150", "ADE20K-150 (A-150, ade20k_sem_seg_val)", "ade150", 150, 255, 8,
       "ADEChallengeData2016/images/{split}", "ADEChallengeData2016/annotations_detectron2/{split}", ".jpg",
       ".png"},
      {"ade847", "ADE20K-847 (A-847, ade20k_full_sem_seg_val)", "ade847", 847, 65535, 16,
       "ADE20K_2021_17_01/images_detectron2/{split}", "ADE20K_2021_17_01/annotations_detectron2/{split}", ".jpg",
       ".tif"},
  };
  return kSpecs;
}

std::string replace_split(std::string pattern, const std::string& split) {
  const std::string key = "{split}";
  const auto pos = pattern.find(key);
  if (pos != std::string::npos) pattern.replace(pos, key.size(), split);
  return pattern;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// stem → path of the regular files in `dir` whose extension is `ext` (case-insensitive).
std::map<std::string, std::string> files_by_stem(const std::string& dir, const std::string& ext) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) throw Error(ErrorCode::kBadData, dir + ": cannot list directory (" + ec.message() + ")");
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) throw Error(ErrorCode::kIo, dir + ": error while listing (" + ec.message() + ")");
    const fs::path& p = it->path();
    if (lower(p.extension().string()) != ext) continue;
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec)) continue;
    out.emplace(p.stem().string(), p.string());
  }
  return out;
}

}  // namespace

std::vector<std::string> dataset_names() {
  std::vector<std::string> names;
  for (const auto& s : specs()) names.push_back(s.name);
  return names;
}

const DatasetSpec& dataset_spec(const std::string& name) {
  for (const auto& s : specs())
    if (s.name == name) return s;
  std::string known;
  for (const auto& s : specs()) known += (known.empty() ? "" : ", ") + s.name;
  throw Error(ErrorCode::kInvalidArgument, "unknown dataset '" + name + "' (known: " + known + ")");
}

DatasetListing list_dataset(const DatasetSpec& spec, const std::string& root, const std::string& split) {
  if (split.empty() || split.find('/') != std::string::npos || split == "." || split == "..")
    throw Error(ErrorCode::kInvalidArgument, "invalid split name '" + split + "'");
  DatasetListing listing;
  listing.image_dir = (fs::path(root) / replace_split(spec.image_dir, split)).string();
  listing.label_dir = (fs::path(root) / replace_split(spec.label_dir, split)).string();
  for (const auto& dir : {listing.image_dir, listing.label_dir}) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      throw Error(ErrorCode::kBadData, dir + ": directory not found (expected the " + spec.title +
                                           " layout under " + root + ", see SPEC §8)");
  }
  const auto images = files_by_stem(listing.image_dir, spec.image_ext);
  const auto labels = files_by_stem(listing.label_dir, spec.label_ext);
  // Both maps iterate in byte order of the stem, which is Python's sorted() order for UTF-8.
  for (const auto& [stem, image] : images) {
    const auto it = labels.find(stem);
    if (it == labels.end()) {
      listing.unpaired.push_back({image, "image without label (no " + stem + spec.label_ext + " in " +
                                             listing.label_dir + ")"});
      continue;
    }
    listing.pairs.push_back({stem, image, it->second});
  }
  for (const auto& [stem, label] : labels)
    if (images.find(stem) == images.end())
      listing.unpaired.push_back({label, "label without image (no " + stem + spec.image_ext + " in " +
                                             listing.image_dir + ")"});
  return listing;
}

std::vector<ImagePair> select_shard(const std::vector<ImagePair>& pairs, int shard_index, int shard_count) {
  if (shard_count < 1 || shard_index < 0 || shard_index >= shard_count)
    throw Error(ErrorCode::kInvalidArgument, "invalid shard " + std::to_string(shard_index) + "/" +
                                                 std::to_string(shard_count) + " (need 0 <= I < N)");
  std::vector<ImagePair> out;
  for (std::size_t i = 0; i < pairs.size(); ++i)
    if (static_cast<int>(i % static_cast<std::size_t>(shard_count)) == shard_index) out.push_back(pairs[i]);
  return out;
}

std::pair<int, int> parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  const auto bad = [&] {
    return Error(ErrorCode::kInvalidArgument, "--shard: expected I/N with 0 <= I < N, got '" + text + "'");
  };
  if (slash == std::string::npos || slash == 0 || slash + 1 >= text.size()) throw bad();
  const std::string a = text.substr(0, slash), b = text.substr(slash + 1);
  const auto digits = [](const std::string& s) {
    return s.size() <= 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!digits(a) || !digits(b)) throw bad();
  const int i = std::stoi(a), n = std::stoi(b);
  if (n < 1 || i >= n) throw bad();
  return {i, n};
}

LabelImage read_ground_truth(const DatasetSpec& spec, const std::string& path) {
  detail::LabelMap map = detail::read_label_map(path);
  const auto k = static_cast<std::uint32_t>(spec.num_classes);
  for (std::size_t i = 0; i < map.values.size(); ++i) {
    const std::uint32_t v = map.values[i];
    if (v >= k && v != spec.ignore_label)
      throw Error(ErrorCode::kBadData,
                  path + ": label value " + std::to_string(v) + " at (x=" + std::to_string(i % map.width) +
                      ", y=" + std::to_string(i / map.width) + ") is neither a class (0.." +
                      std::to_string(k - 1) + ") nor the ignore label " + std::to_string(spec.ignore_label));
  }
  return LabelImage{map.width, map.height, std::move(map.values)};
}

std::string prediction_file_name(const DatasetSpec& spec, const std::string& stem) {
  return stem + spec.label_ext;
}

void write_prediction(const DatasetSpec& spec, const std::string& path, const LabelImage& prediction) {
  if (prediction.labels.size() != static_cast<std::size_t>(prediction.width) * prediction.height)
    throw Error(ErrorCode::kInvalidArgument, path + ": prediction has " + std::to_string(prediction.labels.size()) +
                                                 " values for " + std::to_string(prediction.width) + "x" +
                                                 std::to_string(prediction.height) + " pixels");
  detail::LabelMap map;
  map.width = prediction.width;
  map.height = prediction.height;
  map.bit_depth = spec.label_bit_depth;
  map.values.resize(prediction.labels.size());
  const std::uint32_t max_value = spec.label_bit_depth == 8 ? 255 : 65535;
  for (std::size_t i = 0; i < prediction.labels.size(); ++i) {
    const std::uint32_t v = prediction.labels[i] == kUnlabeled ? spec.ignore_label : prediction.labels[i];
    if (v > max_value)
      throw Error(ErrorCode::kInvalidArgument, path + ": value " + std::to_string(v) + " does not fit a " +
                                                   std::to_string(spec.label_bit_depth) + "-bit label map");
    map.values[i] = static_cast<std::uint16_t>(v);
  }
  detail::write_label_map(path, map);
}

}  // namespace ovseg::eval
