// segment-anything's automatic mask generator (SamAutomaticMaskGenerator of
// facebookresearch/segment-anything), natively: the proposals of ov-seg's online demo.
// Public API, no torch.
//
//   auto sam = ovseg::SamModel::load("bundles/sam-vit-h");        // tools/ovseg-export-sam
//   ovseg::SamResult r = sam.generate(img.view());                  // official defaults
//   for (const ovseg::SamMask& m : r.masks) ...                     // the generator's order
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ovseg/export.hpp"
#include "ovseg/ovseg.hpp"

namespace ovseg {

// The generator's parameters, with the official names and defaults (point_grids and
// output_mode are not options: the grids follow points_per_side, and masks are binary here).
struct OVSEG_API SamGeneratorOptions {
  int points_per_side = 32;
  int points_per_batch = 64;             // points per decoder call (memory only; same results)
  double pred_iou_thresh = 0.88;         // keep iou_pred > this (compared in float32); 0 = off
  double stability_score_thresh = 0.95;  // keep stability >= this (float32); 0 = off
  double stability_score_offset = 1.0;
  double box_nms_thresh = 0.7;
  int crop_n_layers = 0;
  double crop_nms_thresh = 0.7;
  double crop_overlap_ratio = 512.0 / 1500.0;
  int crop_n_points_downscale_factor = 1;
  int min_mask_region_area = 0;          // > 0: fill small holes, drop small islands, NMS again
};
// Throws Error(kInvalidArgument) naming the first bad parameter.
OVSEG_API void validate(const SamGeneratorOptions& options);

// One generated mask, as SamAutomaticMaskGenerator.generate() returns it.
struct OVSEG_API SamMask {
  std::vector<std::uint8_t> segmentation;  // height * width, 0/1
  std::int64_t area = 0;                   // pixels of `segmentation`
  std::array<std::int64_t, 4> bbox{};      // XYWH; x0,y0 = first pixel, w,h = last − first (official)
  double point_x = 0, point_y = 0;         // the prompt point (input pixels)
  float predicted_iou = 0;
  float stability_score = 0;
  std::array<std::int64_t, 4> crop_box{};  // XYWH of the crop that produced the mask
};

// Where the time of one generate() call went, in milliseconds.
struct OVSEG_API SamTimings {
  double preprocess_ms = 0;    // crops, ResizeLongestSide (Pillow bilinear)
  double encoder_ms = 0;       // image encoder, once per crop
  double decoder_ms = 0;       // prompt encoder + mask decoder over all point batches
  double postprocess_ms = 0;   // mask upsampling, thresholds, stability scores, boxes
  double nms_ms = 0;           // box NMS within and across crops
  double small_regions_ms = 0; // min_mask_region_area postprocessing
  double total_ms = 0;
};

struct OVSEG_API SamResult {
  int width = 0;   // the input image's size
  int height = 0;
  std::vector<SamMask> masks;  // the generator's output order
  int crops = 0;               // crop boxes processed
  SamTimings timings;
};

struct OVSEG_API SamModelInfo {
  std::string name;
  std::string bundle_dir;
  int img_size = 0;            // the encoder's square input (1024)
  int embed_dim = 0;           // ViT width
  int depth = 0;
  int prompt_embed_dim = 0;
  std::string manifest_json;   // the whole manifest, pretty-printed
  std::string device;
};

// A SAM bundle written by tools/ovseg-export-sam (models/SAM_BUNDLE_FORMAT.md), loaded once.
class OVSEG_API SamModel {
 public:
  // Uses options.device and options.threads; SAM always runs in float32.
  static SamModel load(const std::string& bundle_dir, const ModelOptions& options = {});

  SamModel(SamModel&&) noexcept;
  SamModel& operator=(SamModel&&) noexcept;
  SamModel(const SamModel&) = delete;
  SamModel& operator=(const SamModel&) = delete;
  ~SamModel();

  // The automatic mask generator on one image. Safe to call from several threads.
  SamResult generate(const ImageView& image, const SamGeneratorOptions& options = {}) const;

  const SamModelInfo& info() const noexcept;

 private:
  struct Impl;
  explicit SamModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ------------------------------------------------------------------------------------------------
// SAM proposals classified with an ov-seg bundle's CLIP: ov-seg's online demo
// (SAMVisualizationDemo.run_on_image).
// ------------------------------------------------------------------------------------------------
enum class SamClassifier {
  // The online demo: long side resized to 1280 (OpenCV bilinear), mean-filled box crops resized
  // bicubic to 224 THEN normalised, CLIP without mask prompt, the single template "a photo of {}",
  // softmax(100·img·txtᵀ), granularity selection, einsum, channel 0 exactly 0 → unlabelled.
  kDemo,
  // The ov-seg way on the same masks: crops normalised then resized (as the MaskFormer path), the
  // bundle's mask prompts and prompt templates; selection and map as kDemo.
  kOvseg,
};
OVSEG_API const char* to_string(SamClassifier c) noexcept;
OVSEG_API SamClassifier parse_sam_classifier(const std::string& s);  // "demo" | "ovseg"

struct OVSEG_API SamSegmentOptions {
  SamGeneratorOptions generator = demo_generator_options();
  double granularity = 1.0;  // < 1: every region whose score exceeds g × the class's best
  SamClassifier classifier = SamClassifier::kDemo;
  int long_side = 1280;      // the demo's resize before SAM (0 = none)
  bool keep_scores = false;  // fill Result::scores (the demo's einsum map, nearest-resized)

