// The library decides how a dataset is evaluated (eval::evaluation_options / evaluation_settings /
// model_predictor): a C++ program that calls run_evaluation on pc59 gets the paper's weight 0.6,
// not the bundle's 0.7 — the weight used to be applied by the CLI only.
#include <gtest/gtest.h>

#include <string>

#include "ovseg/eval.hpp"
#include "pipeline_test_util.hpp"

namespace ovseg::test {
namespace {

TEST(EvaluationOptions, TheLibraryAloneGivesThePapersWeights) {
  std::string source;
  for (const char* name : {"pc59", "pc459"}) {
    const SegmentOptions o = eval::evaluation_options(eval::dataset_spec(name), {}, &source);
    ASSERT_TRUE(o.ensemble_weight) << name;
    EXPECT_FLOAT_EQ(*o.ensemble_weight, 0.6f) << name;
    EXPECT_EQ(source, "dataset default (ov-seg GETTING_STARTED)");
  }
  EXPECT_FLOAT_EQ(*eval::evaluation_options(eval::dataset_spec("voc20"), {}).ensemble_weight, 0.45f);
  // the bundle's (the config's 0.7).
  EXPECT_FALSE(eval::evaluation_options(eval::dataset_spec("ade150"), {}, &source).ensemble_weight);
  EXPECT_EQ(source, "bundle");
  // The caller's weight wins; demo mode keeps the bundle's demo weight.
  SegmentOptions mine;
  mine.ensemble_weight = 0.3f;
  EXPECT_FLOAT_EQ(*eval::evaluation_options(eval::dataset_spec("pc59"), mine, &source).ensemble_weight, 0.3f);
  EXPECT_EQ(source, "--ensemble-weight");
  SegmentOptions demo;
  demo.mode = Mode::kDemo;
  EXPECT_FALSE(eval::evaluation_options(eval::dataset_spec("pc59"), demo).ensemble_weight);
}

TEST(EvaluationOptions, SettingsRecordWhatTheNumbersDependOn) {
  const Model& model = cached_model(source_dir() + "/models/demo");
  std::string source;
  const auto spec = eval::dataset_spec("pc59");
  const SegmentOptions o = eval::evaluation_options(spec, {}, &source);
  const auto s = eval::evaluation_settings(model, spec, o, eval::Oracle::kNone, source);
  EXPECT_EQ(s.at("ensemble_weight"), "0.6");
  EXPECT_EQ(s.at("ensemble_weight_source"), source);
  EXPECT_EQ(s.at("mode"), "eval");
  EXPECT_EQ(s.at("oracle"), "none");
  EXPECT_EQ(s.at("precision"), model.info().precision);
  EXPECT_EQ(s.at("bundle_sha256").size(), 64u);
  EXPECT_EQ(s.count("clip_ensemble"), 0u);
  SegmentOptions mf = o;
  mf.clip_ensemble = false;
  EXPECT_EQ(eval::evaluation_settings(model, spec, mf, eval::Oracle::kNone, source).at("clip_ensemble"), "false");
}

}  // namespace
}  // namespace ovseg::test
