// Test-time resize: the ResizeShortestEdge size rule and a bit-exact port of Pillow's 8-bit
// BILINEAR resampler (docs/reference-behaviour.md §3.1 step 2, §A.1).
//
// Exactness rests on three things being the same as in Pillow: the coefficients (computed in
// double with the same expressions, then rounded to 22-bit fixed point), the integer sums (exact,
// so their order is free — which lets the vertical pass run as vectorisable row updates), and the
// uint8 rounding between the passes.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "image/image_ops.hpp"

namespace ovseg::detail {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS
constexpr std::int32_t kHalf = std::int32_t{1} << (kPrecisionBits - 1);

// Fixed-point filter taps of one axis: output i reads `count[i]` inputs from `first[i]`.
struct AxisTaps {
  int taps = 0;                      // row length of `weights` (Pillow's ksize)
  std::vector<int> first;
  std::vector<int> count;
  std::vector<std::int32_t> weights; // out_size * taps
};

double triangle(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

AxisTaps compute_taps(int in_size, int out_size) {
  AxisTaps t;
  // Pillow computes (in1 - in0) in float for the box (0, in_size): exact for any real size.
  const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;
  t.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<std::size_t>(out_size) * t.taps, 0);
  std::vector<double> w(t.taps);
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    const double inv = 1.0 / filterscale;  // Pillow multiplies by the reciprocal
    int lo = static_cast<int>(center - support + 0.5);
    if (lo < 0) lo = 0;
    int hi = static_cast<int>(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int n = std::min(hi - lo, t.taps);
    double sum = 0.0;
    for (int j = 0; j < n; ++j) {
      w[j] = triangle((j + lo - center + 0.5) * inv);
      sum += w[j];
    }
    std::int32_t* k = &t.weights[static_cast<std::size_t>(i) * t.taps];
    for (int j = 0; j < n; ++j) {
      const double v = sum != 0.0 ? w[j] / sum : w[j];
      const double fixed = v * (1 << kPrecisionBits);
      k[j] = static_cast<std::int32_t>(v < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    t.first[i] = lo;
    t.count[i] = std::max(n, 0);
  }
  return t;
}

inline std::uint8_t clip8(std::int32_t acc) {
  const std::int32_t v = acc >> kPrecisionBits;  // arithmetic shift, as in Pillow
  return static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Below this many output samples a pass runs on the calling thread.
constexpr std::size_t kParallelThreshold = 1 << 16;

template <typename Fn>
void for_rows(int rows, std::size_t work, int grain, Fn&& fn) {
  const int blocks = (rows + grain - 1) / grain;
  if (work < kParallelThreshold || blocks < 2) {
    fn(0, rows);
    return;
  }
  cv::parallel_for_(cv::Range(0, blocks), [&](const cv::Range& r) {
    fn(r.start * grain, std::min(rows, r.end * grain));
  });
}

// The kernels are plain integer loops for the auto-vectoriser; on x86-64 there are AVX2 versions
// as well, chosen at run time (the build targets baseline x86-64).
#if defined(__GNUC__) && defined(__x86_64__)
#define OVSEG_HAVE_AVX2_KERNEL 1
#else
#define OVSEG_HAVE_AVX2_KERNEL 0
#endif

std::atomic<bool> g_simd_allowed{true};

bool use_avx2() {
#if OVSEG_HAVE_AVX2_KERNEL
  static const bool cpu_has_avx2 = __builtin_cpu_supports("avx2");
  return cpu_has_avx2 && g_simd_allowed.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

// Rows per horizontal-pass block: the block is re-laid out as [x][row][channel] so that one
// output column of 8 rows × 3 channels is 24 adjacent int32 sums — a vector update per tap,
// instead of three scalar chains per row.
constexpr int kRowBlock = 8;
constexpr int kLanes = kRowBlock * 3;

// Portable version (auto-vectorised for the baseline target).
void horizontal_block_generic(const std::uint8_t* tile, const int* first, const int* count,
                              const std::int32_t* weights, int taps, int out_w, std::uint8_t* out) {
  for (int x = 0; x < out_w; ++x) {
    const std::int32_t* k = weights + static_cast<std::size_t>(x) * taps;
    const std::uint8_t* t = tile + static_cast<std::size_t>(first[x]) * kLanes;
    std::int32_t acc[kLanes];
    for (int q = 0; q < kLanes; ++q) acc[q] = kHalf;
    for (int j = 0; j < count[x]; ++j, t += kLanes) {
      const std::int32_t kj = k[j];
      for (int q = 0; q < kLanes; ++q) acc[q] += t[q] * kj;
    }
    std::uint8_t* o = out + static_cast<std::size_t>(x) * kLanes;
    for (int q = 0; q < kLanes; ++q) o[q] = clip8(acc[q]);
  }
}

#if OVSEG_HAVE_AVX2_KERNEL
__attribute__((target("avx2"))) inline void clip_store8(__m256i acc, std::uint8_t* p) {
  const __m256i v = _mm256_srai_epi32(acc, kPrecisionBits);  // |v| < 512: no int16 saturation
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));  // clamps to 0..255
}

__attribute__((target("avx2"))) void horizontal_block_avx2(const std::uint8_t* tile, const int* first,
                                                           const int* count, const std::int32_t* weights,
                                                           int taps, int out_w, std::uint8_t* out) {
  static_assert(kLanes == 24, "three 8-lane vectors per column");
  for (int x = 0; x < out_w; ++x) {
    const std::int32_t* k = weights + static_cast<std::size_t>(x) * taps;
    const std::uint8_t* t = tile + static_cast<std::size_t>(first[x]) * kLanes;
    __m256i a0 = _mm256_set1_epi32(kHalf), a1 = a0, a2 = a0;
    for (int j = 0; j < count[x]; ++j, t += kLanes) {
      const __m256i kj = _mm256_set1_epi32(k[j]);
      const __m256i p0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(t)));
      const __m256i p1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(t + 8)));
      const __m256i p2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(t + 16)));
      a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(p0, kj));
      a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(p1, kj));
      a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(p2, kj));
    }
    std::uint8_t* o = out + static_cast<std::size_t>(x) * kLanes;
    clip_store8(a0, o);
    clip_store8(a1, o + 8);
    clip_store8(a2, o + 16);
  }
}
#endif

