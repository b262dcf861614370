// The segmentation pipeline's stages (docs/reference-behaviour.md §3–§7), one function per arrow of the README's flow.
// Internal header WITH torch (ATen): only src/pipeline/*.cpp and tests/pipeline include it —
// never a public header or tools/.
//
// Conventions: tensors live on the modules' device; everything outside the TorchScript modules is
// float32 whatever the precision (inputs are cast to the module dtype at the module boundary and
// outputs back to float32). Shapes are written in the notation of docs/reference-behaviour.md:
// Q queries, K classes, E embedding size, (h, w) resized, (Hp, Wp) padded, (H0, W0) original,
// Nv valid regions, R region resolution.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "ovseg/ovseg.hpp"
#include "ovseg/tokenizer.hpp"
#include "pipeline/manifest.hpp"

namespace ovseg::detail {

// The library's error boundary: runs f, turning torch's and the standard library's exceptions into
// ovseg::Error(kRuntime) with context; ovseg::Error passes through. Every public entry point of
// the pipeline (Model, SamModel, SamSegmenter) goes through it.
template <class F>
auto translate_errors(const std::string& context, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::kRuntime, context + ": " + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::kRuntime, context + ": out of memory");
  } catch (const std::exception& e) {
    throw Error(ErrorCode::kRuntime, context + ": " + e.what());
  }
}

// ---- threads.cpp --------------------------------------------------------------------------------
// Sets ATen's intra-op thread count once per process (0 = the cores this process may use).
// Later calls with a different count only log: torch cannot change it safely afterwards.
void init_threads(int requested);
int usable_cores();

// ---- memory.cpp ---------------------------------------------------------------------------------
// Hands the heap's free pages back to the system (glibc; no-op elsewhere). Called after stages
// that free hundreds of MB, so the next stage's peak does not stack on memory nobody uses.
void release_freed_memory();

// ---- bundle.cpp ---------------------------------------------------------------------------------
// "cpu", "cuda", "cuda:N"; throws kInvalidArgument for anything else and kRuntime when CUDA (or
// that GPU) is not available in this build/machine.
c10::Device parse_device(const std::string& device);
c10::ScalarType scalar_type(Precision p);
// Waits for queued GPU work (for honest per-stage timings); no-op on CPU.
void synchronize(c10::Device device);

// The three TorchScript modules of a bundle, moved to a device and dtype.
class Modules {
 public:
  // Throws Error(kBadModel) naming the file that is not a loadable TorchScript module. lazy: the
  // proposal network and the CLIP visual tower are loaded (checksum, probe) on first use, so a
  // model that only classifies analyses never reads them; `manifest` must outlive the Modules.
  static std::unique_ptr<Modules> load(const Manifest& manifest, c10::Device device, c10::ScalarType dtype,
                                       bool lazy = false);
  ~Modules();
  Modules(const Modules&) = delete;
  Modules& operator=(const Modules&) = delete;

  // x [1,3,Hp,Wp] float32 → (class embeddings [Q,E], mask logits [Q,Hp/s,Wp/s]), float32.
  std::pair<at::Tensor, at::Tensor> proposals(const at::Tensor& x) const;
  // images [N,3,R,R], masks [N,1,R,R] float32 → L2-normalised embeddings [N,E] float32.
  at::Tensor clip_visual(const at::Tensor& images, const at::Tensor& masks) const;
  // tokens [n,L] int64 → text embeddings [n,E] float32 (not normalised).
  at::Tensor clip_text(const at::Tensor& tokens) const;
  // The raw learned no-object embedding [1,E], float32.
  const at::Tensor& non_object_embedding() const;
  // Rounds the CLIP towers' weights to float16 and back, in place, as OpenAI CLIP's
  // convert_weights does (Conv/Linear weights and biases, MultiheadAttention input projections,
  // `text_projection` and `proj`; embeddings and LayerNorms untouched). Only for the SAM demo
  // classifier, whose reference ran on such weights (see sam_classify.cpp); returns the count.
  int round_clip_weights_to_half();

