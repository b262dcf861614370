// ovseg evaluation: class-name presets, dataset layouts (ADE20K-150 / ADE20K-847), the confusion
// matrix and the metrics of the reference's evaluator (detectron2 0.6 SemSegEvaluator), resumable
// checkpoints, shard merging and the report files. Torch-free: the model is reached only through
// the Predictor callback of run_evaluation().
//
//   auto spec = ovseg::eval::dataset_spec("ade150");
//   ovseg::eval::EvalOptions o;  o.dataset = "ade150";  o.root = "datasets";  o.output_dir = "out";
//   o.class_names = ovseg::preset_classes(spec.preset);
//   auto summary = ovseg::eval::run_evaluation(o, [&](const ovseg::eval::ImagePair& p, int w, int h) {
//     ...;  // run the model on p.image_path, return its label map
//   });
//   std::puts(ovseg::eval::headline(summary.metrics).c_str());
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ovseg/export.hpp"
#include "ovseg/io.hpp"
#include "ovseg/ovseg.hpp"

namespace ovseg {

// ------------------------------------------------------------------------------------------------
// Class-name presets (the datasets' class lists in label order)
// ------------------------------------------------------------------------------------------------
// Known preset names: ade150, ade847, pc59, pc459, voc20, coco171.
OVSEG_API std::vector<std::string> preset_names();

// The JSON file the presets are read from: `presets_file` if not empty, else $OVSEG_PRESETS, else
// <install prefix>/share/ovseg/class_lists.json (found beside the library or the executable), else
// (a build tree) the source tree's data/class_lists.json. Throws Error(kIo) listing the places tried.
OVSEG_API std::string find_presets_file(const std::string& presets_file = {});

// The class names of a preset in label order, each stripped of outer whitespace.
// Throws Error(kInvalidArgument) for an unknown name (the message lists the known ones),
// Error(kIo / kBadData) when the presets file is missing or malformed.
OVSEG_API std::vector<std::string> preset_classes(const std::string& name, const std::string& presets_file = {});

namespace eval {

// ------------------------------------------------------------------------------------------------
// Datasets (docs/reference-behaviour.md §8), as ov-seg's register_*.py and detectron2's load_sem_seg define them
// ------------------------------------------------------------------------------------------------
struct OVSEG_API DatasetSpec {
  std::string name;            // "ade150" | "ade847" | "pc59" | "pc459" | "voc20" | "custom"
  std::string title;           // for people
  std::string preset;          // the class-name preset (empty for custom)
  int num_classes = 0;         // K
  std::uint32_t ignore_label = 255;
  int label_bit_depth = 8;     // of the label files (and of saved predictions)
  std::string image_dir;       // relative to the datasets root (or absolute); "{split}" is replaced
  std::string label_dir;
  std::string image_ext;       // ".jpg" (matched case-sensitively, as load_sem_seg's endswith)
  std::string label_ext;       // ".png" | ".tif"
  std::string default_split;   // "validation" (ADE) | "val" (the registered split of PC / VOC)
  // CLIP_ENSEMBLE_WEIGHT of ov-seg's GETTING_STARTED commands for this dataset (eval path); unset
  // = the bundle's (the config's 0.7, what the commands use).
  std::optional<float> ensemble_weight;
  // detectron2's contiguous id → dataset id (the reverse of stuff_dataset_id_to_contiguous_id),
  // used for category_id in sem_seg_predictions.json; empty = identity (all five benchmarks).
  std::vector<int> dataset_ids;
};

// The five benchmarks of the paper: ade150, ade847, pc59, pc459, voc20.
OVSEG_API std::vector<std::string> dataset_names();
// Throws Error(kInvalidArgument) for an unknown name, listing the known ones.
OVSEG_API const DatasetSpec& dataset_spec(const std::string& name);
// "--dataset custom": any dataset in the same style (images and labels paired by stem). The
// extensions may be given with or without the dot. Throws Error(kInvalidArgument) for K outside
// 1..65535, an ignore label that is a class index (< K) or above 65535, or an empty directory name.
OVSEG_API DatasetSpec custom_dataset_spec(const std::string& images_dir, const std::string& labels_dir, int num_classes,
                                std::uint32_t ignore_label, const std::string& image_ext = ".jpg",
                                const std::string& label_ext = ".png");

struct OVSEG_API ImagePair {
  std::string stem;
  std::string image_path;
  std::string label_path;
};

// A file that was skipped or failed, and why.
struct OVSEG_API FileProblem {
  std::string name;    // the file (or image stem) concerned
  std::string reason;
};

struct OVSEG_API DatasetListing {
  std::string image_dir;               // absolute-ish paths actually scanned
  std::string label_dir;
  std::vector<ImagePair> pairs;        // paired by stem, sorted by stem (byte order)
  // Images without an annotation. The image folders of PC / VOC hold many more images than the
  // split annotates; load_sem_seg evaluates the intersection, so these are left out, not errors.
  std::int64_t images_left_out = 0;
  std::vector<FileProblem> unpaired;   // a label without image (an incomplete dataset)
};

// Scans the dataset's image and label directories under `root`. Throws Error(kBadData) naming
// the directory when one is missing or holds no annotation.
OVSEG_API DatasetListing list_dataset(const DatasetSpec& spec, const std::string& root, const std::string& split);

// The pairs with index % shard_count == shard_index (over the sorted list).
OVSEG_API std::vector<ImagePair> select_shard(const std::vector<ImagePair>& pairs, int shard_index, int shard_count);
// The most shards a run may be split into (--shard I/N, Slurm, Kubernetes): far beyond any
// dataset's need (A-847 has 2000 images), small enough that nothing sized by N can exhaust memory.
inline constexpr int kMaxShards = 100000;
// Parses "I/N" (0 <= I < N <= kMaxShards). Throws Error(kInvalidArgument).
OVSEG_API std::pair<int, int> parse_shard(const std::string& text);
// Whether an image stem read from a checkpoint is a plain file name (what list_dataset gives):
// not empty, not "." or "..", no '/', '\\' or NUL. Stems become file names in eval outputs.
OVSEG_API bool is_plain_stem(const std::string& stem);

// The shard a run works on, and where that came from (for the log).
struct OVSEG_API ShardSpec {
  int index = 0;
  int count = 1;
  std::string source;  // "--shard 1/4", "Slurm array task 3 of 1-4 (job 812)", ...
};
// Reads an environment variable (std::getenv when empty); tests pass their own.
using EnvLookup = std::function<const char*(const char*)>;
// The shard count of a Kubernetes Indexed Job when --shards is not given.
inline constexpr const char* kShardCountEnv = "OVSEG_SHARD_COUNT";
// `text` is "I/N", or "auto":
//  - a Slurm array task: index (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP,
//    count SLURM_ARRAY_TASK_COUNT (so --array=1-8 gives shards 0..7 of 8); the array must be one
//    range (--array=1,3,7 is refused);
//  - else a Kubernetes Indexed Job: index JOB_COMPLETION_INDEX, count `shards`, else $OVSEG_SHARD_COUNT.
// `shards` > 0 (--shards N) must agree with the count found. Throws Error(kInvalidArgument) naming
// what is missing or inconsistent, e.g. when "auto" finds neither environment.
OVSEG_API ShardSpec resolve_shard(const std::string& text, int shards = 0, const EnvLookup& env = {});
// The positions (ascending) of the keys in shard I/N: the keys are ranked in byte order and rank
// % N == I, so the split does not depend on the order the keys come in and every key lands in
// exactly one shard. Throws Error(kInvalidArgument) for an invalid I/N.
OVSEG_API std::vector<std::size_t> shard_positions(const std::vector<std::string>& keys, int shard_index, int shard_count);

// Ground truth and predictions are ovseg::LabelMap (ovseg/io.hpp): 16-bit values (8-bit files
// are widened), `bit_depth` the file's.
using LabelImage = LabelMap;

// Reads a ground-truth label file at its stored size and checks every value is a class
// (0..K-1) or the ignore label. Throws Error(kBadData / kIo) naming the file.
OVSEG_API LabelImage read_ground_truth(const DatasetSpec& spec, const std::string& path);
// "<stem>.png" or "<stem>.tif", as the dataset's labels.
OVSEG_API std::string prediction_file_name(const DatasetSpec& spec, const std::string& stem);
// Writes a prediction in the dataset's label format; ovseg::kUnlabeled is written as the
// dataset's ignore label. Throws Error(kInvalidArgument / kIo).
OVSEG_API void write_prediction(const DatasetSpec& spec, const std::string& path, const LabelImage& prediction);

// ------------------------------------------------------------------------------------------------
// Predictions in detectron2's format (SemSegEvaluator.encode_json_sem_seg)
// ------------------------------------------------------------------------------------------------
inline constexpr const char* kSemSegJsonFile = "sem_seg_predictions.json";
inline constexpr const char* kSemSegJsonPartsDir = "sem_seg_json";  // one part per image (resumable)

// COCO run-length encoding as pycocotools' mask.encode computes it: runs over the pixels in
// column-major (Fortran) order, alternating 0s and 1s and starting with a (possibly empty) run of 0s.
// `mask` is row-major height × width, nonzero = 1.
OVSEG_API std::vector<std::uint32_t> rle_encode(const std::uint8_t* mask, int width, int height);
// pycocotools' compressed counts string (rleToString) and its inverse (rleFrString; throws
// Error(kBadData) for a malformed string).
OVSEG_API std::string rle_to_string(const std::vector<std::uint32_t>& counts);
OVSEG_API std::vector<std::uint32_t> rle_from_string(const std::string& s);

// The JSON text (Python json.dumps' separators and ASCII escaping) of a string.
OVSEG_API std::string python_json_string(const std::string& s);

// The records of one predicted label map, comma-separated (no brackets), exactly as
// json.dumps(encode_json_sem_seg(pred, file_name)) writes them inside its list: one record per
// predicted class in increasing order, {"file_name", "category_id" (through spec.dataset_ids),
// "segmentation": {"size": [h, w], "counts": compressed}}. kUnlabeled pixels (demo mode) belong to
// no record. Empty when no pixel has a class.
OVSEG_API std::string sem_seg_json_records(const LabelImage& prediction, const std::string& file_name, const DatasetSpec& spec);

// Writes <dir>/sem_seg_predictions.json (atomically) from the per-image parts in
// <dir>/sem_seg_json/<stem>.json of `stems` (in the order given). Returns the stems without a part.
OVSEG_API std::vector<std::string> write_sem_seg_json(const std::string& dir, const std::vector<std::string>& part_dirs,
                                            const std::vector<std::string>& stems);

// ------------------------------------------------------------------------------------------------
// Confusion matrix and metrics (docs/reference-behaviour.md §8.3, §8.4)
// ------------------------------------------------------------------------------------------------
// CM[pred, gt], (K+1) × (K+1), int64. Ground truth equal to the ignore label goes to column K;
// a prediction of ovseg::kUnlabeled (demo mode) goes to row K, which the detectron2 formulas leave
// out — exactly what the reference's evaluator would do with such a value.
class OVSEG_API ConfusionMatrix {
 public:
  ConfusionMatrix() = default;
  explicit ConfusionMatrix(int num_classes);

