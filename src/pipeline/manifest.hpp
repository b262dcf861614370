// A bundle's manifest.json (models/BUNDLE_FORMAT.md), parsed and validated. Internal, no torch.
#pragma once

#include <array>
#include <map>
#include <string>
#include <vector>

#include "ovseg/ovseg.hpp"

namespace ovseg::detail {

inline constexpr int kBundleFormatVersion = 1;

// Threshold and ensemble weight of one inference path (docs/reference-behaviour.md §1.4). Doubles: the reference's
// config values are Python floats, and the ensemble exponents 1 − w and w are taken in double.
struct PathDefaults {
  double mask_threshold = 0;
  double ensemble_weight = 0;
  // false: the config's CLIP_ENSEMBLE False, MaskFormer-only (no regions, no CLIP visual tower).
  bool clip_ensemble = true;
};

struct Manifest {
  std::string dir;             // the bundle directory as given
  std::string manifest_path;   // dir/manifest.json
  std::string json_pretty;     // the whole manifest, re-serialised with indentation

  std::string name;
  int format_version = 0;
  // "torch": the exporting torch and the TorchScript file-format version of its modules (absent in
  // bundles of exporters before 0.2: then 0 / empty, and no up-front check is possible).
  std::string torch_version;
  int torchscript_file_format_version = 0;
  std::string backbone;        // "swin" | "resnet"
  std::string clip_model;      // "ViT-L/14"
  int num_queries = 0;
  int embed_dim = 0;
  bool mask_prompt_fwd = true;
  int vision_width = 0;
  int vision_layers = 0;
  int vision_heads = 0;
  int patch_size = 0;

  int min_size_test = 0;
  int max_size_test = 0;
  int size_divisibility = 32;
  std::array<float, 3> pixel_mean{};    // backbone normalisation, 0–255 scale (RGB)
  std::array<float, 3> pixel_std{};
  std::array<float, 3> clip_mean255{};  // CLIP normalisation (float32(mean) × 255)
  std::array<float, 3> clip_std255{};
  std::array<float, 3> clip_fill{};     // float32(255·mean), 1 ulp off clip_mean255 (docs/reference-behaviour.md §6.4)
  int region_resolution = 224;

  double temperature = 100.0;
  PathDefaults eval;
  PathDefaults demo;
  const PathDefaults& defaults(Mode mode) const { return mode == Mode::kDemo ? demo : eval; }

  std::string template_set;
  std::vector<std::string> templates;
  std::string tokenizer_kind;
  std::string tokenizer_path;  // absolute path inside the bundle
  int context_length = 77;
  std::string non_object_buffer = "non_object_embedding";

  std::string proposals_path;  // module files, inside the bundle
  std::string clip_visual_path;
  std::string clip_text_path;
  std::map<std::string, std::string> file_sha256;  // absolute path → "files" sha256, every listed file
  // The files read_manifest left for verify_file() (the `deferred` modules): checked right before
  // each is loaded, so that hashing one overlaps loading the one before.
  std::vector<std::string> unverified;
  std::string clip_text_sha256;  // from "files": identifies the text tower for the disk cache
  std::string tokenizer_sha256;
  std::string source_sha256;
};

// Reads and validates BUNDLE/manifest.json: format, version, required keys, every listed file
// present with the right size and (when verify_checksums) sha256. Throws Error(kBadModel) naming
// the offending file.
Manifest read_manifest(const std::string& bundle_dir, bool verify_checksums = true);
// With verify_checksums, files in `deferred` are left out: verify_file() checks each when it is
// first used (lazily loaded modules).
Manifest read_manifest(const std::string& bundle_dir, bool verify_checksums, const std::vector<std::string>& deferred);
// Checks one listed file's sha256 against the manifest; throws Error(kBadModel) naming it.
void verify_file(const Manifest& manifest, const std::string& path);

}  // namespace ovseg::detail
