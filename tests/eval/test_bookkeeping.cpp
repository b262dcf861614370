// Eval bookkeeping: failed images counted and listed, "complete" honest,
// --strict, tampered checkpoints refused.
#include <fstream>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "eval/eval_test_util.hpp"
#include "eval/synthetic_dataset.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::eval {
namespace {

using test::TempDir;
namespace fs = std::filesystem;

EvalOptions options_for(const test::SyntheticDataset& ds, const fs::path& out) {
  EvalOptions o;
  o.dataset = "ade150";
  o.root = ds.root();
  o.output_dir = out.string();
  o.class_names = ds.class_names();
  o.settings = {{"model", "synthetic"}};
  return o;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

TEST(Bookkeeping, FailedImagesAreCountedListedAndMakeTheRunIncomplete) {
  TempDir dir("bookkeeping");
  test::SyntheticDataset ds(dataset_spec("ade150"), dir.path() / "datasets", 3);
  for (int i = 0; i < 4; ++i) ds.add_pair("ADE_val_0000010" + std::to_string(i), 20 + i, 16);
  ds.add_corrupt_image("ADE_val_00000200");
  ds.add_size_mismatch("ADE_val_00000201");
  const EvalOptions o = options_for(ds, dir.path() / "out");
  const EvalSummary s = run_evaluation(o, ds.predictor());
  EXPECT_EQ(s.evaluated_now, 4);
  EXPECT_EQ(s.failed_now, 2);
  EXPECT_TRUE(s.state.all_attempted());
  EXPECT_FALSE(s.state.complete());
  const auto j = read_json(dir.path() / "out" / "metrics.json");
  EXPECT_FALSE(j.at("counts").at("complete").get<bool>());
  EXPECT_EQ(j.at("counts").at("images_failed").get<int>(), 2);
  EXPECT_EQ(j.at("counts").at("images_not_attempted").get<int>(), 0);
  ASSERT_EQ(j.at("failed").size(), 2u);
  EXPECT_EQ(j.at("failed")[0].at("name").get<std::string>(), "ADE_val_00000200");
  EXPECT_EQ(j.at("failed")[1].at("name").get<std::string>(), "ADE_val_00000201");
  EXPECT_NE(j.at("failed")[1].at("reason").get<std::string>().find("but its label"), std::string::npos);

  // Without failures the same run is complete.
  TempDir dir2("bookkeeping-ok");
  test::SyntheticDataset ok(dataset_spec("ade150"), dir2.path() / "datasets", 3);
  for (int i = 0; i < 3; ++i) ok.add_pair("ADE_val_0000010" + std::to_string(i), 20 + i, 16);
  const EvalSummary good = run_evaluation(options_for(ok, dir2.path() / "out"), ok.predictor());
  EXPECT_TRUE(good.state.complete());
  EXPECT_TRUE(read_json(dir2.path() / "out" / "metrics.json").at("counts").at("complete").get<bool>());
}

TEST(Bookkeeping, StrictStopsAtTheFirstFailure) {
  TempDir dir("strict");
  test::SyntheticDataset ds(dataset_spec("ade150"), dir.path() / "datasets", 3);
  ds.add_pair("ADE_val_00000100", 20, 16);
  ds.add_corrupt_image("ADE_val_00000101");
  ds.add_pair("ADE_val_00000102", 20, 16);
  EvalOptions o = options_for(ds, dir.path() / "out");
  o.strict = true;
  int seen = 0;
  o.on_image = [&](const ImagePair&, const std::string&) { ++seen; };
  const EvalSummary s = run_evaluation(o, ds.predictor());
  EXPECT_TRUE(s.aborted);
  EXPECT_EQ(seen, 2);  // the third image was never started
  EXPECT_FALSE(s.state.complete());
  const auto j = read_json(dir.path() / "out" / "metrics.json");
  EXPECT_FALSE(j.at("counts").at("complete").get<bool>());
  EXPECT_EQ(j.at("counts").at("images_not_attempted").get<int>(), 1);
}

class TamperedCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("tamper");
    EvalState s;
    s.dataset = "ade150";
    s.split = "validation";
    s.cm = ConfusionMatrix(3);
    s.cm.at(0, 0) = 10;
    s.cm.at(1, 2) = 4;
    s.finished = {"a", "b"};
    s.pairs_total = 2;
    path_ = (dir_->path() / "checkpoint.json").string();
    save_state(path_, s);
    j_ = read_json(path_);
  }
  std::string error_after(const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = j_;
    edit(j);
    std::ofstream(path_) << j.dump();
    try {
      load_state(path_);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kBadData);
      return e.what();
    }
    return "(accepted)";
  }
  std::unique_ptr<TempDir> dir_;
  std::string path_;
  nlohmann::json j_;
};

TEST_F(TamperedCheckpoint, UntouchedLoads) { EXPECT_EQ(error_after([](nlohmann::json&) {}), "(accepted)"); }

TEST_F(TamperedCheckpoint, DuplicatedConfusionEntryIsRejected) {
  const std::string e = error_after([](nlohmann::json& j) {
    j["confusion"]["entries"].push_back(nlohmann::json::array({0, 0, 10}));
  });
  EXPECT_NE(e.find("confusion entry [0, 0] appears twice"), std::string::npos) << e;
  EXPECT_EQ(e.rfind(path_, 0), 0u) << e;
}

TEST_F(TamperedCheckpoint, DuplicatedFinishedNameIsRejected) {
  const std::string e = error_after([](nlohmann::json& j) { j["finished"].push_back("a"); });
  EXPECT_NE(e.find("\"a\" is listed twice"), std::string::npos) << e;
}

TEST_F(TamperedCheckpoint, AbsurdClassCountIsRejectedWithoutAllocating) {
  const std::string e = error_after([](nlohmann::json& j) { j["confusion"]["num_classes"] = 2000000000; });
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;
}

}  // namespace
}  // namespace ovseg::eval
