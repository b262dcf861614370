// The evaluation loop: listing, sharding, resuming, accumulating, checkpointing, reporting.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <system_error>

#include "common/fs_util.hpp"
#include "common/log.hpp"
#include "ovseg/eval.hpp"

namespace fs = std::filesystem;

namespace ovseg::eval {

std::vector<FileProblem> EvalSummary::problems() const {
  std::vector<FileProblem> v = state.unpaired;
  v.insert(v.end(), state.failed.begin(), state.failed.end());
  return v;
}

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void check_resumable(const EvalState& s, const EvalOptions& o, const DatasetSpec& spec, const std::string& path) {
  const int num_classes = spec.num_classes;
  const auto mismatch = [&](const std::string& what, const std::string& was, const std::string& now) {
    return Error(ErrorCode::kInvalidArgument, path + ": the checkpoint is for " + what + " " + was + ", this run asks for " +
                                                  now + " (use another --output to start afresh)");
  };
  if (!s.merged_from.empty())
    throw Error(ErrorCode::kInvalidArgument, path + ": this is a merged result, not a resumable run");
  if (s.dataset != spec.name) throw mismatch("dataset", s.dataset, spec.name);
  if (s.split != o.split) throw mismatch("split", s.split, o.split);
  if (s.shard_index != o.shard_index || s.shard_count != o.shard_count)
    throw mismatch("shard", std::to_string(s.shard_index) + "/" + std::to_string(s.shard_count),
                   std::to_string(o.shard_index) + "/" + std::to_string(o.shard_count));
  if (s.cm.num_classes() != num_classes || s.class_names != o.class_names)
    throw mismatch("classes", std::to_string(s.cm.num_classes()), std::to_string(num_classes));
  for (const auto& [key, value] : o.settings) {
    const auto it = s.settings.find(key);
    const std::string was = it == s.settings.end() ? "(unset)" : it->second;
    if (was != value) throw mismatch(key, was, value);
  }
  for (const auto& [key, value] : s.settings)
    if (o.settings.find(key) == o.settings.end()) throw mismatch(key, value, "(unset)");
}

}  // namespace

