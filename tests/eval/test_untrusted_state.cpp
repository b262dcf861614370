// Shard checkpoints are input from anywhere (a cluster's shared folder): every count and name a
// checkpoint holds is checked (issue: untrusted files). Each test writes the hostile checkpoint
// itself, from a valid one.
#include <cstdint>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "eval/eval_test_util.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::eval {
namespace {

using nlohmann::json;
using test::TempDir;

// A finished shard (test::shard_state) with some pixels counted.
EvalState valid_state(int index = 0, int count = 1) {
  EvalState s = test::shard_state(index, count, 2, 2);
  s.cm.at(0, 0) = 10;
  s.cm.at(1, 0) = 2;
  return s;
}

// Saves a valid state, lets `tamper` edit its JSON, and returns the error load_state gives.
std::string load_error(const std::function<void(json&)>& tamper) {
  TempDir dir("untrusted-state");
  const std::string path = dir.file("checkpoint.json");
  save_state(path, valid_state());
  json j;
  std::ifstream(path) >> j;
  tamper(j);
  std::ofstream(path) << j.dump();
  try {
    (void)load_state(path);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadData) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "the tampered checkpoint loaded";
  return {};
}

TEST(UntrustedState, AValidCheckpointLoads) {
  TempDir dir("untrusted-state");
  save_state(dir.file("c.json"), valid_state());
  EXPECT_EQ(load_state(dir.file("c.json")).finished.size(), 2u);
}

TEST(UntrustedState, StemsThatAreNotPlainFileNamesAreRefused) {
  for (const std::string& stem : std::vector<std::string>{"../../secret/x", "/etc/passwd", "a/b", "..", ".", "",
                                                          std::string("a\0b", 3), "back\\slash"}) {
    SCOPED_TRACE(json(stem).dump());
    EXPECT_NE(load_error([&](json& j) { j["finished"][0] = stem; }).find("not a plain file name"), std::string::npos);
    EXPECT_NE(load_error([&](json& j) { j["failed"] = json::array({{{"name", stem}, {"reason", "x"}}});
                                j["pairs_total"] = 3; })
                  .find("not a plain file name"),
              std::string::npos);
  }
  EXPECT_TRUE(is_plain_stem("ADE_val_00000001"));
  EXPECT_TRUE(is_plain_stem("café 2"));
}

TEST(UntrustedState, ShardNumbersOutOfRangeAreRefused) {
  EXPECT_NE(load_error([](json& j) { j["shard"] = {{"index", 0}, {"count", 999999999}}; }).find("out of range"),
            std::string::npos);
  EXPECT_NE(load_error([](json& j) { j["shard"] = {{"index", 0}, {"count", 0}}; }).find("out of range"),
            std::string::npos);
  EXPECT_NE(load_error([](json& j) { j["shard"] = {{"index", 3}, {"count", 2}}; }).find("out of range"),
            std::string::npos);
  EXPECT_NE(load_error([](json& j) { j["shard"] = {{"index", -1}, {"count", 2}}; }).find("out of range"),
            std::string::npos);
  EXPECT_THROW(parse_shard("0/999999999"), Error);
  EXPECT_THROW(parse_shard("0/" + std::to_string(kMaxShards + 1)), Error);
  EXPECT_EQ(parse_shard("7/" + std::to_string(kMaxShards)).second, kMaxShards);
}

TEST(UntrustedState, CountsAreCheckedForRangeOverflowAndConsistency) {
  // A count of 2^63 - 1 overflowed the pixel accuracy to -100 and exited 0.
  EXPECT_NE(load_error([](json& j) {
              j["confusion"]["entries"] = json::array({json::array({0, 0, std::numeric_limits<std::int64_t>::max()})});
            }).find("2^53"),
            std::string::npos);
  EXPECT_NE(load_error([](json& j) {
              const std::int64_t half = std::int64_t{1} << 52;
              j["confusion"]["entries"] = json::array({json::array({0, 0, half}), json::array({1, 1, half + 1})});
            }).find("2^53"),
            std::string::npos);
  EXPECT_NE(load_error([](json& j) { j["pairs_total"] = -5; }).find("pairs_total"), std::string::npos);
  // Two finished images, but a shard of one pair: not "complete".
  EXPECT_NE(load_error([](json& j) { j["pairs_total"] = 1; }).find("more than the shard's"), std::string::npos);
  EXPECT_NE(load_error([](json& j) { j["images_left_out"] = -1; }).find("images_left_out"), std::string::npos);
}

TEST(UntrustedState, MergingCannotOverflow) {
  std::vector<EvalState> shards = {valid_state(0, 2), valid_state(1, 2)};
  shards[0].cm.at(0, 0) = std::int64_t{1} << 52;
  shards[1].cm.at(0, 0) = (std::int64_t{1} << 52) + 1;
  try {
    (void)merge_states(shards);
    FAIL() << "merged beyond 2^53 pixels";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadData);
  }
  shards[0].cm.at(0, 0) = std::numeric_limits<std::int64_t>::max();
  EXPECT_THROW((void)merge_states(shards), Error);
}

TEST(UntrustedState, ManyMissingShardsAreOneMessage) {
  // --shard 0/100000 merged alone: memory and output independent of N.
  const auto problems = check_shards({valid_state(0, kMaxShards)}, {"s0"});
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("99999 of the 100000 shards are missing"), std::string::npos) << problems[0];
  EXPECT_LT(problems[0].size(), 200u);
  std::vector<std::string> incomplete;
  (void)merge_states({valid_state(0, kMaxShards)}, &incomplete);
  ASSERT_EQ(incomplete.size(), 1u);
  EXPECT_NE(incomplete[0].find("99999 of the 100000"), std::string::npos) << incomplete[0];
}

}  // namespace
}  // namespace ovseg::eval
