// Combining the two branches into a score map (docs/reference-behaviour.md §7): the evaluation
// path (geometric ensemble, soft masks) and the demo path (one region per class, binary masks), then
// the bilinear resize to the original size and the argmax. The reference's op sequence is kept so
// the values match.
#include <ATen/ATen.h>

#include <algorithm>
#include <functional>
#include <vector>

#include <ATen/Parallel.h>

#include "common/log.hpp"
#include "pipeline/pipeline.hpp"

namespace ovseg::detail {
namespace {

// Budget for one chunk of score channels (the h×w maps, plus the resize buffer below), so
// ADE-847-sized class lists do not need the whole [K,h,w] + [K,H0,W0] at once. Below it (every
// ordinary class list, and ADE-150's 150 channels at 640×853) the low-resolution map is computed
// in one piece. Each further chunk recomputes the soft masks once more, hence a budget in the
// hundreds of MB rather than a few.
// [QUIRK] The chunk once divided the budget by one channel plus the whole resize buffer: 150
// classes at 640×853 came in 75 chunks of 2, each upsampling all 100 soft masks again (7.0 s of
// an R101c image's 27.9 s on 2 Zen 5 cores; 0.6 s in one piece).
constexpr int64_t kScoreChunkBytes = int64_t{512} << 20;
// Budget for the resized channels that exist at once (the original-size maps).
constexpr int64_t kResizeChunkBytes = int64_t{128} << 20;

// The maps the per-query class weights z multiply: rows [i0, i0+n) of the contributing queries'
// masks as [n,h,w] float32.
using MaskRows = std::function<at::Tensor(int64_t i0, int64_t n)>;

// S [n_c,h,w] = Σ_i z[i,c]·W[i] (einsum "qc,qhw->chw") over `rows_per_chunk` rows of W at a time,
// so the contributing masks never exist whole. One chunk is exactly the reference's einsum; more
// only change the order of the float additions.
at::Tensor weighted_mask_sum(const at::Tensor& z, const MaskRows& mask_rows, int64_t rows_per_chunk) {
  const int64_t n_rows = z.size(0);
  at::Tensor s;
  for (int64_t i0 = 0; i0 < n_rows; i0 += rows_per_chunk) {
    const int64_t n = std::min(rows_per_chunk, n_rows - i0);
    const at::Tensor part = at::einsum("qc,qhw->chw", {z.narrow(0, i0, n), mask_rows(i0, n)});
    if (s.defined())
      s.add_(part);
    else
      s = part;
  }
  return s;
}

}  // namespace

std::vector<std::string> model_classes(Mode mode, const std::vector<std::string>& classes) {
  std::vector<std::string> used = classes;
  if (mode == Mode::kDemo && used.size() == 1) used.push_back("others");
  return used;
}

bool others_selects_no_region(Mode mode, const std::vector<std::string>& model_classes) {
  return mode == Mode::kDemo && model_classes.size() == 2 && model_classes.back() == "others";
}

EnsembleOutput ensemble(const EnsembleInput& in) {
  const int64_t k = in.mf_logits.size(1) - 1;
  const int64_t h = in.masks->height();
  const int64_t w = in.masks->width();
  const int64_t out_h = in.out_height;
  const int64_t out_w = in.out_width;
  const c10::Device device = in.valid.device();
  const double w_ens = in.ensemble_weight;
  EnsembleOutput out;

  const at::Tensor valid_index = in.valid.nonzero().flatten();  // [Nv] ascending query indices
  const int64_t nv = valid_index.size(0);

  // Step 1: MaskFormer probabilities: softmax over K+1, then drop the no-object column.
  const at::Tensor p_mf = at::softmax(in.mf_logits, -1).narrow(1, 0, k);  // [Q,K] (a view, as in Python)
  // CLIP probabilities: drop the no-object column BEFORE the softmax (docs/reference-behaviour.md §6.6).
  const at::Tensor p_clip = at::softmax(in.clip_logits.narrow(1, 0, k), -1);  // [Nv,K]

  at::Tensor p;  // probabilities of the contributing queries
  const bool override_probs = in.probs_override.defined();
  if (override_probs && (in.mode != Mode::kEval || in.probs_override.size(0) != nv || in.probs_override.size(1) != k))
    throw Error(ErrorCode::kInvalidArgument, "ensemble: probability override needs the eval path and [Nv,K] rows");
  // Every query contributes its soft mask (ensemble, or MaskFormer-only); else the valid ones.
  const bool all_queries = (w_ens > 0 || !in.clip_branch) && !override_probs;
  if (override_probs) {
    p = in.probs_override.to(p_mf.device(), at::kFloat);  // [Nv,K]: only valid queries contribute
    out.region_probs = p;
  } else if (!in.clip_branch) {
    // OVSeg.semantic_inference with CLIP_ENSEMBLE False: MaskFormer's probabilities as they are.
    p = p_mf;  // [Q,K]
    out.region_probs = at::zeros({0, k}, p_mf.options());
  } else if (w_ens > 0) {
    at::Tensor clip_all = at::ones({p_mf.size(0), k}, p_mf.options());  // invalid queries: p_clip = 1
    if (nv > 0) clip_all.index_copy_(0, valid_index, p_clip);
    // [QUIRK, faithful] invalid queries stay in with p_mf^(1−w) and their sub-threshold soft masks.
    p = at::pow(p_mf, 1.0 - w_ens) * at::pow(clip_all, w_ens);  // [Q,K]
    out.region_probs = p.index_select(0, valid_index);
  } else {
    p = p_clip;  // [Nv,K]: only valid queries contribute
    out.region_probs = p;
  }

  // z [Nq,K]: the per-query class weights of the score map; mask_rows: the masks they weight.
  at::Tensor z;
  MaskRows mask_rows;
  const int64_t rows_per_chunk = in.masks->rows_per_chunk();
  if (in.mode == Mode::kEval) {
    // Soft masks M: of every query when w > 0, of the valid ones when w = 0.
    const at::Tensor queries = all_queries ? at::arange(p.size(0), valid_index.options()) : valid_index;
    z = p;
    mask_rows = [&in, queries](int64_t i0, int64_t n) { return in.masks->rows(queries.narrow(0, i0, n)); };
    if (!all_queries && nv == 0) {
      // The reference crashes here (docs/reference-behaviour.md §7.1); there is no sensible output: all-zero scores.
      out.degenerate = true;
      detail::log().warn(override_probs ? "no mask passes the threshold: no class scores"
                                        : "no mask passes the threshold and the ensemble weight is 0: no class scores");
    }
  } else {
    // Demo (docs/reference-behaviour.md §7.2). With w > 0 the reference only works when every query is valid; using the
    // ensembled rows of the valid queries is the same thing then, and well-defined otherwise.
    const at::Tensor pv = w_ens > 0 ? out.region_probs : p;  // [Nv,K]
    // Binary masks Bbin [Nv,h,w] of the valid queries, as float one chunk at a time.
    mask_rows = [&in, valid_index](int64_t i0, int64_t n) {
      if (in.binary_valid_only) return in.binary.narrow(0, i0, n).to(at::kFloat);
      return in.binary.index_select(0, valid_index.narrow(0, i0, n)).to(at::kFloat);
    };
    z = at::zeros({nv, k}, pv.options());
    out.selected.assign(static_cast<std::size_t>(nv), false);
    if (nv > 0) {
      at::Tensor select = at::argmax(pv, 0).to(at::kCPU);  // [K]: best region per class (first max)
      int64_t n_select = k;
      if (in.skip_last_selection) n_select = k - 1;  // "others" picks no region
      const auto sel = select.accessor<int64_t, 1>();
      for (int64_t c = 0; c < n_select; ++c) {
        const int64_t r = sel[c];
        z[r].copy_(pv[r]);  // the whole row, every class
        out.selected[static_cast<std::size_t>(r)] = true;
      }
    }
  }
  out.region_probs = out.region_probs.to(at::kCPU).contiguous();

  // S[c] = Σ_q z[q,c]·W[q], resized bilinearly to (H0,W0), a chunk of classes at a time. The
  // low-resolution S of a chunk is computed once (each chunk recomputes the soft masks); its
  // resize runs in sub-chunks of classes small enough that no K×H0×W0 float map exists unless
  // the scores are asked for: a 12000×9000 photo needs 432 MB per resized channel.
  const int64_t low_bytes = h * w * static_cast<int64_t>(sizeof(float));
  const int64_t out_bytes = out_h * out_w * static_cast<int64_t>(sizeof(float));
  const int64_t resize_chunk = std::max<int64_t>(1, std::min<int64_t>(k, kResizeChunkBytes / std::max<int64_t>(1, out_bytes)));
  const int64_t resize_buffer = std::min(out_bytes * resize_chunk, kResizeChunkBytes);
  const int64_t chunk = std::max<int64_t>(
      1, std::min<int64_t>(k, (kScoreChunkBytes - resize_buffer) / std::max<int64_t>(1, low_bytes)));
  if (in.keep_scores) out.scores = at::empty({k, out_h, out_w}, at::TensorOptions().dtype(at::kFloat));
  const bool one_piece = chunk == k && resize_chunk == k;  // every ordinary image: as before
  at::Tensor best_index;
  std::vector<float> best_value;  // running maximum when the classes come in pieces (CPU)
  const std::size_t pixels = static_cast<std::size_t>(out_h * out_w);
  if (!one_piece) out.argmax.assign(pixels, 0);
  for (int64_t c0 = 0; c0 < k; c0 += chunk) {
    const int64_t n = std::min(chunk, k - c0);
    const at::Tensor zc = n == k ? z : z.narrow(1, c0, n);
    at::Tensor s;
    if (z.size(0) == 0)
      s = at::zeros({n, h, w}, at::TensorOptions().dtype(at::kFloat).device(device));
    else
      s = weighted_mask_sum(zc, mask_rows, rows_per_chunk);  // [n,h,w]
    for (int64_t r0 = 0; r0 < n; r0 += resize_chunk) {
      const int64_t m = std::min(resize_chunk, n - r0);
      const at::Tensor part = m == n ? s : s.narrow(0, r0, m);
      // Each channel's resize is independent of the others: splitting the classes changes no bit.
      const at::Tensor resized = at::upsample_bilinear2d(part.unsqueeze(0), {out_h, out_w}, /*align_corners=*/false)[0];
      if (in.keep_scores) out.scores.narrow(0, c0 + r0, m).copy_(resized);
      if (c0 + r0 == 0 && in.mode == Mode::kDemo) {
        const at::Tensor uncovered = (resized[0] == 0).to(at::kCPU, at::kByte).contiguous();
        out.uncovered.assign(uncovered.data_ptr<uint8_t>(), uncovered.data_ptr<uint8_t>() + uncovered.numel());
      }
      if (one_piece) {
        best_index = at::argmax(resized, 0);  // what the evaluator does
        continue;
      }
      // Running argmax in place (strict >: the first maximum wins, as at::argmax).
      const at::Tensor cpu = resized.to(at::kCPU).contiguous();
      const float* data = cpu.data_ptr<float>();
      int32_t* best_i = out.argmax.data();
      const int64_t first = c0 + r0;
      int64_t start_ch = 0;
      if (best_value.empty()) {  // the first channel is the running maximum to beat
        best_value.assign(data, data + pixels);
        std::fill(out.argmax.begin(), out.argmax.end(), static_cast<int32_t>(first));
        start_ch = 1;
      }
      float* best_v = best_value.data();
      at::parallel_for(0, static_cast<int64_t>(pixels), 1 << 16, [&](int64_t p0, int64_t p1) {
        for (int64_t ch = start_ch; ch < m; ++ch) {
          const float* row = data + ch * static_cast<int64_t>(pixels);
          const auto label = static_cast<int32_t>(first + ch);
          for (int64_t p = p0; p < p1; ++p)
            if (row[p] > best_v[p]) {
              best_v[p] = row[p];
              best_i[p] = label;
            }
        }
      });
    }
  }
  if (!one_piece) return out;
  const at::Tensor labels = best_index.to(at::kCPU, at::kInt).contiguous();
  out.argmax.assign(labels.data_ptr<int32_t>(), labels.data_ptr<int32_t>() + labels.numel());
  return out;
}

}  // namespace ovseg::detail
