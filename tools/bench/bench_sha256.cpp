// Speed of the SHA-256 that verifies every bundle file at load (0.8-2 GB per bundle):
//   bench_sha256 [--benchmark_filter=...]
// Fast = sha256_hex (the CPU's SHA extensions where it has them), Portable = the C++ rounds.
#include <cstdint>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "common/fs_util.hpp"

namespace {

const std::vector<std::uint8_t>& data() {
  static const std::vector<std::uint8_t> d = [] {
    std::vector<std::uint8_t> v(64u << 20);
    std::mt19937 rng(7);
    for (auto& b : v) b = static_cast<std::uint8_t>(rng() >> 24);
    return v;
  }();
  return d;
}

void BM_Sha256_Fast(benchmark::State& state) {
  const auto& d = data();
  for (auto _ : state) benchmark::DoNotOptimize(ovseg::detail::sha256_hex(d.data(), d.size()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(d.size()));
  state.SetLabel(ovseg::detail::sha256_uses_sha_ni() ? "SHA extensions" : "portable (no SHA extensions)");
}

void BM_Sha256_Portable(benchmark::State& state) {
  const auto& d = data();
  for (auto _ : state) benchmark::DoNotOptimize(ovseg::detail::sha256_hex_portable(d.data(), d.size()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(d.size()));
}

}  // namespace

BENCHMARK(BM_Sha256_Fast)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Sha256_Portable)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
