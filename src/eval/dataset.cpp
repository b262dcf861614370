// Dataset layouts as the ov-seg preparation scripts leave them (docs/reference-behaviour.md §8.1, §8.2), pairing,
// sharding, and reading/writing label maps in the dataset's format.
#include <algorithm>
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

// The registrations: detectron2's register_all_ade20k and ov-seg's register_ade20k_full,
// register_pascal_context (PC-59, PC-459) and register_voc_seg (PAS-20), each calling
// load_sem_seg(gt_root, image_root, gt_ext, image_ext). Label conventions are those of ov-seg's
// datasets/prepare_*.py (docs/reference-behaviour.md §8). Ensemble weights: ov-seg GETTING_STARTED's test commands.
const std::vector<DatasetSpec>& specs() {
  static const std::vector<DatasetSpec> kSpecs = {
      {"ade150", "ADE20K-150 (A-150, ade20k_sem_seg_val)", "ade150", 150, 255, 8,
       "ADEChallengeData2016/images/{split}", "ADEChallengeData2016/annotations_detectron2/{split}", ".jpg", ".png",
       "validation", std::nullopt, {}},
      {"ade847", "ADE20K-847 (A-847, ade20k_full_sem_seg_val)", "ade847", 847, 65535, 16,
       "ADE20K_2021_17_01/images_detectron2/{split}", "ADE20K_2021_17_01/annotations_detectron2/{split}", ".jpg",
       ".tif", "validation", std::nullopt, {}},
      {"pc59", "PASCAL Context-59 (PC-59, pascal_context_59_sem_seg_val)", "pc59", 59, 255, 8,
       "VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_detectron2/pc59_val", ".jpg", ".png", "val",
       0.6f, {}},
      {"pc459", "PASCAL Context-459 (PC-459, pascal_context_459_sem_seg_val)", "pc459", 459, 65535, 16,
       "VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_detectron2/pc459_val", ".jpg", ".tif", "val",
       0.6f, {}},
      {"voc20", "PASCAL VOC-20 (PAS-20, pascalvoc20_sem_seg_val)", "voc20", 20, 255, 8, "VOCdevkit/VOC2012/JPEGImages",
       "VOCdevkit/VOC2012/annotations_detectron2/val", ".jpg", ".png", "val", 0.45f, {}},
  };
  return kSpecs;
}

std::string replace_split(std::string pattern, const std::string& split) {
  const std::string key = "{split}";
  const auto pos = pattern.find(key);
  if (pos != std::string::npos) pattern.replace(pos, key.size(), split);
  return pattern;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// stem → path of the regular files in `dir` whose name ends with `ext` (case-sensitive, as
// load_sem_seg's f.endswith(ext)).
std::map<std::string, std::string> files_by_stem(const std::string& dir, const std::string& ext) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) throw Error(ErrorCode::kBadData, dir + ": cannot list directory (" + ec.message() + ")");
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) throw Error(ErrorCode::kIo, dir + ": error while listing (" + ec.message() + ")");
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    if (name.size() <= ext.size() || !ends_with(name, ext)) continue;
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec)) continue;
    out.emplace(name.substr(0, name.size() - ext.size()), p.string());
  }
  return out;
}

std::string dotted(const std::string& ext) { return ext.empty() || ext[0] == '.' ? ext : "." + ext; }

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
  throw Error(ErrorCode::kInvalidArgument, "unknown dataset '" + name + "' (known: " + known + ", custom)");
}

DatasetSpec custom_dataset_spec(const std::string& images_dir, const std::string& labels_dir, int num_classes,
                                std::uint32_t ignore_label, const std::string& image_ext,
                                const std::string& label_ext) {
  if (images_dir.empty() || labels_dir.empty())
    throw Error(ErrorCode::kInvalidArgument, "custom dataset: the image and label directories must be given");
  if (num_classes < 1 || num_classes > 65535)
    throw Error(ErrorCode::kInvalidArgument,
                "custom dataset: " + std::to_string(num_classes) + " classes (need 1..65535)");
  if (ignore_label > 65535)
    throw Error(ErrorCode::kInvalidArgument,
                "custom dataset: ignore label " + std::to_string(ignore_label) + " does not fit 16 bits");
  if (ignore_label < static_cast<std::uint32_t>(num_classes))
    throw Error(ErrorCode::kInvalidArgument, "custom dataset: ignore label " + std::to_string(ignore_label) +
                                                 " is a class index (0.." + std::to_string(num_classes - 1) +
                                                 "); it must be >= the number of classes");
  DatasetSpec s;
  s.name = "custom";
  s.title = "custom (" + images_dir + " + " + labels_dir + ")";
  s.num_classes = num_classes;
  s.ignore_label = ignore_label;
  s.image_dir = images_dir;
  s.label_dir = labels_dir;
  s.image_ext = dotted(image_ext);
  s.label_ext = dotted(label_ext);
  if (s.image_ext.size() < 2 || s.label_ext.size() < 2)
    throw Error(ErrorCode::kInvalidArgument, "custom dataset: empty file extension");
  const bool tiff = s.label_ext == ".tif" || s.label_ext == ".tiff";
  s.label_bit_depth = (tiff || num_classes > 255 || ignore_label > 255) ? 16 : 8;
  s.default_split = "val";
  return s;
}

