// The evaluation loop end to end on synthetic datasets (no model: predictions come from files):
// metrics against numpy, problems named, reports, predictions, checkpoints, resume and shards.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "eval/eval_test_util.hpp"
#include "eval/synthetic_dataset.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::eval {
namespace {

using test::TempDir;
namespace fs = std::filesystem;

// Valid pairs of varied sizes plus one instance of every broken case.
void populate(test::SyntheticDataset& ds) {
  for (int i = 0; i < 9; ++i) ds.add_pair("ADE_val_0000010" + std::to_string(i), 24 + 3 * i, 20 + (i % 4));
  ds.add_corrupt_label("ADE_val_00000200");
  ds.add_corrupt_image("ADE_val_00000201");
  ds.add_size_mismatch("ADE_val_00000202");
  ds.add_bad_label_value("ADE_val_00000203");
  ds.add_image_only("ADE_val_00000204");
  ds.add_label_only("ADE_val_00000205");
}

EvalOptions options_for(const test::SyntheticDataset& ds, const std::string&, const fs::path& out) {
  EvalOptions o;
  o.dataset = ds.spec().name;
  if (o.dataset == "custom") o.spec = ds.spec();
  o.root = ds.root();
  o.output_dir = out.string();
  o.class_names = ds.class_names();
  o.settings = {{"model", "synthetic"}, {"mode", "eval"}};
  o.checkpoint_every = 3;
  return o;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

std::set<std::string> names_of(const std::vector<FileProblem>& v) {
  std::set<std::string> s;
  for (const auto& p : v) s.insert(fs::path(p.name).filename().string());
  return s;
}

class RunnerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("runner");
    spec_storage_ = test::spec_for_test(GetParam(), dir_->path() / "datasets");
    spec_ = &spec_storage_;
    ds_ = std::make_unique<test::SyntheticDataset>(*spec_, dir_->path() / "datasets", 7);
    populate(*ds_);
  }
  EvalOptions options(const std::string& out) { return options_for(*ds_, GetParam(), dir_->path() / out); }

  DatasetSpec spec_storage_;
  const DatasetSpec* spec_ = nullptr;
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<test::SyntheticDataset> ds_;
};

