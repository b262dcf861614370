// The stage table of the public API: names, Timings indexing and +=.
#include <cstring>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "ovseg/ovseg.hpp"

namespace ovseg {
namespace {

TEST(StageTable, NamesAreUniqueAndInEnumOrder) {
  std::set<std::string> names;
  for (std::size_t i = 0; i < kNumStages; ++i) {
    EXPECT_EQ(static_cast<std::size_t>(kStageTable[i].stage), i);
    EXPECT_GT(std::strlen(kStageTable[i].name), 0u);
    names.insert(kStageTable[i].name);
  }
  EXPECT_EQ(names.size(), kNumStages);
  EXPECT_STREQ(to_string(Stage::kClip), "clip");
  EXPECT_STREQ(to_string(Stage::kPreprocess), "preprocess");
}

TEST(StageTable, TimingsIndexAndAdd) {
  Timings a, b;
  a[Stage::kClip] = 2.5;
  EXPECT_EQ(a.clip_ms, 2.5);
  double v = 1.0;
  for (const StageInfo& st : kStageTable) b[st.stage] = v++;  // 1..6
  b.total_ms = 30.0;
  a += b;
  a += b;
  EXPECT_EQ(a.preprocess_ms, 2.0);
  EXPECT_EQ(a.text_ms, 4.0);
  EXPECT_EQ(a.proposals_ms, 6.0);
  EXPECT_EQ(a.regions_ms, 8.0);
  EXPECT_EQ(a.clip_ms, 2.5 + 10.0);
  EXPECT_EQ(a.post_ms, 12.0);
  EXPECT_EQ(a.total_ms, 60.0);
  const Timings& c = a;
  EXPECT_EQ(c[Stage::kPost], 12.0);
}

}  // namespace
}  // namespace ovseg
