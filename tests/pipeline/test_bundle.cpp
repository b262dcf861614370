// Bundle loading: what a good bundle reports, and every way a bad one is refused with
// Error(kBadModel) naming the file.
#include <filesystem>
#include <fstream>
#include <functional>

#include <caffe2/serialize/versions.h>
#include <gtest/gtest.h>
#include <torch/version.h>

#include "common/fs_util.hpp"
#include "pipeline_test_util.hpp"

namespace fs = std::filesystem;

namespace ovseg::test {
namespace {

const char* kFixture = "tiny_swin_vit";

// A private copy of the fixture bundle (hard links where possible: files are only ever replaced,
// never written in place).
std::string copy_bundle(const std::string& tag) {
  const std::string dst = scratch_dir("bundle-" + tag);
  for (const auto& e : fs::directory_iterator(bundle_dir(kFixture))) {
    if (!e.is_regular_file()) continue;
    std::error_code ec;
    fs::create_hard_link(e.path(), fs::path(dst) / e.path().filename(), ec);
    if (ec) fs::copy_file(e.path(), fs::path(dst) / e.path().filename());
  }
  return dst;
}

void replace_file(const std::string& path, const std::string& bytes) {
  fs::remove(path);
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void edit_manifest(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json m = read_json(dir + "/manifest.json");
  edit(m);
  replace_file(dir + "/manifest.json", m.dump(2));
}

// Loads and expects Error(kBadModel) whose message names `names`.
void expect_bad_model(const std::string& dir, const std::string& names, const std::string& also = "") {
  ModelOptions mo;
  mo.text_disk_cache = false;
  try {
    Model::load(dir, mo);
    FAIL() << "expected Error(kBadModel) for " << dir;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadModel) << e.what();
    EXPECT_NE(std::string(e.what()).find(names), std::string::npos) << e.what();
    if (!also.empty()) {
      EXPECT_NE(std::string(e.what()).find(also), std::string::npos) << e.what();
    }
  }
}

class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override { OVSEG_REQUIRE_BUNDLE(kFixture); }
};

TEST_F(BundleTest, InfoDescribesTheBundle) {
  const Model& model = cached_model(bundle_dir(kFixture));
  const ModelInfo& info = model.info();
  const nlohmann::json manifest = read_json(bundle_dir(kFixture) + "/manifest.json");
  EXPECT_EQ(info.name, manifest["name"].get<std::string>());
  EXPECT_EQ(info.bundle_dir, bundle_dir(kFixture));
  EXPECT_EQ(info.format_version, 1);
  EXPECT_EQ(info.backbone, "swin");
  EXPECT_EQ(info.num_queries, manifest["architecture"]["num_queries"].get<int>());
  EXPECT_EQ(info.embed_dim, manifest["architecture"]["embed_dim"].get<int>());
  EXPECT_EQ(info.min_size_test, 336);  // the fixture's config_eval.yaml
  EXPECT_EQ(info.max_size_test, 1280);
  EXPECT_FLOAT_EQ(info.eval_mask_threshold, 0.4f);
  EXPECT_FLOAT_EQ(info.eval_ensemble_weight, 0.7f);
  EXPECT_FLOAT_EQ(info.demo_mask_threshold, 0.35f);
  EXPECT_FLOAT_EQ(info.demo_ensemble_weight, 0.0f);
  EXPECT_EQ(info.template_set, "vild");
  EXPECT_EQ(info.num_templates, 14u);
  EXPECT_EQ(info.device, "cpu");
  EXPECT_EQ(info.precision, "fp32");
  EXPECT_EQ(nlohmann::json::parse(info.manifest_json), manifest);
}

TEST_F(BundleTest, MissingDirectory) {
  const std::string dir = scratch_dir("bundle-missing") + "/no-such-bundle";
  expect_bad_model(dir, dir);
}

TEST_F(BundleTest, MissingManifest) {
  const std::string dir = copy_bundle("no-manifest");
  fs::remove(dir + "/manifest.json");
  expect_bad_model(dir, "manifest.json");
}

TEST_F(BundleTest, ManifestThatIsNotJson) {
  const std::string dir = copy_bundle("bad-json");
  replace_file(dir + "/manifest.json", "{ this is not json");
  expect_bad_model(dir, "manifest.json", "JSON");
}

TEST_F(BundleTest, MissingModuleFile) {
  const std::string dir = copy_bundle("missing-file");
  fs::remove(dir + "/clip_visual.pt");
  expect_bad_model(dir, "clip_visual.pt", "missing");
}

TEST_F(BundleTest, WrongFormatVersion) {
  const std::string dir = copy_bundle("version");
  edit_manifest(dir, [](nlohmann::json& m) { m["format_version"] = 2; });
  expect_bad_model(dir, "manifest.json", "format_version 2");
}

TEST_F(BundleTest, NewerTorchScriptFileFormatIsRefusedNamingBothVersions) {
  const std::string dir = copy_bundle("torch-format");
  const int newer = static_cast<int>(caffe2::serialize::kMaxSupportedFileFormatVersion) + 1;
  edit_manifest(dir, [&](nlohmann::json& m) {
    m["torch"] = {{"version", "9.8.7"}, {"torchscript_file_format_version", newer}};
  });
  const std::string runtime = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                              std::to_string(TORCH_VERSION_PATCH);
  expect_bad_model(dir, "torch 9.8.7", "file-format version " + std::to_string(newer));
  expect_bad_model(dir, "libtorch " + runtime,
                   "up to " + std::to_string(caffe2::serialize::kMaxSupportedFileFormatVersion));
  expect_bad_model(dir, "manifest.json", "Re-export");
  // the version this libtorch reads (what the exporter writes here) loads
  const std::string same = copy_bundle("torch-format-ok");
  edit_manifest(same, [](nlohmann::json& m) {
    m["torch"]["torchscript_file_format_version"] = static_cast<int>(caffe2::serialize::kMaxSupportedFileFormatVersion);
  });
  ModelOptions mo;
  mo.text_disk_cache = false;
  EXPECT_NO_THROW(Model::load(same, mo));
}

TEST_F(BundleTest, WrongFormatName) {
  const std::string dir = copy_bundle("format");
  edit_manifest(dir, [](nlohmann::json& m) { m["format"] = "something-else"; });
  expect_bad_model(dir, "manifest.json", "ovseg-bundle");
}

TEST_F(BundleTest, MissingManifestKey) {
  const std::string dir = copy_bundle("missing-key");
  edit_manifest(dir, [](nlohmann::json& m) { m["inference"].erase("demo"); });
  expect_bad_model(dir, "manifest.json", "inference.demo");
}

TEST_F(BundleTest, ChecksumMismatch) {
  const std::string dir = copy_bundle("checksum");
  std::string bytes = read_all(dir + "/bpe_simple_vocab_16e6.txt.gz");
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x5a);  // same size, other content
  replace_file(dir + "/bpe_simple_vocab_16e6.txt.gz", bytes);
  expect_bad_model(dir, "bpe_simple_vocab_16e6.txt.gz", "sha256");
}

