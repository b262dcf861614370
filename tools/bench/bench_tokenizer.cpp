// Tokenizer speed: the 847 ADE-847 class names × 14 "vild" templates (11858 prompts), as the
// text side computes them once per class list. "Cold" empties the BPE cache before every pass,
// "Warm" reuses it; "Load" is reading the merges file.
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include "ovseg/tokenizer.hpp"

namespace {

const std::string kShared = OVSEG_BENCH_SHARED_DIR;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Empty when the shared files are missing.
const std::vector<std::string>& prompts() {
  static const std::vector<std::string> p = [] {
    std::vector<std::string> out;
    std::ifstream probe(kShared + "/class_lists.json");
    if (!probe) return out;
    const auto classes = nlohmann::json::parse(read_text(kShared + "/class_lists.json"))["ade847"];
    const auto templates = nlohmann::json::parse(read_text(kShared + "/text_templates.json"))["vild"];
    for (const auto& c : classes)
      for (const auto& t : templates) {
        std::string s = t.get<std::string>();
        s.replace(s.find("{}"), 2, c.get<std::string>());
        out.push_back(s);
      }
    return out;
  }();
  return p;
}

const ovseg::ClipTokenizer* tokenizer() {
  static const std::unique_ptr<ovseg::ClipTokenizer> tok = [] {
    std::ifstream probe(kShared + "/bpe_simple_vocab_16e6.txt.gz");
    return probe ? ovseg::ClipTokenizer::from_bpe_file(kShared + "/bpe_simple_vocab_16e6.txt.gz")
                 : std::unique_ptr<ovseg::ClipTokenizer>();
  }();
  return tok.get();
}

bool ready(benchmark::State& state) {
  if (!tokenizer() || prompts().empty()) {
    state.SkipWithError(("shared reference files not found in " + kShared).c_str());
    return false;
  }
  return true;
}

void tokenize_all(benchmark::State& state, const ovseg::ClipTokenizer& tok) {
  std::size_t tokens = 0;
  for (const auto& p : prompts()) {
    auto ids = tok.tokenize(p);
    tokens += ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.counters["tokens"] = static_cast<double>(tokens);
}

void BM_TokenizeAde847Cold(benchmark::State& state) {
  if (!ready(state)) return;
  const auto& tok = *tokenizer();
  for (auto _ : state) {
    state.PauseTiming();
    tok.clear_cache();
    state.ResumeTiming();
    tokenize_all(state, tok);
  }
  state.counters["prompts/s"] = benchmark::Counter(static_cast<double>(prompts().size()),
                                                   benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_TokenizeAde847Cold)->Unit(benchmark::kMillisecond);

void BM_TokenizeAde847Warm(benchmark::State& state) {
  if (!ready(state)) return;
  const auto& tok = *tokenizer();
  tokenize_all(state, tok);  // fill the cache
  for (auto _ : state) tokenize_all(state, tok);
  state.counters["prompts/s"] = benchmark::Counter(static_cast<double>(prompts().size()),
                                                   benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_TokenizeAde847Warm)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TokenizeAde847Warm)->Unit(benchmark::kMillisecond)->Threads(2)->UseRealTime();

void BM_LoadBpeFile(benchmark::State& state) {
  if (!ready(state)) return;
  for (auto _ : state) {
    auto tok = ovseg::ClipTokenizer::from_bpe_file(kShared + "/bpe_simple_vocab_16e6.txt.gz");
    benchmark::DoNotOptimize(tok.get());
  }
}
BENCHMARK(BM_LoadBpeFile)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
