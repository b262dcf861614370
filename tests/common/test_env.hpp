// Where the tests find reference data, test bundles and tools.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include <gtest/gtest.h>

namespace ovseg::test {

inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::string(v) : std::string(fallback);
}
// ../shared/ovseg (the reference material: fixtures, golden files); OVSEG_SHARED_DIR overrides.
inline std::string shared_dir() { return env_or("OVSEG_SHARED_DIR", OVSEG_TEST_SHARED_DIR); }
inline std::string fixture_dir(const std::string& name = "tiny_swin_vit") {
  return shared_dir() + "/fixtures/" + name;
}
// Bundles exported by the ctest fixture `export_fixture_bundles` (one per shared fixture).
inline std::string bundle_dir(const std::string& name = "tiny_swin_vit") {
  return env_or("OVSEG_TEST_BUNDLE_DIR", OVSEG_TEST_BUNDLE_DIR) + "/" + name;
}
inline std::string source_dir() { return OVSEG_TEST_SOURCE_DIR; }
inline std::string binary_dir() { return OVSEG_TEST_BINARY_DIR; }
inline std::string python() { return OVSEG_TEST_PYTHON; }

// A fresh directory under the system temp dir, removed when the object goes away. The name holds
// the pid, a counter and a random number, so parallel test processes never share one.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "test") {
    static std::atomic<int> counter{0};
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("ovseg-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
             std::to_string(rd() % 1000000));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace ovseg::test

// Skips the current test with a clear message when a reference file is absent.
#define OVSEG_REQUIRE_PATH(path)                                                              \
  do {                                                                                        \
    if (!std::filesystem::exists(path))                                                       \
      GTEST_SKIP() << "reference data not found: " << (path)                                  \
                   << " (tests read ../shared/ovseg beside the repository; set "              \
                      "OVSEG_SHARED_DIR to point elsewhere)";                                 \
  } while (0)
