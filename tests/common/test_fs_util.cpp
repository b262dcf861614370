#include <filesystem>
#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>

#include "common/fs_util.hpp"
#include "ovseg/ovseg.hpp"

namespace fs = std::filesystem;
using namespace ovseg::detail;

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PortableKnownVectors) {
  EXPECT_EQ(sha256_hex_portable("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex_portable(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// sha256_hex (the SHA extensions where the CPU has them, and whole blocks hashed straight from
// the input) equals the portable block-by-block code for every length around the block and
// padding boundaries, and for unaligned inputs.
TEST(Sha256, FastPathEqualsThePortableCode) {
  std::printf("SHA extensions: %s\n", sha256_uses_sha_ni() ? "used" : "not on this CPU");
  std::string data(5100, '\0');
  std::uint32_t x = 12345;
  for (auto& c : data) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  for (std::size_t n : {0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 4999})
    for (std::size_t offset : {0, 1, 3})
      EXPECT_EQ(sha256_hex(data.data() + offset, n), sha256_hex_portable(data.data() + offset, n)) << n << "+" << offset;
}

TEST(FsUtil, AtomicWriteCreatesDirectoriesAndLeavesNoTemporary) {
  const fs::path dir = fs::temp_directory_path() / ("ovseg-fs-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string path = (dir / "a" / "b.txt").string();
  write_file_atomic(path, std::string("hello"));
  EXPECT_EQ(read_text_file(path), "hello");
  write_file_atomic(path, std::string("again"));
  EXPECT_EQ(read_text_file(path), "again");
  EXPECT_EQ(sha256_file(path), sha256_hex("again", 5));
  int entries = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir / "a")) ++entries;
  EXPECT_EQ(entries, 1);
  fs::remove_all(dir);
}

TEST(FsUtil, MissingFileIsAnIoErrorNamingTheFile) {
  try {
    read_file("/nonexistent/ovseg/file.bin");
    FAIL() << "expected an error";
  } catch (const ovseg::Error& e) {
    EXPECT_EQ(e.code(), ovseg::ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/ovseg/file.bin"), std::string::npos);
  }
}

TEST(FsUtil, NpyHeaderIsAlignedAndDescribesTheArray) {
  const float data[6] = {1, 2, 3, 4, 5, 6};
  const auto bytes = npy_float32(data, {2, 3});
  ASSERT_GT(bytes.size(), 10u);
  const std::size_t header_len = bytes[8] | (bytes[9] << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  const std::string header(bytes.begin() + 10, bytes.begin() + 10 + header_len);
  EXPECT_NE(header.find("'shape': (2, 3)"), std::string::npos);
  EXPECT_EQ(bytes.size(), 10 + header_len + sizeof(data));
  const auto one = npy_float32(data, {6});
  const std::string h1(one.begin() + 10, one.begin() + 10 + (one[8] | (one[9] << 8)));
  EXPECT_NE(h1.find("'shape': (6,)"), std::string::npos);
}
