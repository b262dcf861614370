// Helpers of the eval tests: temporary directories, synthetic label maps, and the independent
// numpy computation of the metrics (tests/eval/expected_metrics.py run with /usr/bin/python3).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "common/test_env.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::test {

namespace fs = std::filesystem;

// Random labels: `classes` values drawn from `pool`, a fraction `ignore_fraction` set to `ignore`.
inline std::vector<std::uint16_t> random_labels(std::mt19937& rng, int w, int h, const std::vector<int>& pool,
                                                double ignore_fraction, std::uint32_t ignore) {
  std::uniform_int_distribution<std::size_t> pick(0, pool.size() - 1);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<std::uint16_t> v(static_cast<std::size_t>(w) * h);
  // Blocks of 4×4 with one label, plus noise, so IoUs are neither 0 nor 1 everywhere.
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) v[y * w + x] = static_cast<std::uint16_t>(pool[pick(rng)]);
  for (int y = 0; y < h; y += 4)
    for (int x = 0; x < w; x += 4) {
      const auto label = static_cast<std::uint16_t>(pool[pick(rng)]);
      for (int yy = y; yy < std::min(h, y + 4); ++yy)
        for (int xx = x; xx < std::min(w, x + 4); ++xx)
          if (u(rng) < 0.7) v[yy * w + xx] = label;
    }
  for (auto& x : v)
    if (u(rng) < ignore_fraction) x = static_cast<std::uint16_t>(ignore);
  return v;
}

// Prediction = GT with a share of pixels replaced from `pool` (never the ignore value).
inline std::vector<std::uint16_t> noisy_copy(std::mt19937& rng, const std::vector<std::uint16_t>& gt,
                                             std::uint32_t ignore, const std::vector<int>& pool, double noise) {
  std::uniform_int_distribution<std::size_t> pick(0, pool.size() - 1);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<std::uint16_t> p(gt.size());
  for (std::size_t i = 0; i < gt.size(); ++i)
    p[i] = (gt[i] == ignore || u(rng) < noise) ? static_cast<std::uint16_t>(pool[pick(rng)]) : gt[i];
  return p;
}

// 8-bit PNG or 16-bit TIFF (by extension) with OpenCV, independent of the library's writer.
inline void write_label_file(const fs::path& path, int w, int h, const std::vector<std::uint16_t>& v, int bit_depth) {
  fs::create_directories(path.parent_path());
  cv::Mat m;
  if (bit_depth == 8) {
    m.create(h, w, CV_8UC1);
    for (int i = 0; i < w * h; ++i) m.data[i] = static_cast<std::uint8_t>(v[i]);
  } else {
    m.create(h, w, CV_16UC1);
    std::memcpy(m.data, v.data(), v.size() * 2);
  }
  ASSERT_TRUE(cv::imwrite(path.string(), m)) << path;
}

inline void write_raw_u16(const fs::path& path, const std::vector<std::uint16_t>& v) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 2));
}

inline std::vector<std::uint16_t> read_raw_u16(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::uint16_t> v(fs::file_size(path) / 2);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 2));
  return v;
}

inline void write_noise_jpeg(const fs::path& path, int w, int h, std::mt19937& rng) {
  fs::create_directories(path.parent_path());
  cv::Mat m(h, w, CV_8UC3);
  std::uniform_int_distribution<int> d(0, 255);
  for (std::size_t i = 0; i < m.total() * 3; ++i) m.data[i] = static_cast<std::uint8_t>(d(rng));
  ASSERT_TRUE(cv::imwrite(path.string(), m)) << path;
}

// A shard's evaluation state: `done` of its `total` images finished (named imgI_N), classes a, b.
inline eval::EvalState shard_state(int index, int count, std::int64_t total, std::int64_t done) {
  eval::EvalState s;
  s.dataset = "ade150";
  s.split = "validation";
  s.shard_index = index;
  s.shard_count = count;
  s.class_names = {"a", "b"};
  s.settings = {{"bundle_sha256", "0123456789abcdef0123"}, {"mode", "eval"}};
  s.cm = eval::ConfusionMatrix(2);
  s.pairs_total = total;
  for (std::int64_t i = 0; i < done; ++i) s.finished.push_back("img" + std::to_string(index) + "_" + std::to_string(i));
  return s;
}