void horizontal_block(const std::uint8_t* tile, const int* first, const int* count, const std::int32_t* weights,
                      int taps, int out_w, std::uint8_t* out /* out_w × kLanes */) {
#if OVSEG_HAVE_AVX2_KERNEL
  if (use_avx2()) return horizontal_block_avx2(tile, first, count, weights, taps, out_w, out);
#endif
  horizontal_block_generic(tile, first, count, weights, taps, out_w, out);
}

__attribute__((always_inline)) inline void vertical_row_impl(const std::uint8_t* src, std::size_t row_len, int first,
                                                             int count, const std::int32_t* k, std::int32_t* acc,
                                                             std::uint8_t* dst) {
  for (std::size_t x = 0; x < row_len; ++x) acc[x] = kHalf;
  for (int j = 0; j < count; ++j) {
    const std::uint8_t* s = src + static_cast<std::size_t>(first + j) * row_len;
    const std::int32_t kj = k[j];
    for (std::size_t x = 0; x < row_len; ++x) acc[x] += s[x] * kj;
  }
  for (std::size_t x = 0; x < row_len; ++x) dst[x] = clip8(acc[x]);
}

void vertical_row_generic(const std::uint8_t* src, std::size_t row_len, int first, int count, const std::int32_t* k,
                          std::int32_t* acc, std::uint8_t* dst) {
  vertical_row_impl(src, row_len, first, count, k, acc, dst);
}

#if OVSEG_HAVE_AVX2_KERNEL
// The same loops, vectorised by the compiler for AVX2.
__attribute__((target("avx2"))) void vertical_row_avx2(const std::uint8_t* src, std::size_t row_len, int first,
                                                       int count, const std::int32_t* k, std::int32_t* acc,
                                                       std::uint8_t* dst) {
  vertical_row_impl(src, row_len, first, count, k, acc, dst);
}
#endif

void vertical_row(const std::uint8_t* src, std::size_t row_len, int first, int count, const std::int32_t* k,
                  std::int32_t* acc, std::uint8_t* dst) {
#if OVSEG_HAVE_AVX2_KERNEL
  if (use_avx2()) return vertical_row_avx2(src, row_len, first, count, k, acc, dst);
#endif
  vertical_row_generic(src, row_len, first, count, k, acc, dst);
}

// Horizontal pass over source rows [row0, row0 + rows) into `dst` (rows × out_w × 3).
void horizontal_pass(const std::uint8_t* src, int src_w, int row0, int rows, const AxisTaps& t, int out_w,
                     std::uint8_t* dst) {
  const std::size_t src_stride = static_cast<std::size_t>(src_w) * 3;
  const std::size_t dst_stride = static_cast<std::size_t>(out_w) * 3;
  for_rows(rows, static_cast<std::size_t>(rows) * dst_stride, kRowBlock, [&](int y0, int y1) {
    // One spare byte each: pixels move as 4-byte words whose 4th byte lands in the next slot
    // and is overwritten by the following store.
    std::vector<std::uint8_t> tile(static_cast<std::size_t>(src_w) * kLanes + 1);
    std::vector<std::uint8_t> out(static_cast<std::size_t>(out_w) * kLanes + 1);
    const std::uint8_t* rows_in[kRowBlock];
    for (int yb = y0; yb < y1; yb += kRowBlock) {
      const int n = std::min(kRowBlock, y1 - yb);
      if (n < kRowBlock) std::fill(tile.begin(), tile.end(), 0);
      for (int r = 0; r < n; ++r) rows_in[r] = src + static_cast<std::size_t>(row0 + yb + r) * src_stride;
      std::uint8_t* d = tile.data();
      for (int x = 0; x + 1 < src_w; ++x, d += kLanes) {
        for (int r = 0; r < n; ++r) std::memcpy(d + 3 * r, rows_in[r] + 3 * x, 4);
      }
      for (int r = 0; r < n; ++r) std::memcpy(d + 3 * r, rows_in[r] + 3 * (src_w - 1), 3);  // row end
      horizontal_block(tile.data(), t.first.data(), t.count.data(), t.weights.data(), t.taps, out_w, out.data());
      for (int r = 0; r < n; ++r) {
        std::uint8_t* o_row = dst + static_cast<std::size_t>(yb + r) * dst_stride;
        const std::uint8_t* o = out.data() + r * 3;
        for (int x = 0; x + 1 < out_w; ++x, o += kLanes) std::memcpy(o_row + 3 * x, o, 4);
        std::memcpy(o_row + 3 * (out_w - 1), o, 3);
      }
    }
  });
}

