#include "pipeline/manifest.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <system_error>

#include <nlohmann/json.hpp>

#include "common/fs_util.hpp"
#include "common/log.hpp"
#include "ovseg/ovseg.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ovseg::detail {
namespace {

[[noreturn]] void bad(const std::string& file, const std::string& problem) {
  throw Error(ErrorCode::kBadModel, file + ": " + problem);
}

// Walks a dotted key path; every missing or mistyped key is reported with its full path.
class Reader {
 public:
  Reader(const json& root, std::string file) : root_(root), file_(std::move(file)) {}

  const json& at(const std::string& dotted) const {
    const json* node = &root_;
    std::size_t start = 0;
    while (start <= dotted.size()) {
      const auto dot = dotted.find('.', start);
      const std::string key = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!node->is_object() || !node->contains(key)) bad(file_, "missing key \"" + dotted + "\"");
      node = &(*node)[key];
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    return *node;
  }
  bool has(const std::string& dotted) const {
    const json* node = &root_;
    std::size_t start = 0;
    while (true) {
      const auto dot = dotted.find('.', start);
      const std::string key = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!node->is_object() || !node->contains(key)) return false;
      node = &(*node)[key];
      if (dot == std::string::npos) return true;
      start = dot + 1;
    }
  }
  std::string str(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_string()) bad(file_, "\"" + key + "\" must be a string");
    return v.get<std::string>();
  }
  int integer(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_number_integer()) bad(file_, "\"" + key + "\" must be an integer");
    return v.get<int>();
  }
  double number(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_number()) bad(file_, "\"" + key + "\" must be a number");
    return v.get<double>();
  }
  bool boolean(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_boolean()) bad(file_, "\"" + key + "\" must be true or false");
    return v.get<bool>();
  }
  // Three numbers, stored as float32: the manifest writes the float32 values' repr, so parsing
  // a double and narrowing gives the exact bits (the fill/mean one-ulp quirk survives).
  std::array<float, 3> rgb(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_array() || v.size() != 3) bad(file_, "\"" + key + "\" must be a list of 3 numbers");
    std::array<float, 3> out{};
    for (int i = 0; i < 3; ++i) {
      if (!v[i].is_number()) bad(file_, "\"" + key + "\" must be a list of 3 numbers");
      out[i] = static_cast<float>(v[i].get<double>());
    }
    return out;
  }

 private:
  const json& root_;
  std::string file_;
};