  // The generator as the demo builds it: official defaults with points_per_batch = 16.
  static SamGeneratorOptions demo_generator_options() {
    SamGeneratorOptions o;
    o.points_per_batch = 16;
    return o;
  }
};

// One SAM mask with its classification.
struct OVSEG_API SamRegion {
  int index = 0;              // position in the generator's output
  int class_index = 0;        // argmax of its class probabilities (into Result::score_classes)
  float score = 0;            // that probability
  std::vector<float> probs;   // softmax(100·img·txtᵀ) row (score_classes.size())
  bool selected = false;      // chosen by at least one class
  std::int64_t area = 0;      // pixels at the SAM input size
  Box box;                    // exclusive ends, at the SAM input size
  float predicted_iou = 0;
  float stability_score = 0;
};

struct OVSEG_API SamSegmentation {
  // Label map etc. at the original size; `segments` = every SAM mask in the generator's order
  // (query = its index): box and area scaled to the original size, the best of the caller's
  // classes and its probability, selected, predicted IoU and stability score.
  Result result;
  std::vector<SamRegion> regions; // the generator's order
  int sam_width = 0, sam_height = 0;  // the demo resize
  SamTimings sam_timings;
  double classify_ms = 0;         // crops + CLIP + text + map
  std::string message;            // non-empty when no mask survived (all-unlabelled map)
};

// Everything of one image that SamSegmenter::segment computes before the class names enter: the
// SAM masks (at the SAM input size), their boxes and scores, and the CLIP embedding of each masked
// crop, for one classifier, generator setting and resize. SamSegmenter::classify turns it into
// the segmentation of any class list and granularity, exactly what segment() gives. Movable, not
// copyable; immutable, so threads may classify one analysis at once.
class OVSEG_API SamAnalysis {
 public:
  SamAnalysis(SamAnalysis&&) noexcept;
  SamAnalysis& operator=(SamAnalysis&&) noexcept;
  SamAnalysis(const SamAnalysis&) = delete;
  SamAnalysis& operator=(const SamAnalysis&) = delete;
  ~SamAnalysis();

  std::size_t bytes() const noexcept;  // memory it holds (the masks are most of it)
  int width() const noexcept;          // original image size
  int height() const noexcept;
  int num_masks() const noexcept;
  const SamTimings& sam_timings() const noexcept;  // the generator, when it was made
  double regions_ms() const noexcept;              // crops and CLIP, when it was made

 private:
  friend class SamSegmenter;
  struct Impl;
  explicit SamAnalysis(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// An ov-seg bundle's CLIP (and tokenizer) with a SAM bundle.
class OVSEG_API SamSegmenter {
 public:
  static SamSegmenter load(const std::string& ovseg_bundle, const std::string& sam_bundle,
                           const ModelOptions& options = {});
  SamSegmenter(SamSegmenter&&) noexcept;
  SamSegmenter& operator=(SamSegmenter&&) noexcept;
  ~SamSegmenter();

  // Exactly classify(analyze(image, options), classes, options), with the analysis's times.
  SamSegmentation segment(const ImageView& image, const std::vector<std::string>& classes,
                          const SamSegmentOptions& options = {}) const;
  // The class-agnostic part: the demo resize, the generator, the crops and their CLIP embeddings.
  // Of the options, generator, classifier and long_side decide what it holds.
  SamAnalysis analyze(const ImageView& image, const SamSegmentOptions& options = {}) const;
  // The rest (text features, selection by granularity, the map) in milliseconds. Equals
  // segment()'s result for the same image, classes and options, byte for byte, except that the
  // timings show only what ran: Result::timings.proposals_ms is 0 and classify_ms the class part;
  // sam_timings are the analysis's. Throws Error(kInvalidArgument) naming the option when the
  // analysis was made with another classifier, long_side or generator option.
  SamSegmentation classify(const SamAnalysis& analysis, const std::vector<std::string>& classes,
                           const SamSegmentOptions& options = {}) const;
  const SamModel& sam() const noexcept;
  const ModelInfo& info() const noexcept;  // the ov-seg bundle

 private:
  struct Impl;
  explicit SamSegmenter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ovseg