  c10::Device device() const;
  // The requested precision; the reduced types apply to the CLIP visual tower only (the proposal
  // network and the text tower always run in float32: see Modules::load).
  c10::ScalarType dtype() const;
  c10::ScalarType visual_dtype() const;
  c10::ScalarType text_dtype() const;

 private:
  struct Impl;
  explicit Modules(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- text_features.cpp --------------------------------------------------------------------------
struct TextCacheOptions {
  bool disk = true;
  std::string dir;  // resolved directory (see resolve_text_cache_dir)
};
// option (ModelOptions::text_cache_dir) → $OVSEG_CACHE_DIR → $XDG_CACHE_HOME/ovseg → ~/.cache/ovseg.
std::string resolve_text_cache_dir(const std::string& option);

// Per-class text features (docs/reference-behaviour.md §5.5) with an in-memory cache (by name) and an on-disk cache
// keyed by the text tower's sha256, the templates, the tokenizer, the precision and device kind.
class TextFeatures {
 public:
  TextFeatures(const Manifest& manifest, const Modules& modules, TextCacheOptions cache);
  ~TextFeatures();

  // T [(K+1),E] float32 on the modules' device: the class rows, then the normalised no-object row.
  at::Tensor text_matrix(const std::vector<std::string>& names) const;
  // [K,E] float32 on CPU, L2-normalised rows; computed (and cached) where missing.
  at::Tensor class_features(const std::vector<std::string>& names) const;
  // Throws Error(kInvalidArgument) for a name with a control character, and for two names whose
  // token ids are equal ("café"/"CAFÉ", "red car"/"red  car"): CLIP gives them the same
  // feature, so the second could never win a pixel. Called by class_features().
  void check_names(const std::vector<std::string>& names) const;
  // Computes without any cache. trim_tokens = false runs the full context length (the reference);
  // true cuts every batch to its longest EOT (same result up to float rounding, much faster).
  at::Tensor compute(const std::vector<std::string>& names, bool trim_tokens = true) const;

  // The directory this model's disk cache uses (empty when disabled).
  const std::string& disk_dir() const { return disk_dir_; }
  std::size_t memory_entries() const;
  void clear_memory_cache() const;

 private:
  at::Tensor read_disk(const std::string& name) const;
  void write_disk(const std::string& name, const at::Tensor& feature) const;

  const Manifest& manifest_;
  const Modules& modules_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string disk_dir_;
  at::Tensor non_object_row_;  // [1,E] float32 on device, normalised
  mutable std::mutex mutex_;
  mutable std::unordered_map<std::string, at::Tensor> memory_;  // name → [E] float32 CPU
  mutable std::vector<std::string> last_checked_;                // check_names: the last list that passed
};

// Fills "{}" of a prompt template with a class name (Python str.format with one argument).
std::string format_template(const std::string& tmpl, const std::string& name);

// ---- proposals.cpp ------------------------------------------------------------------------------
struct ProposalInput {
  at::Tensor image;   // [3,h,w] float32 0–255, the resized un-normalised RGB image (CLIP's source)
  at::Tensor padded;  // [1,3,Hp,Wp] float32, normalised, zero-padded right/bottom (docs/reference-behaviour.md §3.1)
};
ProposalInput prepare_proposal_input(const Image& resized, const Manifest& manifest, c10::Device device);

struct Proposals {
  at::Tensor class_embeddings;  // [Q,E] float32, before L2 normalisation
  at::Tensor mask_logits;       // [Q,Hp/s,Wp/s] float32, s = the mask stride (4; 2 for the demo model)
};
Proposals run_proposals(const Modules& modules, const at::Tensor& padded);

// ---- regions.cpp --------------------------------------------------------------------------------
// Bilinear 4× (align_corners false) to [Hp,Wp], crop to h×w, sigmoid (docs/reference-behaviour.md §4.6) → M [Q,h,w].
// The whole map at once: for tests and small inputs; the pipeline reads it through SoftMasks.
at::Tensor upsample_masks(const at::Tensor& mask_logits, int64_t hp, int64_t wp, int64_t h, int64_t w);

// The soft masks M [Q,h,w] without ever holding them whole (218 MB of float at 640×853 for 100
// queries, plus as much again for the padded upsampling): consumers take rows in chunks,
// recomputed from the low-resolution logits. The resize and the sigmoid work per channel, so a
// row's values do not depend on which other rows share its chunk.
class SoftMasks {
 public:
  SoftMasks(at::Tensor mask_logits, int64_t hp, int64_t wp, int64_t h, int64_t w);
  int64_t num_queries() const { return logits_.size(0); }
  int64_t height() const { return h_; }
  int64_t width() const { return w_; }
  // M[queries] [n,h,w] float32 for n query indices (int64, on the logits' device).
  at::Tensor rows(const at::Tensor& queries) const;
  // How many rows one chunk may have: a memory budget over the padded map and the cropped rows.
  int64_t rows_per_chunk() const;

 private:
  at::Tensor logits_;  // [Q,Hp/s,Wp/s] float32
  int64_t hp_, wp_, h_, w_;
};

struct RegionBox {
  int64_t x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // exclusive ends, resized coordinates
};
struct Regions {
  at::Tensor valid;                  // [Q] bool: M[q] > thr somewhere (strict)
  at::Tensor binary;                 // B [Q,h,w] bool = M > thr (1 byte a pixel; rows of invalid queries are all false)
  std::vector<int64_t> queries;      // valid query indices, ascending (Nv)
  std::vector<RegionBox> boxes;      // per valid region
  std::vector<int64_t> areas;        // binary-mask pixel counts at the resized size
  at::Tensor images;                 // [Nv,3,R,R] float32 CLIP-normalised bicubic crops
  at::Tensor masks;                  // [Nv,1,R,R] float32 0/1 nearest-resized masks
};
// docs/reference-behaviour.md §6.1–§6.4 from the resized image [3,h,w] (0–255) and the soft masks M. Without crops
// (`with_crops` false: the oracle-labels analysis needs no CLIP) images and masks are empty.
Regions extract_regions(const at::Tensor& image, const SoftMasks& masks, float threshold, const Manifest& manifest,
                        bool with_crops = true);
// The same region path (§6.2–§6.4) for given binary masks [N,h,w] bool, every one a region (the
// oracle-masks analysis). Throws Error(kInvalidArgument) for an empty mask.
Regions regions_from_masks(const at::Tensor& image, const at::Tensor& binary, const Manifest& manifest);

// ---- region_classifier.cpp ----------------------------------------------------------------------
// logits [N,K+1] = (temperature · x) · Tᵀ (docs/reference-behaviour.md §4.5 with x = ê_q, §6.6 with x = v_r).
at::Tensor similarity_logits(const at::Tensor& features, const at::Tensor& text, double temperature);
// MaskFormer class logits [Q,K+1] from raw class embeddings [Q,E] (normalised here, no epsilon).
at::Tensor maskformer_logits(const at::Tensor& class_embeddings, const at::Tensor& text, double temperature);
// CLIP visual over the valid regions in batches, then its logits [Nv,K+1]; an empty [0,K+1]
// tensor when there is no region.
at::Tensor clip_region_logits(const Modules& modules, const Regions& regions, const at::Tensor& text,
                              double temperature, int batch);
// Its class-agnostic half: the L2-normalised CLIP embeddings [Nv,E] float32 of the valid regions
// (an empty [0,E] tensor when there is none). clip_region_logits = similarity_logits of these.
at::Tensor clip_region_features(const Modules& modules, const Regions& regions, int batch);
// Regions per CLIP forward: `requested` when > 0, else what a memory budget allows.
int choose_region_batch(const Manifest& manifest, c10::Device device, c10::ScalarType dtype, int requested,
                        int64_t num_regions);

// ---- ensemble.cpp -------------------------------------------------------------------------------
// [QUIRK] The class list the model works with (docs/reference-behaviour.md §7.3): the caller's,
// except that the demo path appends "others" to a single class. Result::score_classes; "others"
// pixels become kUnlabeled.
std::vector<std::string> model_classes(Mode mode, const std::vector<std::string>& classes);
// Demo, (x, "others") — appended or the caller's own: "others" selects no region
// (docs/reference-behaviour.md §7.2 step 3).
bool others_selects_no_region(Mode mode, const std::vector<std::string>& model_classes);

struct EnsembleInput {
  at::Tensor mf_logits;    // [Q,K+1]
  const SoftMasks* masks = nullptr;  // M (eval path)
  at::Tensor binary;       // B [Q,h,w] bool = M > mask_threshold (demo path; Regions::binary)
  bool binary_valid_only = false;  // binary holds the valid queries' rows only, [Nv,h,w] in query order
  at::Tensor valid;        // [Q] bool
  at::Tensor clip_logits;  // [Nv,K+1] (Nv may be 0)
  double ensemble_weight = 0;
  // false: MaskFormer-only (eval): p = softmax(mf_logits)[:, :K] over all queries, no CLIP term.
  bool clip_branch = true;
  Mode mode = Mode::kEval;
  // Demo: the class list the model used is (x, "others"): "others" selects no region (§7.2 of
  // docs/reference-behaviour.md).
  bool skip_last_selection = false;
  int64_t out_height = 0;  // H0, W0
  int64_t out_width = 0;
  bool keep_scores = false;
  // [Nv,K] class probabilities that replace those of the valid queries (the oracle-labels
  // analysis): eval path, only the valid queries contribute, each with its soft mask.
  at::Tensor probs_override;
};
struct EnsembleOutput {
  at::Tensor scores;             // [K,H0,W0] float32 on CPU, when keep_scores (else undefined)
  std::vector<int32_t> argmax;   // H0·W0 raw argmax over the K channels (first maximum wins)
  std::vector<uint8_t> uncovered;// demo: H0·W0, 1 where S[0] == 0 exactly (docs/reference-behaviour.md §7.2 step 6)
  at::Tensor region_probs;       // [Nv,K] float32 CPU: the probabilities each valid region carries
  std::vector<bool> selected;    // demo: per valid region, chosen by at least one class
  bool degenerate = false;       // eval, w = 0 and no valid region: all-zero scores
};
EnsembleOutput ensemble(const EnsembleInput& in);

// ---- oracle.cpp ---------------------------------------------------------------------------------
// The paper's §3 analysis: ground-truth masks as proposals (classified by CLIP), or proposals
// labelled by the ground truth. These helpers are torch-free in their inputs where they can be.

// A label map (W0×H0) at w×h as Pillow's NEAREST resize (detectron2's segmentation resize) picks
// pixels: source index floor((i + 0.5) · W0 / w), in double.
std::vector<uint16_t> resize_labels_nearest(const uint16_t* labels, int w0, int h0, int w, int h);

struct ClassMasks {
  std::vector<int64_t> classes;  // the ground-truth classes present at the original size, ascending
  at::Tensor binary;             // [N,h,w] bool at the resized size, on `device`
};
// One mask per ground-truth class present (ignored pixels belong to none), from the original
// labels (which classes) and their NEAREST resize (where). A class that the resize loses keeps
// one pixel: the resized pixel nearest to its first pixel in raster order.
ClassMasks ground_truth_masks(const uint16_t* labels, int w0, int h0, const std::vector<uint16_t>& resized, int w,
                              int h, int64_t num_classes, uint32_t ignore_label, c10::Device device);

// The ground-truth class that covers most of each region's binary mask (B[q] for q in queries,
// against the resized labels): lowest class on ties, -1 when the mask covers only ignored pixels.
std::vector<int64_t> majority_classes(const at::Tensor& binary, const std::vector<int64_t>& queries,
                                      const std::vector<uint16_t>& resized, int64_t num_classes, uint32_t ignore_label);

// One-hot rows [N,K] float32 of `classes` (an all-zero row for -1).
at::Tensor one_hot_probs(const std::vector<int64_t>& classes, int64_t num_classes, c10::Device device);

}  // namespace ovseg::detail