// Every value the pipeline trusts, checked once at load: a bad bundle must fail here (exit 2),
// never image by image or with a silently wrong answer.
void validate_values(const Manifest& m) {
  const std::string& f = m.manifest_path;
  auto range = [&](const char* key, double v, double lo, double hi) {
    if (!std::isfinite(v) || v < lo || v > hi)
      bad(f, std::string("\"") + key + "\" is " + json(v).dump() + ", expected a number in [" + json(lo).dump() + ", " +
                 json(hi).dump() + "]");
  };
  auto irange = [&](const char* key, long long v, long long lo, long long hi) {
    if (v < lo || v > hi)
      bad(f, std::string("\"") + key + "\" is " + std::to_string(v) + ", expected " + std::to_string(lo) + ".." +
                 std::to_string(hi));
  };
  // Sizes: the released models test at 640 (short side) / 2560 (long side); beyond 8192 one
  // image needs tens of GB.
  irange("preprocess.min_size_test", m.min_size_test, 1, 8192);
  irange("preprocess.max_size_test", m.max_size_test, m.min_size_test, 8192);
  irange("preprocess.size_divisibility", m.size_divisibility, 1, 1024);
  irange("preprocess.region_resolution", m.region_resolution, m.patch_size, 4096);
  if (m.region_resolution % m.patch_size != 0)
    bad(f, "\"preprocess.region_resolution\" " + std::to_string(m.region_resolution) +
               " is not a multiple of the patch size " + std::to_string(m.patch_size));
  irange("architecture.num_queries", m.num_queries, 1, 10000);
  irange("architecture.embed_dim", m.embed_dim, 1, 65536);
  irange("text.tokenizer.context_length", m.context_length, 2, 4096);
  const char* channel[3] = {"R", "G", "B"};
  for (int c = 0; c < 3; ++c) {
    const std::string ch = std::string(" (") + channel[c] + ")";
    range(("preprocess.pixel_mean" + ch).c_str(), m.pixel_mean[c], -1e4, 1e4);
    range(("preprocess.pixel_std" + ch).c_str(), m.pixel_std[c], 1e-6, 1e4);
    range(("preprocess.clip_mean255" + ch).c_str(), m.clip_mean255[c], -1e4, 1e4);
    range(("preprocess.clip_std255" + ch).c_str(), m.clip_std255[c], 1e-6, 1e4);
    range(("preprocess.clip_fill" + ch).c_str(), m.clip_fill[c], 0, 255);
  }
  range("inference.temperature", m.temperature, 1e-6, 1e6);
  range("inference.eval.mask_threshold", m.eval.mask_threshold, 0, 1);
  range("inference.eval.ensemble_weight", m.eval.ensemble_weight, 0, 1);
  range("inference.demo.mask_threshold", m.demo.mask_threshold, 0, 1);
  range("inference.demo.ensemble_weight", m.demo.ensemble_weight, 0, 1);
  for (std::size_t i = 0; i < m.templates.size(); ++i) {
    // Python str.format with one positional argument: exactly one "{}", other braces doubled.
    const std::string& t = m.templates[i];
    int holes = 0;
    for (std::size_t k = 0; k < t.size(); ++k) {
      if (t.compare(k, 2, "{}") == 0) { ++holes; ++k; continue; }
      if (t.compare(k, 2, "{{") == 0 || t.compare(k, 2, "}}") == 0) { ++k; continue; }
      if (t[k] == '{' || t[k] == '}')
        bad(f, "text.templates[" + std::to_string(i) + "] \"" + t + "\" has a brace that is not \"{}\", \"{{\" or \"}}\"");
    }
    if (holes != 1)
      bad(f, "text.templates[" + std::to_string(i) + "] \"" + t + "\" must hold exactly one \"{}\" for the class name (it has " +
                 std::to_string(holes) + ")");
  }
}

}  // namespace

Manifest read_manifest(const std::string& bundle_dir, bool verify_checksums) {
  return read_manifest(bundle_dir, verify_checksums, {});
}

void verify_file(const Manifest& m, const std::string& path) {
  const auto it = m.file_sha256.find(path);
  if (it == m.file_sha256.end()) bad(path, "not listed in manifest.json");
  std::string have;
  try {
    have = sha256_file(path);
  } catch (const Error& e) {
    throw Error(ErrorCode::kBadModel, e.what());
  }
  if (have != it->second) bad(path, "sha256 mismatch (manifest.json says " + it->second + ", file has " + have + ")");
}