// The modules' checksums are verified just before each module is read (overlapped with loading
// the one before): a changed byte in any of them, the last one included, still refuses the bundle.
TEST_F(BundleTest, ChecksumMismatchInEachModule) {
  for (const char* module : {"proposals.pt", "clip_visual.pt", "clip_text.pt"}) {
    SCOPED_TRACE(module);
    const std::string dir = copy_bundle(std::string("checksum-") + module);
    std::string bytes = read_all(dir + "/" + module);
    bytes[bytes.size() / 3] = static_cast<char>(bytes[bytes.size() / 3] ^ 0x21);  // same size, other content
    replace_file(dir + "/" + module, bytes);
    expect_bad_model(dir, module, "sha256 mismatch");
  }
}

TEST_F(BundleTest, TruncatedFile) {
  const std::string dir = copy_bundle("truncated");
  const std::string bytes = read_all(dir + "/proposals.pt");
  replace_file(dir + "/proposals.pt", bytes.substr(0, bytes.size() / 2));
  expect_bad_model(dir, "proposals.pt");
}

TEST_F(BundleTest, ModuleThatIsNotTorchScript) {
  // Checksums updated, so only the TorchScript loader can notice.
  const std::string dir = copy_bundle("not-torchscript");
  const std::string garbage(4096, 'x');
  replace_file(dir + "/clip_text.pt", garbage);
  const std::string sha = detail::sha256_file(dir + "/clip_text.pt");
  edit_manifest(dir, [&](nlohmann::json& m) {
    m["files"]["clip_text.pt"]["sha256"] = sha;
    m["files"]["clip_text.pt"]["bytes"] = garbage.size();
  });
  expect_bad_model(dir, "clip_text.pt", "TorchScript");
}

TEST_F(BundleTest, ModuleListedButNotInFiles) {
  const std::string dir = copy_bundle("unlisted");
  edit_manifest(dir, [](nlohmann::json& m) { m["files"].erase("clip_visual.pt"); });
  expect_bad_model(dir, "manifest.json", "clip_visual.pt");
}

}  // namespace
}  // namespace ovseg::test
