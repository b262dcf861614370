// Helpers of the pipeline tests: a small .npy reader, fixture discovery and meta.json access,
// one loaded Model per bundle and process.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/test_env.hpp"
#include "ovseg/ovseg.hpp"

namespace ovseg::test {

// A .npy array (format 1.0/2.0, little-endian, C order) converted to double: enough for the
// fixtures' float32 / int32 / int64 / bool arrays.
struct NpyArray {
  std::vector<std::int64_t> shape;
  std::vector<double> values;
  std::string descr;
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

inline NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not .npy");
  const int major = static_cast<unsigned char>(bytes[6]);
  std::size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    offset = 10;
  } else {
    std::uint32_t len = 0;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    offset = 12;
  }
  const std::string header(bytes.data() + offset, header_len);
  NpyArray a;
  auto field = [&](const std::string& key) {
    const auto p = header.find("'" + key + "'");
    if (p == std::string::npos) throw std::runtime_error(path + ": header lacks " + key);
    return header.substr(header.find(':', p) + 1);
  };
  {
    const std::string d = field("descr");
    const auto q0 = d.find('\'');
    a.descr = d.substr(q0 + 1, d.find('\'', q0 + 1) - q0 - 1);
  }
  if (field("fortran_order").find("True") < field("fortran_order").find(','))
    throw std::runtime_error(path + ": Fortran order not supported");
  {
    const std::string s = field("shape");
    const std::string inner = s.substr(s.find('(') + 1, s.find(')') - s.find('(') - 1);
    std::stringstream ss(inner);
    std::string tok;
    while (std::getline(ss, tok, ','))
      if (tok.find_first_not_of(' ') != std::string::npos) a.shape.push_back(std::stoll(tok));
  }
  const char* data = bytes.data() + offset + header_len;
  const std::int64_t n = a.numel();
  a.values.resize(static_cast<std::size_t>(n));
  auto load = [&](auto tag) {
    using T = decltype(tag);
    if (bytes.size() < offset + header_len + n * sizeof(T)) throw std::runtime_error(path + ": truncated");
    for (std::int64_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, data + i * sizeof(T), sizeof(T));
      a.values[static_cast<std::size_t>(i)] = static_cast<double>(v);
    }
  };
  if (a.descr == "<f4") load(float{});
  else if (a.descr == "<f8") load(double{});
  else if (a.descr == "<i4") load(std::int32_t{});
  else if (a.descr == "<i8") load(std::int64_t{});
  else if (a.descr == "|b1" || a.descr == "|u1") load(std::uint8_t{});
  else throw std::runtime_error(path + ": unsupported dtype " + a.descr);
  return a;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  return nlohmann::json::parse(in);
}

inline std::vector<std::string> read_class_list(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// One fixture run: SHARED/fixtures/<name>/<mode>/ with the bundle exported for <name>.
struct FixtureRun {
  std::string name;
  std::string mode_dir;  // "eval" | "demo"
  std::string dir;       // SHARED/fixtures/<name>/<mode>
  std::string bundle;
  nlohmann::json meta;
  Mode mode() const { return mode_dir == "demo" ? Mode::kDemo : Mode::kEval; }
  std::string file(const std::string& f) const { return dir + "/" + f; }
};

// Every fixture under SHARED/fixtures with a bundle and a <mode>/meta.json.
inline std::vector<FixtureRun> fixture_runs(const std::string& mode_dir) {
  std::vector<FixtureRun> runs;
  const std::filesystem::path root = std::filesystem::path(shared_dir()) / "fixtures";
  std::error_code ec;
  if (!std::filesystem::is_directory(root, ec)) return runs;
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(root, ec))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    FixtureRun r;
    r.name = name;
    r.mode_dir = mode_dir;
    r.dir = (root / name / mode_dir).string();
    r.bundle = bundle_dir(name);
    if (!std::filesystem::exists(r.dir + "/meta.json") || !std::filesystem::exists(r.bundle + "/manifest.json")) continue;
    r.meta = read_json(r.dir + "/meta.json");
    runs.push_back(std::move(r));
  }
  return runs;
}

// A setting of MODEL.CLIP_ADAPTER in a fixture's meta.json "overrides" (CLIP_ENSEMBLE_WEIGHT, MASK_THR).
inline std::optional<double> fixture_override(const FixtureRun& run, const char* key) {
  const auto& meta = run.meta;
  if (meta.contains("overrides") && meta["overrides"].contains("MODEL") &&
      meta["overrides"]["MODEL"].contains("CLIP_ADAPTER") && meta["overrides"]["MODEL"]["CLIP_ADAPTER"].contains(key))
    return meta["overrides"]["MODEL"]["CLIP_ADAPTER"][key].get<double>();
  return std::nullopt;
}

// The reference settings a fixture was produced with, as per-call options.
inline SegmentOptions fixture_options(const FixtureRun& run) {
  SegmentOptions o;
  o.mode = run.mode();
  o.keep_scores = true;
  if (auto v = fixture_override(run, "CLIP_ENSEMBLE_WEIGHT")) o.ensemble_weight = static_cast<float>(*v);
  if (auto v = fixture_override(run, "MASK_THR")) o.mask_threshold = static_cast<float>(*v);
  return o;
}

inline std::vector<std::string> fixture_classes(const FixtureRun& run) {
  const std::string txt = shared_dir() + "/fixtures/" + run.name + "/classes.txt";
  if (std::filesystem::exists(txt)) return read_class_list(txt);
  return run.meta.at("classes").get<std::vector<std::string>>();
}

inline std::string fixture_image(const FixtureRun& run) {
  return shared_dir() + "/fixtures/" + run.name + "/image.png";
}

// Models are loaded once per process and bundle (loading verifies checksums and parses TorchScript).
inline const Model& cached_model(const std::string& bundle) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<Model>> models;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = models.find(bundle);
  if (it == models.end()) {
    ModelOptions mo;
    mo.text_disk_cache = false;
    it = models.emplace(bundle, std::make_unique<Model>(Model::load(bundle, mo))).first;
  }
  return *it->second;
}

// A fresh directory under the build tree (removed first if it exists).
inline std::string scratch_dir(const std::string& name) {
  const auto p = std::filesystem::path(binary_dir()) / "test-scratch" / "pipeline" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

// Sets an environment variable for the current scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = std::string(old);
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

#define OVSEG_REQUIRE_BUNDLE(name)                                                               \
  do {                                                                                           \
    OVSEG_REQUIRE_PATH(::ovseg::test::fixture_dir(name));                                        \
    if (!std::filesystem::exists(::ovseg::test::bundle_dir(name) + "/manifest.json"))            \
      GTEST_SKIP() << "test bundle not found: " << ::ovseg::test::bundle_dir(name)               \
                   << " (ctest's export_fixture_bundles writes it; or run "                      \
                      "tests/export/make_test_bundles.py --shared SHARED --out BUILD/test-bundles)"; \
  } while (0)

}  // namespace ovseg::test