TEST_P(RunnerTest, MetricsMatchNumpyAndEveryProblemIsNamed) {
  OVSEG_REQUIRE_NUMPY();
  EvalOptions o = options("out");
  o.save_predictions = true;
  long started_todo = -1;
  std::vector<std::string> reported;
  o.on_start = [&](long todo, long done) {
    started_todo = todo;
    EXPECT_EQ(done, 0);
  };
  o.on_image = [&](const ImagePair& p, const std::string& problem) {
    if (!problem.empty()) reported.push_back(p.stem);
  };
  const EvalSummary s = run_evaluation(o, ds_->predictor());
  EXPECT_EQ(started_todo, 13);  // 9 valid + 4 broken pairs
  EXPECT_EQ(s.evaluated_now, 9);
  EXPECT_EQ(s.failed_now, 4);
  EXPECT_FALSE(s.interrupted);
  EXPECT_EQ(reported.size(), 4u);
  const std::set<std::string> problems = names_of(s.problems());
  const std::set<std::string> expected_problems = {
      "ADE_val_00000200", "ADE_val_00000201", "ADE_val_00000202", "ADE_val_00000203",
      "ADE_val_00000205" + spec_->label_ext};
  EXPECT_EQ(problems, expected_problems);
  // The image without annotation is left out (load_sem_seg's intersection), counted, not an error.
  EXPECT_EQ(s.state.images_left_out, 1);
  for (const auto& p : s.state.failed) {
    if (p.name == "ADE_val_00000202") {
      EXPECT_NE(p.reason.find("but its label"), std::string::npos) << p.reason;
    } else if (p.name == "ADE_val_00000201") {
      EXPECT_NE(p.reason.find("cannot decode"), std::string::npos) << p.reason;
    } else if (p.name == "ADE_val_00000203") {
      EXPECT_NE(p.reason.find("label value"), std::string::npos) << p.reason;
    }
  }

  const auto e = test::numpy_expected(dir_->path(), spec_->num_classes, spec_->ignore_label, ds_->expected());
  ASSERT_FALSE(e.is_null());
  test::expect_matrix_matches(s.state.cm, e);
  test::expect_metrics_match(s.metrics, e);
  EXPECT_GT(s.metrics.classes_with_gt_or_pred, s.metrics.classes_with_gt);  // predicted-only classes

  // metrics.json: the same numbers (exact through JSON), nulls for classes without GT, problems.
  const fs::path out = o.output_dir;
  const auto j = read_json(out / "metrics.json");
  EXPECT_EQ(j.at("mIoU").get<double>(), e.at("mIoU").get<double>());
  EXPECT_EQ(j.at("mIoU_gt_classes").get<double>(), e.at("mIoU_gt_classes").get<double>());
  EXPECT_EQ(j.at("fwIoU").get<double>(), e.at("fwIoU").get<double>());
  EXPECT_EQ(j.at("mACC").get<double>(), e.at("mACC").get<double>());
  EXPECT_EQ(j.at("pACC").get<double>(), e.at("pACC").get<double>());
  ASSERT_EQ(j.at("per_class").size(), static_cast<std::size_t>(spec_->num_classes));
  for (int c = 0; c < spec_->num_classes; ++c) {
    const auto& row = j.at("per_class")[c];
    EXPECT_EQ(row.at("name").get<std::string>(), o.class_names[c]);
    EXPECT_EQ(row.at("IoU").is_null(), e.at("IoU")[c].is_null()) << c;
    if (!row.at("IoU").is_null()) {
      EXPECT_EQ(row.at("IoU").get<double>(), e.at("IoU")[c].get<double>()) << c;
    }
  }
  EXPECT_EQ(j.at("counts").at("images_evaluated").get<int>(), 9);
  EXPECT_EQ(j.at("counts").at("skipped_total").get<int>(), 5);
  EXPECT_EQ(j.at("skipped").size(), 5u);
  EXPECT_EQ(j.at("counts").at("images_without_annotation").get<int>(), 1);
  EXPECT_DOUBLE_EQ(j.at("timing").at("mean_ms_per_image").at("proposals").get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(j.at("timing").at("mean_ms_per_image").at("clip").get<double>(), 3.0);
  EXPECT_GT(j.at("timing").at("images_per_s").get<double>(), 0.0);

  // per_class.csv: header + K rows; names with commas are quoted.
  std::ifstream csv(out / "per_class.csv");
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(csv, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(spec_->num_classes) + 1);
  EXPECT_EQ(lines[0], "index,name,IoU,ACC,gt_pixels,pred_pixels,tp");
  EXPECT_EQ(lines[1].rfind("0,\"class 0, alias\",", 0), 0u) << lines[1];
  std::ifstream md_in(out / "metrics.md");
  const std::string md((std::istreambuf_iterator<char>(md_in)), std::istreambuf_iterator<char>());
  char miou[32];
  std::snprintf(miou, sizeof miou, "| %.2f |", e.at("mIoU").get<double>());
  EXPECT_NE(md.find(miou), std::string::npos) << md.substr(0, 600);
  EXPECT_NE(md.find("ADE_val_00000203"), std::string::npos);

  // --save-predictions: every evaluated image, in the dataset's format, kUnlabeled as ignore.
  for (const auto& stem : ds_->valid_stems()) {
    const auto path = out / kPredictionsDir / (stem + spec_->label_ext);
    const cv::Mat m = cv::imread(path.string(), cv::IMREAD_UNCHANGED);
    ASSERT_FALSE(m.empty()) << path;
    EXPECT_EQ(m.type(), spec_->label_bit_depth == 8 ? CV_8UC1 : CV_16UC1);
    const auto& pred = ds_->prediction(stem);
    ASSERT_EQ(m.total(), pred.size());
    for (std::size_t i = 0; i < pred.size(); ++i) {
      const std::uint32_t want = pred[i] == kUnlabeled ? spec_->ignore_label : pred[i];
      const std::uint32_t got = m.depth() == CV_8U ? m.data[i] : reinterpret_cast<const std::uint16_t*>(m.data)[i];
      if (got != want) {
        ADD_FAILURE() << path << " pixel " << i << ": " << got << " != " << want;
        break;
      }
    }
  }
  EXPECT_FALSE(fs::exists(out / kPredictionsDir / ("ADE_val_00000202" + spec_->label_ext)));
}

TEST_P(RunnerTest, ResumeAfterLimitOrInterruptionGivesIdenticalNumbers) {
  const EvalSummary whole = run_evaluation(options("whole"), ds_->predictor());

  // --limit 4, then --resume without limit.
  EvalOptions a = options("limited");
  a.limit = 4;
  const EvalSummary part = run_evaluation(a, ds_->predictor());
  EXPECT_EQ(part.evaluated_now + part.failed_now, 4);
  EXPECT_TRUE(part.state.all_attempted());
  EXPECT_EQ(part.state.complete(), part.failed_now == 0);  // complete = every image evaluated
  a.limit = -1;
  EXPECT_THROW(run_evaluation(a, ds_->predictor()), Error);  // a checkpoint exists, no --resume
  a.resume = true;
  long done_before = -1;
  a.on_start = [&](long, long done) { done_before = done; };
  const EvalSummary resumed = run_evaluation(a, ds_->predictor());
  EXPECT_EQ(done_before, 4 - part.failed_now);  // failed images are retried
  EXPECT_TRUE(resumed.state.cm == whole.state.cm);
  EXPECT_EQ(resumed.state.finished.size(), whole.state.finished.size());
  EXPECT_EQ(resumed.metrics.miou, whole.metrics.miou);
  EXPECT_EQ(resumed.metrics.miou_gt_classes, whole.metrics.miou_gt_classes);
  EXPECT_EQ(resumed.metrics.fwiou, whole.metrics.fwiou);
  EXPECT_EQ(resumed.metrics.macc, whole.metrics.macc);
  EXPECT_EQ(resumed.metrics.pacc, whole.metrics.pacc);
  EXPECT_EQ(names_of(resumed.problems()), names_of(whole.problems()));

  // Interrupted (as by SIGINT) after 5 images, then resumed.
  EvalOptions b = options("interrupted");
  int calls = 0;
  b.should_stop = [&] { return ++calls > 5; };
  const EvalSummary stopped = run_evaluation(b, ds_->predictor());
  EXPECT_TRUE(stopped.interrupted);
  EXPECT_FALSE(stopped.state.complete());
  const EvalState on_disk = load_state((dir_->path() / "interrupted" / kCheckpointFile).string());
  EXPECT_EQ(on_disk.finished.size() + on_disk.failed.size(), 5u);  // saved on the way out
  b.should_stop = nullptr;
  b.resume = true;
  const EvalSummary finished = run_evaluation(b, ds_->predictor());
  EXPECT_TRUE(finished.state.cm == whole.state.cm);
  EXPECT_EQ(finished.metrics.miou, whole.metrics.miou);
  EXPECT_TRUE(finished.state.all_attempted());
  EXPECT_FALSE(finished.state.failed.empty());  // the dataset holds broken pairs
  EXPECT_FALSE(finished.state.complete());

  // A checkpoint of another shard or dataset setting is refused.
  EvalOptions c = options("whole");
  c.resume = true;
  c.shard_count = 2;
  EXPECT_THROW(run_evaluation(c, ds_->predictor()), Error);
  c = options("whole");
  c.resume = true;
  c.settings["mask_threshold"] = "0.5";
  EXPECT_THROW(run_evaluation(c, ds_->predictor()), Error);
}

TEST_P(RunnerTest, CheckpointIsWrittenEveryNImages) {
  EvalOptions o = options("ckpt");
  o.checkpoint_every = 2;
  const std::string path = (dir_->path() / "ckpt" / kCheckpointFile).string();
  long images = 0;
  bool checked = false;
  o.on_image = [&](const ImagePair&, const std::string&) {
    ++images;
    // on_image runs before this image's checkpoint: the file holds the last multiple of 2 before it.
    const EvalState s = load_state(path);
    EXPECT_EQ(static_cast<long>(s.finished.size() + s.failed.size()), ((images - 1) / 2) * 2) << images;
    checked = true;
  };
  const EvalSummary s = run_evaluation(o, ds_->predictor());
  EXPECT_TRUE(checked);
  const EvalState final_state = load_state(path);
  EXPECT_TRUE(final_state.cm == s.state.cm);
  EXPECT_EQ(final_state.finished, s.state.finished);
}

TEST_P(RunnerTest, ShardsMergeIntoExactlyTheWholeRun) {
  const EvalSummary whole = run_evaluation(options("whole"), ds_->predictor());
  std::vector<EvalState> shards;
  std::size_t evaluated = 0;
  for (int i = 0; i < 3; ++i) {
    EvalOptions o = options("shard" + std::to_string(i));
    o.shard_index = i;
    o.shard_count = 3;
    const EvalSummary s = run_evaluation(o, ds_->predictor());
    evaluated += s.state.finished.size();
    shards.push_back(load_state((dir_->path() / ("shard" + std::to_string(i)) / kCheckpointFile).string()));
  }
  EXPECT_EQ(evaluated, whole.state.finished.size());
  std::vector<std::string> problems;
  // Any order of shards.
  const EvalState merged = merge_states({shards[2], shards[0], shards[1]}, &problems);
  EXPECT_TRUE(problems.empty()) << problems.front();
  EXPECT_TRUE(merged.cm == whole.state.cm);
  auto whole_finished = whole.state.finished;
  std::sort(whole_finished.begin(), whole_finished.end());
  EXPECT_EQ(merged.finished, whole_finished);
  EXPECT_EQ(names_of(merged.failed), names_of(whole.state.failed));
  EXPECT_EQ(names_of(merged.unpaired), names_of(whole.state.unpaired));  // listed by each shard, once here
  EXPECT_EQ(merged.pairs_total, whole.state.pairs_total);
  EXPECT_EQ(merged.images_left_out, whole.state.images_left_out);
  const Metrics m = compute_metrics(merged.cm);
  EXPECT_EQ(m.miou, whole.metrics.miou);
  EXPECT_EQ(m.miou_gt_classes, whole.metrics.miou_gt_classes);
  EXPECT_EQ(m.fwiou, whole.metrics.fwiou);
  EXPECT_EQ(m.macc, whole.metrics.macc);
  EXPECT_EQ(m.pacc, whole.metrics.pacc);
  EXPECT_EQ(merged.timings.images, whole.state.timings.images);

  // A missing shard makes the merge incomplete; the same shard twice, an overlap or other
  // settings are refused.
  merge_states({shards[0], shards[2]}, &problems);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("1/3 is missing"), std::string::npos) << problems[0];
  EXPECT_THROW(merge_states({shards[0], shards[0]}), Error);
  EvalState overlapping = shards[1];
  overlapping.shard_index = 2;
  overlapping.finished.push_back(shards[0].finished.front());
  EXPECT_THROW(merge_states({shards[0], overlapping}), Error);
  EvalState other = shards[1];
  other.settings["mode"] = "demo";
  EXPECT_THROW(merge_states({shards[0], other, shards[2]}), Error);
  EvalState other_split = shards[1];
  other_split.split = "training";
  EXPECT_THROW(merge_states({shards[0], other_split, shards[2]}), Error);
}