Manifest read_manifest(const std::string& bundle_dir, bool verify_checksums, const std::vector<std::string>& deferred_keys) {
  std::error_code ec;
  if (!fs::is_directory(bundle_dir, ec)) bad(bundle_dir, "bundle directory not found");
  Manifest m;
  m.dir = bundle_dir;
  m.manifest_path = (fs::path(bundle_dir) / "manifest.json").string();
  if (!fs::is_regular_file(m.manifest_path, ec)) bad(m.manifest_path, "missing (not an ovseg bundle?)");

  json root;
  try {
    root = json::parse(read_text_file(m.manifest_path));
  } catch (const json::exception& e) {
    bad(m.manifest_path, std::string("not valid JSON (") + e.what() + ")");
  } catch (const Error& e) {
    throw Error(ErrorCode::kBadModel, e.what());
  }
  if (!root.is_object()) bad(m.manifest_path, "not a JSON object");
  const Reader r(root, m.manifest_path);

  if (!root.contains("format") || !root["format"].is_string() || root["format"] != "ovseg-bundle")
    bad(m.manifest_path, "\"format\" is not \"ovseg-bundle\" (not an ovseg bundle)");
  m.format_version = r.integer("format_version");
  if (m.format_version != kBundleFormatVersion)
    bad(m.manifest_path, "format_version " + std::to_string(m.format_version) +
                             " is not supported (this build reads version " +
                             std::to_string(kBundleFormatVersion) + "; re-export the bundle)");
  m.json_pretty = root.dump(2);

  m.name = r.str("name");
  if (r.has("torch.version") && r.at("torch.version").is_string()) m.torch_version = r.str("torch.version");
  if (r.has("torch.torchscript_file_format_version") && !r.at("torch.torchscript_file_format_version").is_null()) {
    m.torchscript_file_format_version = r.integer("torch.torchscript_file_format_version");
    if (m.torchscript_file_format_version <= 0)
      bad(m.manifest_path, "\"torch.torchscript_file_format_version\" must be a positive integer");
  }
  m.backbone = r.str("architecture.backbone");
  m.num_queries = r.integer("architecture.num_queries");
  m.embed_dim = r.integer("architecture.embed_dim");
  m.clip_model = r.str("architecture.clip.model_name");
  m.mask_prompt_fwd = r.has("architecture.clip.mask_prompt_fwd") ? r.boolean("architecture.clip.mask_prompt_fwd") : true;
  m.vision_width = r.integer("architecture.clip.vision_width");
  m.vision_layers = r.integer("architecture.clip.vision_layers");
  m.vision_heads = r.has("architecture.clip.vision_heads") ? r.integer("architecture.clip.vision_heads")
                                                           : m.vision_width / 64;
  m.patch_size = r.integer("architecture.clip.patch_size");

  if (r.has("preprocess.format") && r.str("preprocess.format") != "RGB")
    bad(m.manifest_path, "preprocess.format \"" + r.str("preprocess.format") + "\" is not supported (only RGB)");
  m.min_size_test = r.integer("preprocess.min_size_test");
  m.max_size_test = r.integer("preprocess.max_size_test");
  m.size_divisibility = r.integer("preprocess.size_divisibility");
  m.pixel_mean = r.rgb("preprocess.pixel_mean");
  m.pixel_std = r.rgb("preprocess.pixel_std");
  m.clip_mean255 = r.rgb("preprocess.clip_mean255");
  m.clip_std255 = r.rgb("preprocess.clip_std255");
  m.clip_fill = r.rgb("preprocess.clip_fill");
  m.region_resolution = r.integer("preprocess.region_resolution");
  if (r.has("preprocess.mask_fill") && r.str("preprocess.mask_fill") != "mean")
    bad(m.manifest_path, "preprocess.mask_fill \"" + r.str("preprocess.mask_fill") + "\" is not supported (only mean)");

  m.temperature = r.number("inference.temperature");
  m.eval.mask_threshold = r.number("inference.eval.mask_threshold");
  m.eval.ensemble_weight = r.number("inference.eval.ensemble_weight");
  m.demo.mask_threshold = r.number("inference.demo.mask_threshold");
  m.demo.ensemble_weight = r.number("inference.demo.ensemble_weight");
  if (r.has("inference.eval.clip_ensemble")) m.eval.clip_ensemble = r.boolean("inference.eval.clip_ensemble");
  if (r.has("inference.demo.clip_ensemble")) m.demo.clip_ensemble = r.boolean("inference.demo.clip_ensemble");
  if (!m.demo.clip_ensemble)
    bad(m.manifest_path, "inference.demo.clip_ensemble false is not supported (the demo path needs the CLIP branch)");

  m.template_set = r.str("text.template_set");
  const json& templates = r.at("text.templates");
  if (!templates.is_array() || templates.empty()) bad(m.manifest_path, "\"text.templates\" must be a non-empty list");
  for (const auto& t : templates) {
    if (!t.is_string()) bad(m.manifest_path, "\"text.templates\" must hold strings");
    m.templates.push_back(t.get<std::string>());
  }
  m.tokenizer_kind = r.str("text.tokenizer.kind");
  const std::string tokenizer_file = r.str("text.tokenizer.file");
  m.context_length = r.integer("text.tokenizer.context_length");
  if (r.has("non_object_embedding.buffer")) m.non_object_buffer = r.str("non_object_embedding.buffer");
  if (r.has("source.sha256") && r.at("source.sha256").is_string()) m.source_sha256 = r.str("source.sha256");

  if (m.num_queries <= 0 || m.embed_dim <= 0 || m.min_size_test <= 0 || m.max_size_test <= 0 ||
      m.size_divisibility <= 0 || m.region_resolution <= 0 || m.patch_size <= 0 || m.context_length <= 1)
    bad(m.manifest_path, "architecture/preprocess sizes must be positive");
  validate_values(m);

  // Every file the bundle uses must be listed with its checksum.
  const json& files = r.at("files");
  if (!files.is_object()) bad(m.manifest_path, "\"files\" must be an object");
  auto listed = [&](const std::string& rel, const std::string& what) {
    if (rel.empty() || rel.find("..") != std::string::npos || fs::path(rel).is_absolute())
      bad(m.manifest_path, what + " \"" + rel + "\" must be a plain file name inside the bundle");
    if (!files.contains(rel)) bad(m.manifest_path, what + " \"" + rel + "\" is not listed in \"files\"");
    return (fs::path(bundle_dir) / rel).string();
  };
  m.proposals_path = listed(r.str("modules.proposals"), "module");
  m.clip_visual_path = listed(r.str("modules.clip_visual"), "module");
  m.clip_text_path = listed(r.str("modules.clip_text"), "module");
  m.tokenizer_path = listed(tokenizer_file, "tokenizer file");
  m.clip_text_sha256 = files[r.str("modules.clip_text")].value("sha256", "");
  m.tokenizer_sha256 = files[tokenizer_file].value("sha256", "");

  std::vector<std::string> deferred;
  for (const auto& k : deferred_keys) {
    if (k == "proposals") deferred.push_back(m.proposals_path);
    if (k == "clip_visual") deferred.push_back(m.clip_visual_path);
    if (k == "clip_text") deferred.push_back(m.clip_text_path);
  }
  if (verify_checksums) m.unverified = deferred;
  for (auto it = files.begin(); it != files.end(); ++it) {
    const std::string path = (fs::path(bundle_dir) / it.key()).string();
    if (!it.value().is_object() || !it.value().contains("sha256") || !it.value()["sha256"].is_string())
      bad(m.manifest_path, "files[\"" + it.key() + "\"] has no sha256");
    m.file_sha256[path] = it.value()["sha256"].get<std::string>();
    if (!fs::is_regular_file(path, ec)) bad(path, "missing (listed in manifest.json)");
    if (it.value().contains("bytes") && it.value()["bytes"].is_number_integer()) {
      const auto want = it.value()["bytes"].get<std::uintmax_t>();
      const auto have = fs::file_size(path, ec);
      if (ec || have != want)
        bad(path, "size " + std::to_string(have) + " bytes differs from manifest.json (" + std::to_string(want) +
                      " bytes): truncated or replaced file");
    }
    if (verify_checksums && std::find(deferred.begin(), deferred.end(), path) == deferred.end()) {
      const std::string want = it.value()["sha256"].get<std::string>();
      std::string have;
      try {
        have = sha256_file(path);
      } catch (const Error& e) {
        throw Error(ErrorCode::kBadModel, e.what());
      }
      if (have != want) bad(path, "sha256 mismatch (manifest.json says " + want + ", file has " + have + ")");
    }
  }
  detail::log().debug("bundle {}: manifest ok ({} files{})", bundle_dir, files.size(),
                      verify_checksums ? ", checksums verified" : "");
  return m;
}

}  // namespace ovseg::detail
