// Class-name presets: lookup order, stripping, unknown names.
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "eval/eval_test_util.hpp"
#include "ovseg/eval.hpp"

namespace ovseg {
namespace {

using test::TempDir;

// Sets (or, with nullptr, unsets) an environment variable for the scope of a test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ScopedEnv(const char* name, const std::string& value) : ScopedEnv(name, value.c_str()) {}
  ~ScopedEnv() {
    if (had_) ::setenv(name_, old_.c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(Presets, ReadsTheSharedClassListsInLabelOrderStripped) {
  const std::string file = test::shared_dir() + "/class_lists.json";
  OVSEG_REQUIRE_PATH(file);
  ScopedEnv env("OVSEG_PRESETS", file);
  const auto ade150 = preset_classes("ade150");
  ASSERT_EQ(ade150.size(), 150u);
  EXPECT_EQ(ade150[0], "wall");
  EXPECT_EQ(ade150[6], "road, route");
  EXPECT_EQ(ade150[8], "window");  // "window " in detectron2's list, stripped (docs/reference-behaviour.md §8.1)
  const auto ade847 = preset_classes("ade847");
  ASSERT_EQ(ade847.size(), 847u);
  EXPECT_EQ(ade847[1], "building, edifice");
  EXPECT_EQ(ade847.back(), "adding machine, totalizer, totaliser");
  EXPECT_EQ(preset_classes("pc59").size(), 59u);
  EXPECT_EQ(preset_classes("pc459").size(), 459u);
  EXPECT_EQ(preset_classes("voc20").size(), 20u);
  EXPECT_EQ(preset_classes("coco171").size(), 171u);
}

// The repository ships the datasets' class lists (data/class_lists.json): a build tree finds them
// with no environment variable and no ../shared.
TEST(Presets, ShippedListsAreFoundWithoutEnvironmentOrSharedFolder) {
  ScopedEnv env("OVSEG_PRESETS", nullptr);
  const std::string found = find_presets_file();
  EXPECT_EQ(found.find("shared"), std::string::npos) << found;
  EXPECT_TRUE(std::filesystem::equivalent(found, test::source_dir() + "/data/class_lists.json")) << found;
  const auto ade150 = preset_classes("ade150");
  ASSERT_EQ(ade150.size(), 150u);
  EXPECT_EQ(ade150[0], "wall");
  EXPECT_EQ(ade150[8], "window");
  EXPECT_EQ(preset_classes("ade847").size(), 847u);
  EXPECT_EQ(preset_classes("pc59").size(), 59u);
  EXPECT_EQ(preset_classes("pc459").size(), 459u);
  EXPECT_EQ(preset_classes("voc20").size(), 20u);
  EXPECT_EQ(preset_classes("voc20")[0], "aeroplane");
  EXPECT_EQ(preset_classes("coco171").size(), 171u);
}

// ... and they are the reference's lists, name for name, in label order.
TEST(Presets, ShippedListsEqualTheReferenceLists) {
  const std::string ref = test::shared_dir() + "/class_lists.json";
  OVSEG_REQUIRE_PATH(ref);
  ScopedEnv env("OVSEG_PRESETS", nullptr);
  for (const auto& name : preset_names()) {
    SCOPED_TRACE(name);
    EXPECT_EQ(preset_classes(name), preset_classes(name, ref));
  }
}

TEST(Presets, ExplicitFileWinsOverTheEnvironmentAndNamesAreStripped) {
  TempDir dir("presets");
  test::write_bytes(dir.path() / "mine.json", R"({"ade150": ["  wall ", "window\t", "road, route"]})");
  test::write_bytes(dir.path() / "env.json", R"({"ade150": ["from env"]})");
  ScopedEnv env("OVSEG_PRESETS", (dir.path() / "env.json").string());
  EXPECT_EQ(preset_classes("ade150"), std::vector<std::string>{"from env"});
  const auto v = preset_classes("ade150", (dir.path() / "mine.json").string());
  EXPECT_EQ(v, (std::vector<std::string>{"wall", "window", "road, route"}));
  EXPECT_EQ(find_presets_file((dir.path() / "mine.json").string()), (dir.path() / "mine.json").string());
  // A known preset the file lacks, a malformed file, a missing file.
  EXPECT_THROW(preset_classes("voc20", (dir.path() / "mine.json").string()), Error);
  test::write_bytes(dir.path() / "broken.json", "{\"ade150\": [");
  try {
    preset_classes("ade150", (dir.path() / "broken.json").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadData);
    EXPECT_NE(std::string(e.what()).find("broken.json"), std::string::npos);
  }
  try {
    preset_classes("ade150", (dir.path() / "absent.json").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
  }
}

TEST(Presets, UnknownNameListsTheKnownOnes) {
  try {
    preset_classes("ade151");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    const std::string msg = e.what();
    for (const auto& n : preset_names()) EXPECT_NE(msg.find(n), std::string::npos) << msg;
  }
  EXPECT_EQ(preset_names(), (std::vector<std::string>{"ade150", "ade847", "pc59", "pc459", "voc20", "coco171"}));
}

}  // namespace
}  // namespace ovseg
