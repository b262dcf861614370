// The C++ side of python/benchmark/bench_overhead.py: loads a bundle, decodes an image, and times
// `repeat` calls of Model::segment (after `warmup` untimed ones) with a steady clock around the
// call, exactly as the Python side times `model.segment(array, classes)`. Public API only.
//
//   ovseg_segment_loop BUNDLE IMAGE CLASSES_FILE REPEAT WARMUP THREADS
// prints one JSON object: {"wall_ms": [...], "inner_ms": [...]} (inner = Result::timings.total_ms)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "ovseg/ovseg.hpp"

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s BUNDLE IMAGE CLASSES_FILE REPEAT WARMUP THREADS\n", argv[0]);
    return 2;
  }
  try {
    std::vector<std::string> classes;
    std::ifstream in(argv[3]);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) classes.push_back(line);
    const int repeat = std::atoi(argv[4]);
    const int warmup = std::atoi(argv[5]);
    ovseg::ModelOptions mo;
    mo.threads = std::atoi(argv[6]);
    mo.text_disk_cache = false;
    const auto model = ovseg::Model::load(argv[1], mo);
    const ovseg::Image image = ovseg::load_image(argv[2]);
    model.prepare_classes(classes);
    std::vector<double> wall, inner;
    for (int i = 0; i < warmup + repeat; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const ovseg::Result r = model.segment(image.view(), classes);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (i < warmup) continue;
      wall.push_back(ms);
      inner.push_back(r.timings.total_ms);
    }
    auto list = [](const std::vector<double>& v) {
      std::string s = "[";
      for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
      return s + "]";
    };
    std::printf("{\"wall_ms\": %s, \"inner_ms\": %s}\n", list(wall).c_str(), list(inner).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ovseg_segment_loop: %s\n", e.what());
    return 1;
  }
  return 0;
}