  int num_classes() const noexcept { return num_classes_; }
  int size() const noexcept { return num_classes_ + 1; }
  std::int64_t at(int pred, int gt) const { return counts_[static_cast<std::size_t>(pred) * size() + gt]; }
  std::int64_t& at(int pred, int gt) { return counts_[static_cast<std::size_t>(pred) * size() + gt]; }
  const std::vector<std::int64_t>& counts() const noexcept { return counts_; }  // row-major [pred][gt]

  // Adds one image. All-or-nothing: a value that is neither a class, nor (pred) kUnlabeled, nor
  // (gt) the ignore label throws Error(kBadData) and leaves the matrix unchanged.
  void add(const std::uint16_t* pred, const std::uint16_t* gt, std::size_t n, std::uint32_t ignore_label);
  // Sums another matrix of the same K (throws Error(kInvalidArgument) otherwise).
  void merge(const ConfusionMatrix& other);
  std::int64_t total() const;

  bool operator==(const ConfusionMatrix& o) const {
    return num_classes_ == o.num_classes_ && counts_ == o.counts_;
  }

 private:
  int num_classes_ = 0;
  std::vector<std::int64_t> counts_;
};

// Every value ×100, as the reference reports them. NaN where undefined.
struct OVSEG_API Metrics {
  int num_classes = 0;
  double miou = 0;             // detectron2 0.6 / ov-seg: Σ IoU over classes with GT ÷ #classes with GT or prediction
  double miou_gt_classes = 0;  // detectron2 since July 2022: mean IoU over classes with GT
  double fwiou = 0;
  double macc = 0;
  double pacc = 0;
  std::vector<double> iou;     // per class; NaN for classes without GT pixels
  std::vector<double> acc;
  std::vector<std::int64_t> tp, gt_pixels, pred_pixels;  // pred_pixels: over non-ignored GT only
  int classes_with_gt = 0;
  int classes_with_gt_or_pred = 0;
  std::int64_t pixels = 0;                  // non-ignored GT pixels
  std::int64_t ignored_pixels = 0;          // GT == ignore label
  std::int64_t unlabeled_predictions = 0;   // predicted kUnlabeled on non-ignored GT
};

// The formulas of docs/reference-behaviour.md §8.4, with numpy's summation order so the numbers match to the bit.
OVSEG_API Metrics compute_metrics(const ConfusionMatrix& cm);

// "mIoU=29.61 fwIoU=… mACC=… pACC=…"
OVSEG_API std::string headline(const Metrics& m);

// ------------------------------------------------------------------------------------------------
// Checkpoints and shards
// ------------------------------------------------------------------------------------------------
struct OVSEG_API TimingTotals {
  std::int64_t images = 0;      // images whose times are summed below
  Timings model;                // sums of Result::timings
  double step_ms = 0;           // sum of whole steps (GT read, decode, model, accumulate, save)
  double wall_s = 0;            // loop time, summed over sessions (and shards when merged)
  double text_prepare_ms = 0;   // text features before the loop (summed over sessions)
};

struct OVSEG_API EvalState {
  std::string dataset;
  std::string split;
  int shard_index = 0;
  int shard_count = 1;
  std::vector<std::string> class_names;
  // What determines the numbers (model, mode, thresholds, precision): merged shards must agree.
  std::map<std::string, std::string> settings;
  ConfusionMatrix cm;
  std::vector<std::string> finished;     // stems accumulated into cm
  std::vector<FileProblem> failed;       // images that failed in the last session (retried on resume)
  std::vector<FileProblem> unpaired;     // listing problems (a label without image)
  std::int64_t images_left_out = 0;      // images without annotation (not evaluated, not errors)
  std::int64_t pairs_total = 0;          // images selected for this run (after shard and limit)
  TimingTotals timings;
  std::vector<std::string> merged_from;  // eval-merge: the merged shards ("I/N") and their sources