inline void write_bytes(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

struct ExpectedImage {
  std::string gt, pred;  // pred: a .u16 raw file or a label file
  int width = 0, height = 0;
};

// Runs expected_metrics.py; GTEST_SKIP-worthy problems (no python/numpy/PIL) return null JSON.
inline nlohmann::json numpy_expected(const fs::path& work_dir, int num_classes, std::uint32_t ignore,
                                     const std::vector<ExpectedImage>& images) {
  nlohmann::json in;
  in["num_classes"] = num_classes;
  in["ignore_label"] = ignore;
  in["images"] = nlohmann::json::array();
  for (const auto& i : images)
    in["images"].push_back({{"gt", i.gt}, {"pred", i.pred}, {"width", i.width}, {"height", i.height}});
  const fs::path input = work_dir / "expected_input.json";
  std::ofstream(input) << in.dump();
  const std::string script = source_dir() + "/tests/eval/expected_metrics.py";
  const std::string cmd = python() + " " + script + " " + input.string() + " 2>" + (work_dir / "py.err").string();
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return nullptr;
  std::string out;
  char buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  const int rc = ::pclose(pipe);
  if (rc != 0) {
    std::ifstream err(work_dir / "py.err");
    std::string msg((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
    ADD_FAILURE() << "expected_metrics.py failed (rc " << rc << "): " << msg;
    return nullptr;
  }
  return nlohmann::json::parse(out);
}

inline bool python_with_numpy() {
  const std::string cmd = python() + " -c 'import numpy, PIL' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

#define OVSEG_REQUIRE_NUMPY()                                                                  \
  do {                                                                                         \
    if (!::ovseg::test::python_with_numpy())                                                   \
      GTEST_SKIP() << ::ovseg::test::python() << " with numpy and PIL (Debian python3-numpy, " \
                   << "python3-pil) is needed for the independent metric computation";         \
  } while (0)

// A metric value from numpy's JSON (null = NaN).
inline double json_value(const nlohmann::json& v) {
  return v.is_null() ? std::nan("") : v.get<double>();
}

// Every metric of `m` against numpy's output, to the bit (both follow detectron2's float64 order;
// the library reproduces numpy's pairwise summation).
inline void expect_metrics_match(const eval::Metrics& m, const nlohmann::json& e) {
  EXPECT_EQ(m.miou, e.at("mIoU").get<double>()) << "mIoU";
  EXPECT_EQ(m.miou_gt_classes, e.at("mIoU_gt_classes").get<double>()) << "mIoU_gt_classes";
  EXPECT_EQ(m.fwiou, e.at("fwIoU").get<double>()) << "fwIoU";
  EXPECT_EQ(m.macc, e.at("mACC").get<double>()) << "mACC";
  EXPECT_EQ(m.pacc, e.at("pACC").get<double>()) << "pACC";
  EXPECT_EQ(m.classes_with_gt, e.at("classes_with_gt").get<int>());
  EXPECT_EQ(m.classes_with_gt_or_pred, e.at("classes_with_gt_or_pred").get<int>());
  EXPECT_EQ(m.ignored_pixels, e.at("pixels_ignored").get<std::int64_t>());
  ASSERT_EQ(static_cast<std::size_t>(m.num_classes), e.at("IoU").size());
  for (int c = 0; c < m.num_classes; ++c) {
    const double iou = json_value(e.at("IoU")[c]), acc = json_value(e.at("ACC")[c]);
    if (std::isnan(iou)) {
      EXPECT_TRUE(std::isnan(m.iou[c])) << "IoU of class " << c;
    } else {
      EXPECT_EQ(m.iou[c], iou) << "IoU of class " << c;
    }
    if (std::isnan(acc)) {
      EXPECT_TRUE(std::isnan(m.acc[c])) << "ACC of class " << c;
    } else {
      EXPECT_EQ(m.acc[c], acc) << "ACC of class " << c;
    }
    EXPECT_EQ(m.tp[c], e.at("tp")[c].get<std::int64_t>()) << c;
    EXPECT_EQ(m.gt_pixels[c], e.at("gt_pixels")[c].get<std::int64_t>()) << c;
    EXPECT_EQ(m.pred_pixels[c], e.at("pred_pixels")[c].get<std::int64_t>()) << c;
  }
}

inline void expect_matrix_matches(const eval::ConfusionMatrix& cm, const nlohmann::json& e) {
  std::int64_t total = 0;
  for (const auto& t : e.at("confusion_nonzero")) {
    EXPECT_EQ(cm.at(t[0].get<int>(), t[1].get<int>()), t[2].get<std::int64_t>()) << t.dump();
    total += t[2].get<std::int64_t>();
  }
  EXPECT_EQ(cm.total(), total) << "the library's matrix has counts numpy's has not";
}

}  // namespace ovseg::test