INSTANTIATE_TEST_SUITE_P(Layouts, RunnerTest,
                         ::testing::Values("ade150", "ade847", "pc59", "pc459", "voc20", "custom", "custom16"));

TEST(Runner, WrongClassCountAndMissingDatasetAreErrors) {
  TempDir dir("errors");
  EvalOptions o;
  o.dataset = "ade150";
  o.root = dir.str();
  o.output_dir = (dir.path() / "out").string();
  o.class_names = {"a", "b"};
  const Predictor never = [](const ImagePair&, int, int) -> Prediction { throw Error(ErrorCode::kRuntime, "unused"); };
  EXPECT_THROW(run_evaluation(o, never), Error);
  o.class_names.assign(150, "x");
  try {
    run_evaluation(o, never);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadData);
    EXPECT_NE(std::string(e.what()).find("ADEChallengeData2016"), std::string::npos) << e.what();
  }
}

TEST(State, SaveLoadRoundTripKeepsEverything) {
  TempDir dir("state");
  EvalState s;
  s.dataset = "ade847";
  s.split = "validation";
  s.shard_index = 2;
  s.shard_count = 5;
  s.class_names = {"wall", "road, route", "caf\xc3\xa9 \"quoted\""};
  s.settings = {{"model", "m"}, {"mask_threshold", "0.4"}};
  s.cm = ConfusionMatrix(3);
  s.cm.at(0, 0) = 5'000'000'000'123LL;  // beyond 32 bits and beyond float precision
  s.cm.at(3, 2) = 7;
  s.cm.at(1, 3) = 1;
  s.finished = {"b", "a"};
  s.failed = {{"c", "c.jpg: cannot decode"}};
  s.unpaired = {{"/x/d.png", "label without image"}};
  s.pairs_total = 4;
  s.images_left_out = 4998;
  s.timings.images = 2;
  s.timings.model.proposals_ms = 12.5;
  s.timings.model.clip_ms = 0.1 + 0.2;
  s.timings.wall_s = 3.25;
  s.timings.text_prepare_ms = 40;
  s.merged_from = {"0/5"};
  const std::string path = (dir.path() / "sub" / "ck.json").string();
  save_state(path, s);
  const EvalState r = load_state(path);
  EXPECT_EQ(r.dataset, s.dataset);
  EXPECT_EQ(r.split, s.split);
  EXPECT_EQ(r.shard_index, 2);
  EXPECT_EQ(r.shard_count, 5);
  EXPECT_EQ(r.class_names, s.class_names);
  EXPECT_EQ(r.settings, s.settings);
  EXPECT_TRUE(r.cm == s.cm);
  EXPECT_EQ(r.finished, s.finished);
  ASSERT_EQ(r.failed.size(), 1u);
  EXPECT_EQ(r.failed[0].reason, s.failed[0].reason);
  ASSERT_EQ(r.unpaired.size(), 1u);
  EXPECT_EQ(r.unpaired[0].name, s.unpaired[0].name);
  EXPECT_EQ(r.pairs_total, 4);
  EXPECT_EQ(r.images_left_out, 4998);
  EXPECT_EQ(r.timings.images, 2);
  EXPECT_EQ(r.timings.model.clip_ms, s.timings.model.clip_ms);
  EXPECT_EQ(r.timings.wall_s, 3.25);
  EXPECT_EQ(r.timings.text_prepare_ms, 40);
  EXPECT_EQ(r.merged_from, s.merged_from);
  // No temporary file is left behind by the atomic write.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path() / "sub")) files += e.is_regular_file() ? 1 : 0;
  EXPECT_EQ(files, 1);

  test::write_bytes(dir.path() / "bad.json", "{\"format\": \"ovseg-eval-checkpoint\", \"version\": 1}");
  try {
    load_state((dir.path() / "bad.json").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadData);
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos);
  }
  EXPECT_THROW(load_state((dir.path() / "absent.json").string()), Error);
}

}  // namespace
}  // namespace ovseg::eval
