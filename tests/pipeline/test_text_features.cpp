// Text features (docs/reference-behaviour.md §5.5): token trimming, the in-memory cache by name, the disk cache.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/fs_util.hpp"
#include "pipeline/pipeline.hpp"
#include "pipeline_test_util.hpp"

namespace fs = std::filesystem;

namespace ovseg::test {
namespace {

const char* kFixture = "tiny_swin_vit";

std::vector<std::string> bin_files(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".bin") out.push_back(e.path().string());
  return out;
}

ModelOptions cache_options(const std::string& dir) {
  ModelOptions mo;
  mo.text_disk_cache = true;
  mo.text_cache_dir = dir;
  return mo;
}

class TextFeaturesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    OVSEG_REQUIRE_BUNDLE(kFixture);
    classes_ = read_class_list(fixture_dir(kFixture) + "/classes.txt");
  }
  std::vector<std::string> classes_;
};

TEST_F(TextFeaturesTest, TrimmingTokensToTheLongestEotChangesNothing) {
  c10::InferenceMode guard;
  const detail::Manifest manifest = detail::read_manifest(bundle_dir(kFixture));
  const auto modules = detail::Modules::load(manifest, c10::Device(c10::kCPU), at::kFloat);
  const detail::TextFeatures text(manifest, *modules, detail::TextCacheOptions{false, ""});
  std::vector<std::string> names = classes_;
  names.push_back("chest of drawers, chest, bureau, dresser");  // a long one: batches of mixed length
  names.push_back("a");
  const at::Tensor trimmed = text.compute(names, /*trim_tokens=*/true);
  const at::Tensor full = text.compute(names, /*trim_tokens=*/false);
  ASSERT_EQ(trimmed.sizes(), full.sizes());
  const double diff = (trimmed - full).abs().max().item<double>();
  std::printf("[text] trimmed vs full-length tokens: max|diff| = %.3g\n", diff);
  EXPECT_LE(diff, 1e-6);
  // Unit rows.
  EXPECT_LE((trimmed.norm(2, {-1}) - 1).abs().max().item<double>(), 1e-6);
}

TEST_F(TextFeaturesTest, FeaturesDependOnTheNameOnlyNotOnTheList) {
  const Model& model = cached_model(bundle_dir(kFixture));
  const auto e = static_cast<std::size_t>(model.info().embed_dim);
  const auto ab = model.text_features({"grass", "sky"});
  const auto ba = model.text_features({"sky", "grass"});
  ASSERT_EQ(ab.size(), 3 * e);
  EXPECT_TRUE(std::equal(ab.begin(), ab.begin() + e, ba.begin() + e));           // grass
  EXPECT_TRUE(std::equal(ab.begin() + e, ab.begin() + 2 * e, ba.begin()));       // sky
  EXPECT_TRUE(std::equal(ab.begin() + 2 * e, ab.end(), ba.begin() + 2 * e));     // no-object row
  EXPECT_FALSE(std::equal(ab.begin(), ab.begin() + e, ab.begin() + e));
}

TEST_F(TextFeaturesTest, TooLongPromptIsAnInvalidArgument) {
  const Model& model = cached_model(bundle_dir(kFixture));
  std::string name;
  for (int i = 0; i < 80; ++i) name += "word ";
  try {
    model.text_features({name});
    FAIL() << "expected Error(kInvalidArgument)";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), ErrorCode::kInvalidArgument) << err.what();
  }
}

TEST_F(TextFeaturesTest, DiskCacheHitGivesIdenticalFeatures) {
  const std::string dir = scratch_dir("text-cache");
  std::vector<float> first;
  {
    const Model a = Model::load(bundle_dir(kFixture), cache_options(dir));
    first = a.text_features(classes_);
  }
  const auto files = bin_files(dir);
  EXPECT_EQ(files.size(), classes_.size());
  const Model b = Model::load(bundle_dir(kFixture), cache_options(dir));
  EXPECT_EQ(b.text_features(classes_), first);  // bit for bit

  // The second model really read the disk: a tampered entry comes back as written.
  const std::string name = classes_[0];
  const std::string hash = detail::sha256_hex(name.data(), name.size()).substr(0, 40) + ".bin";
  std::string path;
  for (const auto& f : files)
    if (fs::path(f).filename() == hash) path = f;
  ASSERT_FALSE(path.empty()) << "no cache file for " << name;
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  // Entry = header, name, floats, then the sha256 (32 bytes) of all that precedes it.
  const std::size_t digest = 32;
  const std::size_t first_float = bytes.size() - digest - static_cast<std::size_t>(b.info().embed_dim) * sizeof(float);
  const float tampered = 0.125f;
  std::memcpy(&bytes[first_float], &tampered, sizeof(float));
  // With the old checksum the change is detected: ignored, recomputed and rewritten.
  fs::remove(path);
  std::ofstream(path, std::ios::binary) << bytes;
  {
    const Model c = Model::load(bundle_dir(kFixture), cache_options(dir));
    EXPECT_NE(c.text_features(classes_)[0], tampered);
  }
  // With a matching checksum the entry is trusted: the value comes back as written.
  const std::string hex = detail::sha256_hex(bytes.data(), bytes.size() - digest);
  for (std::size_t i = 0; i < digest; ++i)
    bytes[bytes.size() - digest + i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  fs::remove(path);
  std::ofstream(path, std::ios::binary) << bytes;
  const Model c = Model::load(bundle_dir(kFixture), cache_options(dir));
  EXPECT_EQ(c.text_features(classes_)[0], tampered);

  // A corrupt entry is ignored (recomputed, alone: equal up to the rounding of another batch).
  std::ofstream(path, std::ios::binary | std::ios::trunc) << "garbage";
  const Model d = Model::load(bundle_dir(kFixture), cache_options(dir));
  const auto again = d.text_features(classes_);
  ASSERT_EQ(again.size(), first.size());
  for (std::size_t i = 0; i < first.size(); ++i) ASSERT_NEAR(again[i], first[i], 1e-6) << i;
}

TEST_F(TextFeaturesTest, CacheDirectoryFallsBackToTheEnvironment) {
  const std::string dir = scratch_dir("text-cache-env");
  ScopedEnv env("OVSEG_CACHE_DIR", dir);
  ModelOptions mo;  // text_cache_dir empty
  const Model m = Model::load(bundle_dir(kFixture), mo);
  m.prepare_classes({"sky"});
  EXPECT_EQ(bin_files(dir).size(), 1u);

  const std::string xdg = scratch_dir("text-cache-xdg");
  ScopedEnv no_ovseg("OVSEG_CACHE_DIR", "");
  ScopedEnv env2("XDG_CACHE_HOME", xdg);
  const Model n = Model::load(bundle_dir(kFixture), mo);
  n.prepare_classes({"sky"});
  EXPECT_EQ(bin_files(xdg + "/ovseg").size(), 1u);

  ModelOptions off;
  off.text_disk_cache = false;
  const std::string none = scratch_dir("text-cache-off");
  off.text_cache_dir = none;
  const Model o = Model::load(bundle_dir(kFixture), off);
  o.prepare_classes({"sky"});
  EXPECT_TRUE(bin_files(none).empty());
}

}  // namespace
}  // namespace ovseg::test