  // Every selected image was attempted (evaluated or failed).
  bool all_attempted() const {
    return static_cast<std::int64_t>(finished.size() + failed.size()) >= pairs_total;
  }
  // Every selected image was evaluated: nothing failed, nothing left.
  bool complete() const { return failed.empty() && static_cast<std::int64_t>(finished.size()) >= pairs_total; }
};

// Atomic (temporary file + rename). The matrix is stored sparse, counts as exact int64.
OVSEG_API void save_state(const std::string& path, const EvalState& state);
// Throws Error(kBadData / kIo) naming the file.
OVSEG_API EvalState load_state(const std::string& path);

// Sums shard states. Throws Error(kInvalidArgument) when dataset, split, classes or settings
// differ, or when two shards evaluated the same image. `problems` receives what makes the merge
// incomplete (a missing or unfinished shard).
OVSEG_API EvalState merge_states(const std::vector<EvalState>& shards, std::vector<std::string>* problems = nullptr);

// Everything that stands in the way of merging `shards` into one run's numbers, each naming the
// shard by `names[i]` (its directory): a merged result given as a shard; another dataset, split,
// class list or setting than the first shard (the model bundle's checksum among the settings);
// shards of different counts N; an index given twice or missing; an unfinished shard. Empty when
// the merge gives exactly the numbers of one unsharded run.
OVSEG_API std::vector<std::string> check_shards(const std::vector<EvalState>& shards, const std::vector<std::string>& names);

// ------------------------------------------------------------------------------------------------
// Reports and the evaluation loop
// ------------------------------------------------------------------------------------------------
inline constexpr const char* kCheckpointFile = "checkpoint.json";
inline constexpr const char* kPredictionsDir = "predictions";

// metrics.json, per_class.csv and metrics.md in `dir` (atomically). `extra_problems` (e.g. an
// incomplete merge) are listed in the JSON and the markdown.
OVSEG_API void write_reports(const std::string& dir, const EvalState& state, const Metrics& metrics,
                   const std::vector<std::string>& extra_problems = {});

struct OVSEG_API Prediction {
  LabelImage labels;   // class index per pixel, or kUnlabeled
  Timings timings;
};
// Runs the model on one image. The label file's size is given so a mismatch can be reported
// before the model runs. Throwing marks the image as failed (named in the summary).
using Predictor = std::function<Prediction(const ImagePair& pair, int label_width, int label_height)>;

struct OVSEG_API EvalOptions {
  std::string dataset = "ade150";
  std::optional<DatasetSpec> spec;            // the layout; unset = dataset_spec(dataset) (set it for custom)
  std::string root;
  std::string split = "validation";
  std::string output_dir;
  std::vector<std::string> class_names;       // K names in label order
  std::map<std::string, std::string> settings;
  long limit = -1;                            // first N images of the (shard's) list; < 0 = all
  int shard_index = 0;
  int shard_count = 1;
  bool resume = false;
  bool save_predictions = false;
  bool save_json = false;                     // sem_seg_predictions.json (detectron2's format)
  int checkpoint_every = 20;
  // Stop at the first image that fails (after checkpointing it as failed); EvalSummary::aborted.
  bool strict = false;
  double text_prepare_ms = 0;
  // Called once before the loop: images left to do, images already done (resumed).
  std::function<void(long todo, long done_before)> on_start;
  // Called after each image; `problem` is empty on success.
  std::function<void(const ImagePair& pair, const std::string& problem)> on_image;
  // Polled before each image; true stops the loop (a checkpoint is written first).
  std::function<bool()> should_stop;
};

struct OVSEG_API EvalSummary {
  EvalState state;
  Metrics metrics;
  long evaluated_now = 0;   // images evaluated in this session
  long failed_now = 0;
  bool interrupted = false;
  bool aborted = false;  // strict: stopped at the first failed image
  // Everything skipped or failed (unpaired files first), for the summary.
  std::vector<FileProblem> problems() const;
};

// Lists, shards, resumes from <output>/checkpoint.json (with options.resume), evaluates every
// remaining image with `predict`, checkpoints every `checkpoint_every` images and at the end, and
// writes the reports. Throws Error(kBadData) for a missing dataset directory and
// Error(kInvalidArgument) for inconsistent options or a checkpoint that does not fit.
OVSEG_API EvalSummary run_evaluation(const EvalOptions& options, const Predictor& predict);

// ---- The paper's §3 analysis (`ovseg eval --oracle masks|labels`) ----------------------------
//
//   oracle masks:  the ground-truth segments (one region per class present) replace the MaskFormer
//                  proposals; each is classified by CLIP through the region path (crop, fill, R×R,
//                  mask prompts) and its pixels take the winning class. Measures CLIP on masked
//                  regions alone (the paper: 20.1 mIoU on A-150 with pretrained CLIP).
//   oracle labels: the MaskFormer proposals (the valid regions of the eval path) each take the
//                  ground-truth class covering most of their binary mask; the score map is then
//                  computed as usual with those one-hot probabilities. Measures the proposals
//                  (the paper: 66.5 mIoU on A-150).
enum class Oracle { kNone, kMasks, kLabels };
OVSEG_API const char* to_string(Oracle o) noexcept;  // "none" | "masks" | "labels"
OVSEG_API Oracle parse_oracle(const std::string& s);  // throws Error(kInvalidArgument)

// The ground truth of one image, at the image's decoded size (e.g. read_ground_truth's values).
struct GroundTruthView {
  const std::uint16_t* labels = nullptr;  // height × width
  int width = 0;
  int height = 0;
  std::uint32_t ignore_label = 255;
};

// Model::segment on the evaluation path with an oracle. Pixels the ground truth ignores are
// kUnlabeled in the oracle-masks result. Throws Error(kInvalidArgument) for the demo mode, the
// MaskFormer-only path, a ground truth of another size than the image, or a label that is neither
// a class nor ignored.
OVSEG_API Result segment_with_oracle(const Model& model, const ImageView& image, const std::vector<std::string>& classes,
                                     const SegmentOptions& options, Oracle oracle, const GroundTruthView& ground_truth);

// ---- Evaluating a Model (the library decides; `ovseg eval` asks) --------------------------------

// The options an evaluation of `spec` segments with: `options`, with the dataset's ensemble weight
// (DatasetSpec::ensemble_weight: 0.6 for PC-59 / PC-459, 0.45 for PAS-20, ov-seg GETTING_STARTED)
// where the options leave it unset, on the evaluation path. *weight_source (optional) says where
// the weight came from: "option", "dataset default (ov-seg GETTING_STARTED)" or "bundle".
OVSEG_API SegmentOptions evaluation_options(const DatasetSpec& spec, SegmentOptions options,
                                            std::string* weight_source = nullptr);

// What an evaluation's numbers depend on (EvalOptions::settings): the model and bundle, mode,
// threshold, weight (and its source), oracle, precision, MaskFormer-only; a resumed run and merged
// shards must agree on all of it. `options` as evaluation_options() returns them.
OVSEG_API std::map<std::string, std::string> evaluation_settings(const Model& model, const DatasetSpec& spec,
                                                                 const SegmentOptions& options, Oracle oracle,
                                                                 const std::string& weight_source);

// How a predictor gets the analysis of an image: `key` is Model::analysis_key of the file's
// content, `analyze` computes it. The default analyzes every image; `ovseg eval --dataset
// ade150,ade847` shares one analysis of each image between the datasets' runs.
using AnalysisProvider =
    std::function<std::shared_ptr<const Analysis>(const std::string& key, const std::function<Analysis()>& analyze)>;

// The Predictor `ovseg eval` uses: the image decoded (at most max_pixels), its size checked
// against the label's, then segmented with `options` (evaluation_options) and the oracle. With a
// provider (no oracle), classify(provider(key, analyze)) instead of segment (the same labels).
OVSEG_API Predictor model_predictor(const Model& model, const DatasetSpec& spec, const std::vector<std::string>& classes,
                                    const SegmentOptions& options, Oracle oracle = Oracle::kNone,
                                    std::uint64_t max_pixels = kDefaultMaxPixels, AnalysisProvider provider = {});

}  // namespace eval
}  // namespace ovseg