EvalSummary run_evaluation(const EvalOptions& o, const Predictor& predict) {
  const DatasetSpec spec = o.spec ? *o.spec : dataset_spec(o.dataset);
  if (static_cast<int>(o.class_names.size()) != spec.num_classes)
    throw Error(ErrorCode::kInvalidArgument, spec.name + " needs " + std::to_string(spec.num_classes) +
                                                 " class names, got " + std::to_string(o.class_names.size()));
  if (o.output_dir.empty()) throw Error(ErrorCode::kInvalidArgument, "no output directory given");
  if (o.checkpoint_every < 1)
    throw Error(ErrorCode::kInvalidArgument, "checkpoint interval must be at least 1, got " +
                                                 std::to_string(o.checkpoint_every));

  const DatasetListing listing = list_dataset(spec, o.root, o.split);
  for (const auto& p : listing.unpaired) detail::log().warn("skipped {}: {}", p.name, p.reason);
  std::vector<ImagePair> selected = select_shard(listing.pairs, o.shard_index, o.shard_count);
  if (o.limit >= 0 && static_cast<std::size_t>(o.limit) < selected.size()) selected.resize(o.limit);
  detail::log().info("{}: {} image pairs in {}, {} selected (shard {}/{}{}); {} images without annotation left out",
                     spec.name, listing.pairs.size(), listing.image_dir, selected.size(), o.shard_index,
                     o.shard_count, o.limit >= 0 ? ", limit " + std::to_string(o.limit) : std::string(),
                     listing.images_left_out);

  const std::string checkpoint = (fs::path(o.output_dir) / kCheckpointFile).string();
  std::error_code ec;
  EvalSummary summary;
  EvalState& st = summary.state;
  if (fs::exists(checkpoint, ec)) {
    if (!o.resume)
      throw Error(ErrorCode::kInvalidArgument, checkpoint + ": a checkpoint of an earlier run exists; pass --resume to "
                                                            "continue it, or choose another --output");
    st = load_state(checkpoint);
    check_resumable(st, o, spec, checkpoint);
    detail::log().info("resuming from {}: {} images done", checkpoint, st.finished.size());
  } else {
    if (o.resume) detail::log().info("{} not found; starting from the beginning", checkpoint);
    st.dataset = spec.name;
    st.split = o.split;
    st.shard_index = o.shard_index;
    st.shard_count = o.shard_count;
    st.class_names = o.class_names;
    st.settings = o.settings;
    st.cm = ConfusionMatrix(spec.num_classes);
  }
  // Failures of an earlier session are retried; the listing is taken afresh.
  st.failed.clear();
  st.unpaired = listing.unpaired;
  st.images_left_out = listing.images_left_out;
  st.pairs_total = static_cast<std::int64_t>(selected.size());
  st.timings.text_prepare_ms += o.text_prepare_ms;

  const std::set<std::string> done(st.finished.begin(), st.finished.end());
  std::vector<ImagePair> todo;
  for (const auto& p : selected)
    if (!done.count(p.stem)) todo.push_back(p);
  // Images finished earlier but outside this run's selection (a smaller --limit) stay counted.
  if (o.on_start) o.on_start(static_cast<long>(todo.size()), static_cast<long>(selected.size() - todo.size()));

  const fs::path predictions_dir = fs::path(o.output_dir) / kPredictionsDir;
  const fs::path json_parts_dir = fs::path(o.output_dir) / kSemSegJsonPartsDir;
  for (const fs::path& dir : {fs::path(o.output_dir), predictions_dir, json_parts_dir}) {
    if (dir == predictions_dir && !o.save_predictions) continue;
    if (dir == json_parts_dir && !o.save_json) continue;
    fs::create_directories(dir, ec);
    if (ec) throw Error(ErrorCode::kIo, dir.string() + ": cannot create directory (" + ec.message() + ")");
  }

  const auto loop_start = Clock::now();
  double wall_before = st.timings.wall_s;
  const auto save = [&] {
    st.timings.wall_s = wall_before + ms_since(loop_start) / 1000.0;
    save_state(checkpoint, st);
  };
  save();  // the run's selection and settings are on disk before the first image
  int since_checkpoint = 0;
  for (const auto& pair : todo) {
    if (o.should_stop && o.should_stop()) {
      summary.interrupted = true;
      break;
    }
    const auto t0 = Clock::now();
    std::string problem;
    try {
      const LabelImage gt = read_ground_truth(spec, pair.label_path);
      Prediction pred = predict(pair, gt.width, gt.height);
      if (pred.labels.width != gt.width || pred.labels.height != gt.height)
        throw Error(ErrorCode::kBadData, pair.image_path + ": image is " + std::to_string(pred.labels.width) + "x" +
                                             std::to_string(pred.labels.height) + " but its label " + pair.label_path +
                                             " is " + std::to_string(gt.width) + "x" + std::to_string(gt.height));
      if (pred.labels.values.size() != gt.values.size())
        throw Error(ErrorCode::kRuntime, pair.image_path + ": prediction has the wrong number of pixels");
      try {
        st.cm.add(pred.labels.values.data(), gt.values.data(), gt.values.size(), spec.ignore_label);
      } catch (const Error& e) {
        throw Error(e.code(), pair.image_path + ": " + e.what());
      }
      if (o.save_predictions)
        write_prediction(spec, (predictions_dir / prediction_file_name(spec, pair.stem)).string(), pred.labels);
      if (o.save_json)  // detectron2's file_name is the image path as load_sem_seg joined it
        detail::write_file_atomic((json_parts_dir / (pair.stem + ".json")).string(),
                                  sem_seg_json_records(pred.labels, pair.image_path, spec));
      st.finished.push_back(pair.stem);
      ++summary.evaluated_now;
      TimingTotals& t = st.timings;
      ++t.images;
      t.model += pred.timings;
      t.step_ms += ms_since(t0);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::kCancelled) {
        summary.interrupted = true;
        break;
      }
      problem = e.what();
    } catch (const std::exception& e) {
      // Anything the model throws (e.g. out of memory) fails this image, not the whole run.
      problem = pair.image_path + ": " + e.what();
    }
    if (!problem.empty()) {
      st.failed.push_back({pair.stem, problem});
      ++summary.failed_now;
      detail::log().warn("failed {}: {}", pair.stem, problem);
    }
    if (o.on_image) o.on_image(pair, problem);
    if (!problem.empty() && o.strict) {
      summary.aborted = true;
      break;
    }
    if (++since_checkpoint >= o.checkpoint_every) {
      save();
      since_checkpoint = 0;
    }
  }
  save();
  if (o.save_json) {
    std::vector<std::string> stems = st.finished;
    std::sort(stems.begin(), stems.end());  // the dataset's order, as the evaluator sees it
    const auto missing = write_sem_seg_json(o.output_dir, {json_parts_dir.string()}, stems);
    if (!missing.empty())
      detail::log().warn("{}: {} evaluated images have no predictions to write (evaluated by an earlier session "
                         "without --save-json), first: {}",
                         (fs::path(o.output_dir) / kSemSegJsonFile).string(), missing.size(), missing.front());
  }
  summary.metrics = compute_metrics(st.cm);
  write_reports(o.output_dir, st, summary.metrics);
  return summary;
}

}  // namespace ovseg::eval