DatasetListing list_dataset(const DatasetSpec& spec, const std::string& root, const std::string& split) {
  if (split.empty() || split.find('/') != std::string::npos || split == "." || split == "..")
    throw Error(ErrorCode::kInvalidArgument, "invalid split name '" + split + "'");
  DatasetListing listing;
  listing.image_dir = (fs::path(root) / replace_split(spec.image_dir, split)).string();
  listing.label_dir = (fs::path(root) / replace_split(spec.label_dir, split)).string();
  const std::string where = spec.name == "custom" ? std::string("(--images / --labels)")
                                                  : "(expected the " + spec.title + " layout under " + root +
                                                        ", see ovseg eval --help)";
  for (const auto& dir : {listing.image_dir, listing.label_dir}) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw Error(ErrorCode::kBadData, dir + ": directory not found " + where);
  }
  const auto images = files_by_stem(listing.image_dir, spec.image_ext);
  const auto labels = files_by_stem(listing.label_dir, spec.label_ext);
  // load_sem_seg asserts that there is at least one annotation.
  if (labels.empty())
    throw Error(ErrorCode::kBadData, listing.label_dir + ": no annotations (*" + spec.label_ext + ") found " + where);
  // Both maps iterate in byte order of the stem, which is Python's sorted() order for UTF-8.
  // load_sem_seg evaluates the intersection of the stems; images without annotation are counted,
  // not reported one by one (PC's JPEGImages holds 10103 images for 5105 annotations). When both
  // folders hold as many files, load_sem_seg zips the sorted lists without comparing stems: the
  // same pairs for a complete dataset; by stem, a mismatch is named instead of mispaired.
  for (const auto& [stem, image] : images) {
    const auto it = labels.find(stem);
    if (it == labels.end()) {
      ++listing.images_left_out;
      continue;
    }
    listing.pairs.push_back({stem, image, it->second});
  }
  // An annotation without its image is a broken dataset: named, so nothing is dropped silently.
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
  if (n > kMaxShards)
    throw Error(ErrorCode::kInvalidArgument, "--shard " + text + ": at most " + std::to_string(kMaxShards) + " shards");
  return {i, n};
}

bool is_plain_stem(const std::string& stem) {
  return !stem.empty() && stem != "." && stem != ".." && stem.find_first_of(std::string("/\\\0", 3)) == std::string::npos;
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
  return map;
}

std::string prediction_file_name(const DatasetSpec& spec, const std::string& stem) {
  return stem + spec.label_ext;
}

void write_prediction(const DatasetSpec& spec, const std::string& path, const LabelImage& prediction) {
  if (prediction.values.size() != static_cast<std::size_t>(prediction.width) * prediction.height)
    throw Error(ErrorCode::kInvalidArgument, path + ": prediction has " + std::to_string(prediction.values.size()) +
                                                 " values for " + std::to_string(prediction.width) + "x" +
                                                 std::to_string(prediction.height) + " pixels");
  detail::LabelMap map;
  map.width = prediction.width;
  map.height = prediction.height;
  map.bit_depth = spec.label_bit_depth;
  map.values.resize(prediction.values.size());
  const std::uint32_t max_value = spec.label_bit_depth == 8 ? 255 : 65535;
  for (std::size_t i = 0; i < prediction.values.size(); ++i) {
    const std::uint32_t v = prediction.values[i] == kUnlabeled ? spec.ignore_label : prediction.values[i];
    if (v > max_value)
      throw Error(ErrorCode::kInvalidArgument, path + ": value " + std::to_string(v) + " does not fit a " +
                                                   std::to_string(spec.label_bit_depth) + "-bit label map");
    map.values[i] = static_cast<std::uint16_t>(v);
  }
  detail::write_label_map(path, map);
}

}  // namespace ovseg::eval