// Vertical pass: output row y mixes rows first[y] .. first[y] + count[y] - 1 of `src`.
void vertical_pass(const std::uint8_t* src, int width, const AxisTaps& t, int out_h, std::uint8_t* dst) {
  const std::size_t row_len = static_cast<std::size_t>(width) * 3;
  for_rows(out_h, static_cast<std::size_t>(out_h) * row_len, 4, [&](int y0, int y1) {
    std::vector<std::int32_t> acc(row_len);
    for (int y = y0; y < y1; ++y)
      vertical_row(src, row_len, t.first[y], t.count[y], &t.weights[static_cast<std::size_t>(y) * t.taps],
                   acc.data(), dst + static_cast<std::size_t>(y) * row_len);
  });
}

}  // namespace

void set_resize_simd_enabled(bool enabled) { g_simd_allowed.store(enabled); }

std::pair<int, int> test_resize_size(int h0, int w0, int short_edge, int max_size) {
  if (h0 <= 0 || w0 <= 0 || short_edge <= 0)
    throw Error(ErrorCode::kInvalidArgument, "test_resize_size: sizes must be positive (h0=" + std::to_string(h0) +
                                                 ", w0=" + std::to_string(w0) +
                                                 ", short_edge=" + std::to_string(short_edge) + ")");
  const double size = short_edge * 1.0;
  const double scale = size / std::min(h0, w0);
  double newh, neww;
  if (h0 < w0) {
    newh = size;
    neww = scale * w0;
  } else {
    newh = scale * h0;
    neww = size;
  }
  // max_size <= 0 means "no cap" (detectron2's default is sys.maxsize).
  if (max_size > 0 && std::max(newh, neww) > max_size) {
    const double f = max_size * 1.0 / std::max(newh, neww);
    newh = newh * f;
    neww = neww * f;
  }
  return {static_cast<int>(newh + 0.5), static_cast<int>(neww + 0.5)};
}

Image resize_pillow_bilinear(const Image& src, int out_width, int out_height) {
  if (src.width <= 0 || src.height <= 0 ||
      src.rgb.size() != static_cast<std::size_t>(src.width) * static_cast<std::size_t>(src.height) * 3)
    throw Error(ErrorCode::kInvalidArgument, "resize_pillow_bilinear: source image is empty or inconsistent (" +
                                                 std::to_string(src.width) + "x" + std::to_string(src.height) + ")");
  if (out_width <= 0 || out_height <= 0)
    throw Error(ErrorCode::kInvalidArgument, "resize_pillow_bilinear: target size must be positive (" +
                                                 std::to_string(out_width) + "x" + std::to_string(out_height) + ")");
  const bool horizontal = out_width != src.width;
  const bool vertical = out_height != src.height;
  if (!horizontal && !vertical) return src;

  Image out;
  out.width = out_width;
  out.height = out_height;
  out.rgb.resize(static_cast<std::size_t>(out_width) * static_cast<std::size_t>(out_height) * 3);

  if (!vertical) {
    const AxisTaps tx = compute_taps(src.width, out_width);
    horizontal_pass(src.rgb.data(), src.width, 0, src.height, tx, out_width, out.rgb.data());
    return out;
  }
  const AxisTaps ty = compute_taps(src.height, out_height);
  if (!horizontal) {
    vertical_pass(src.rgb.data(), src.width, ty, out_height, out.rgb.data());
    return out;
  }
  // Only the source rows the vertical pass reads go through the horizontal pass.
  AxisTaps ty_shifted = ty;
  const int row_first = ty.first.front();
  const int row_last = ty.first.back() + ty.count.back();
  for (int& f : ty_shifted.first) f -= row_first;
  const AxisTaps tx = compute_taps(src.width, out_width);
  std::vector<std::uint8_t> tmp(static_cast<std::size_t>(row_last - row_first) * out_width * 3);
  horizontal_pass(src.rgb.data(), src.width, row_first, row_last - row_first, tx, out_width, tmp.data());
  vertical_pass(tmp.data(), out_width, ty_shifted, out_height, out.rgb.data());
  return out;
}

}  // namespace ovseg::detail
