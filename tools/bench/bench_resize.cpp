// Speed of the bit-exact Pillow BILINEAR resize (the test-time resize of every image).
//   bench_resize [--benchmark_filter=...]
// Arg = number of OpenCV worker threads (cv::setNumThreads) used by the row-parallel passes;
// the *_Portable variants force the non-AVX2 kernels.
#include <cstdint>
#include <random>

#include <benchmark/benchmark.h>
#include <opencv2/core.hpp>

#include "image/image_ops.hpp"

namespace {

ovseg::Image random_image(int w, int h) {
  ovseg::Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<std::size_t>(w) * h * 3);
  std::mt19937 rng(42);
  for (auto& v : img.rgb) v = static_cast<std::uint8_t>(rng() >> 24);
  return img;
}

void run(benchmark::State& state, int src_w, int src_h, int dst_w, int dst_h, bool simd = true) {
  const ovseg::Image src = random_image(src_w, src_h);
  const int previous = cv::getNumThreads();
  cv::setNumThreads(static_cast<int>(state.range(0)));
  ovseg::detail::set_resize_simd_enabled(simd);
  for (auto _ : state) {
    ovseg::Image out = ovseg::detail::resize_pillow_bilinear(src, dst_w, dst_h);
    benchmark::DoNotOptimize(out.rgb.data());
  }
  ovseg::detail::set_resize_simd_enabled(true);
  cv::setNumThreads(previous);
  state.counters["out_Mpix/s"] =
      benchmark::Counter(static_cast<double>(dst_w) * dst_h * state.iterations() / 1e6, benchmark::Counter::kIsRate);
}

// ADE20K-sized upscale (docs/reference-behaviour.md §B): 683×512 → 854×640.
void BM_Upscale_683x512_to_854x640(benchmark::State& state) { run(state, 683, 512, 854, 640); }
// A camera photo to the Swin test size: 4000×3000 → 853×640 (wide antialiasing kernels).
void BM_Downscale_4000x3000_to_853x640(benchmark::State& state) { run(state, 4000, 3000, 853, 640); }

void BM_Upscale_683x512_to_854x640_Portable(benchmark::State& state) { run(state, 683, 512, 854, 640, false); }
void BM_Downscale_4000x3000_to_853x640_Portable(benchmark::State& state) { run(state, 4000, 3000, 853, 640, false); }

BENCHMARK(BM_Upscale_683x512_to_854x640)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Downscale_4000x3000_to_853x640)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Upscale_683x512_to_854x640_Portable)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Downscale_4000x3000_to_853x640_Portable)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
