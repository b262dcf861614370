#include "sam_flags.hpp"

namespace ovseg::cli {

void add_sam_generator_flags(CLI::App& app, SamGeneratorOptions& o) {
  const char* g = "SAM generator (segment-anything's SamAutomaticMaskGenerator parameters)";
  app.add_option("--points-per-side", o.points_per_side, "Points sampled along one side of the image")
      ->capture_default_str()->group(g);
  app.add_option("--points-per-batch", o.points_per_batch,
                 "Points per decoder call (memory only; the decoder runs at most 64 at a time)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str()->group(g);
  app.add_option("--pred-iou-thresh", o.pred_iou_thresh, "Keep masks whose predicted IoU exceeds this")
      ->capture_default_str()->group(g);
  app.add_option("--stability-score-thresh", o.stability_score_thresh, "Keep masks with a stability score at least this")
      ->capture_default_str()->group(g);
  app.add_option("--stability-score-offset", o.stability_score_offset, "Logit offset of the stability score")
      ->capture_default_str()->group(g);
  app.add_option("--box-nms-thresh", o.box_nms_thresh, "Box IoU cutoff of the NMS within a crop")
      ->capture_default_str()->group(g);
  app.add_option("--crop-n-layers", o.crop_n_layers, "Crop layers (layer i has (2^i)^2 crops)")
      ->capture_default_str()->group(g);
  app.add_option("--crop-nms-thresh", o.crop_nms_thresh, "Box IoU cutoff of the NMS across crops")
      ->capture_default_str()->group(g);
  app.add_option("--crop-overlap-ratio", o.crop_overlap_ratio, "Overlap of the first crop layer's crops")
      ->capture_default_str()->group(g);
  app.add_option("--crop-n-points-downscale-factor", o.crop_n_points_downscale_factor,
                 "Points per side in layer n are divided by this^n")
      ->capture_default_str()->group(g);
  app.add_option("--min-mask-region-area", o.min_mask_region_area,
                 "Remove holes and islands smaller than this (pixels; 0 = off)")
      ->capture_default_str()->group(g);
}

}  // namespace ovseg::cli
