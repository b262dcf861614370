// Helpers of the image tests: a scratch directory, raw RGB files shared with Python, and running
// Pillow (/usr/bin/python3 with python3-pil) to produce reference outputs.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_env.hpp"
#include "ovseg/ovseg.hpp"

namespace ovseg::test {

namespace fs = std::filesystem;

inline std::vector<std::uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void spit(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// "Raw RGB" exchange format shared with the Python side: uint32 LE width, uint32 LE height, then
// height*width*3 bytes.
inline void write_raw_rgb(const std::string& path, const Image& img) {
  std::vector<std::uint8_t> bytes(8);
  for (int i = 0; i < 4; ++i) {
    bytes[i] = static_cast<std::uint8_t>(static_cast<std::uint32_t>(img.width) >> (8 * i));
    bytes[4 + i] = static_cast<std::uint8_t>(static_cast<std::uint32_t>(img.height) >> (8 * i));
  }
  bytes.insert(bytes.end(), img.rgb.begin(), img.rgb.end());
  spit(path, bytes);
}

inline Image read_raw_rgb(const std::string& path) {
  const std::vector<std::uint8_t> bytes = slurp(path);
  Image img;
  if (bytes.size() < 8) return img;
  std::uint32_t w = 0, h = 0;
  for (int i = 0; i < 4; ++i) {
    w |= std::uint32_t{bytes[i]} << (8 * i);
    h |= std::uint32_t{bytes[4 + i]} << (8 * i);
  }
  img.width = static_cast<int>(w);
  img.height = static_cast<int>(h);
  img.rgb.assign(bytes.begin() + 8, bytes.end());
  return img;
}

// Runs `script` with the reference Python in `dir`; returns its exit status and leaves its
// output in `log`.
inline int run_python(const TempDir& dir, const std::string& name, const std::string& script,
                      const std::string& args, std::string* log) {
  const std::string script_path = dir.file(name + ".py");
  const std::string log_path = dir.file(name + ".log");
  {
    std::ofstream out(script_path);
    out << script;
  }
  const std::string cmd = "'" + python() + "' '" + script_path + "' " + args + " > '" + log_path + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  const std::vector<std::uint8_t> text = slurp(log_path);
  if (log) log->assign(text.begin(), text.end());
  return rc;
}

// True when the reference Python has Pillow.
inline bool have_pillow() {
  static const bool ok = [] {
    const std::string cmd = "'" + python() + "' -c 'import PIL.Image' > /dev/null 2>&1";
    return std::system(cmd.c_str()) == 0;
  }();
  return ok;
}

#define OVSEG_REQUIRE_PILLOW()                                                                   \
  do {                                                                                           \
    if (!::ovseg::test::have_pillow())                                                           \
      GTEST_SKIP() << "Pillow is not available to " << ::ovseg::test::python()                   \
                   << " (install python3-pil); the Pillow reference checks are skipped";          \
  } while (0)

// Index and value of the first differing byte, for readable failures.
inline std::string first_difference(const Image& a, const Image& b) {
  std::ostringstream s;
  if (a.width != b.width || a.height != b.height) {
    s << "size " << a.width << "x" << a.height << " vs " << b.width << "x" << b.height;
    return s.str();
  }
  if (a.rgb.size() != b.rgb.size()) {
    s << "buffer size " << a.rgb.size() << " vs " << b.rgb.size();
    return s.str();
  }
  std::size_t diffs = 0, first = 0;
  for (std::size_t i = 0; i < a.rgb.size(); ++i) {
    if (a.rgb[i] != b.rgb[i]) {
      if (diffs == 0) first = i;
      ++diffs;
    }
  }
  if (diffs == 0) return "identical";
  const std::size_t px = first / 3;
  s << diffs << " differing bytes; first at x=" << px % static_cast<std::size_t>(a.width)
    << " y=" << px / static_cast<std::size_t>(a.width) << " c=" << first % 3 << ": " << int{a.rgb[first]}
    << " vs " << int{b.rgb[first]};
  return s.str();
}

}  // namespace ovseg::test
