// Reads that check what they opened (FIFOs, devices, directories and sockets refused, sizes capped
// before reading) and the sweep of stale temporary files.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>

#include <gtest/gtest.h>

#include "common/fs_util.hpp"
#include "common/test_env.hpp"
#include "ovseg/ovseg.hpp"

namespace fs = std::filesystem;
using namespace ovseg::detail;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ovseg::Error& e) {
    EXPECT_EQ(e.code(), ovseg::ErrorCode::kIo);
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(ReadFile, RefusesAFifoWithoutBlocking) {
  ovseg::test::TempDir dir("fifo");
  const std::string fifo = dir.file("f.png");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // Without O_NONBLOCK this open would wait for a writer forever (ctest's timeout bounds it).
  EXPECT_EQ(error_of([&] { read_file(fifo); }), fifo + ": not a regular file (FIFO)");
  EXPECT_EQ(error_of([&] { sha256_file(fifo); }), fifo + ": not a regular file (FIFO)");
}

TEST(ReadFile, RefusesDevicesDirectoriesAndSockets) {
  EXPECT_EQ(error_of([] { read_file("/dev/zero"); }), "/dev/zero: not a regular file (character device)");
  ovseg::test::TempDir dir("dir");
  EXPECT_EQ(error_of([&] { read_file(dir.path().string()); }), dir.path().string() + ": is a directory, not a file");
  const std::string sock = dir.file("s");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_NE(error_of([&] { read_file(sock); }).find("not a regular file (socket)"), std::string::npos);
  ::close(fd);
}

TEST(ReadFile, CapsTheSizeBeforeReading) {
  ovseg::test::TempDir dir("cap");
  const std::string path = dir.file("big");
  { std::ofstream(path) << std::string(1000, 'x'); }
  EXPECT_EQ(read_file(path, 1000).size(), 1000u);
  EXPECT_EQ(error_of([&] { read_file(path, 999); }), path + ": file too large (1000 bytes; the limit is 999 bytes)");
}

TEST(TemporaryNames, OnlyWriteFileAtomicsPattern) {
  long pid = 0;
  EXPECT_TRUE(parse_temporary_name("a.png.tmp123-456", &pid));
  EXPECT_EQ(pid, 123);
  EXPECT_FALSE(parse_temporary_name(".tmp1-2", &pid));
  EXPECT_FALSE(parse_temporary_name("a.tmp", &pid));
  EXPECT_FALSE(parse_temporary_name("a.tmp12-", &pid));
  EXPECT_FALSE(parse_temporary_name("a.tmp-3", &pid));
  EXPECT_FALSE(parse_temporary_name("a.tmp12-3x", &pid));
  // The form with the extension last (a video overlay being written).
  EXPECT_TRUE(parse_temporary_name("clip.overlay.tmp77-5.mp4", &pid));
  EXPECT_EQ(pid, 77);
  EXPECT_FALSE(parse_temporary_name("clip.overlay.mp4", &pid));
  EXPECT_FALSE(parse_temporary_name("a.tmp12-3.", &pid));
  EXPECT_FALSE(parse_temporary_name("a.tmp12-3.toolongext", &pid));
  EXPECT_FALSE(parse_temporary_name(".tmp1-2.mp4", &pid));
}

TEST(TemporaryNames, SweepRemovesOnlyThoseOfDeadProcesses) {
  ovseg::test::TempDir dir("sweep");
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);  // reaped: its pid is not running
  const std::string dead = dir.file("x.png.tmp" + std::to_string(child) + "-1");
  const std::string live = dir.file("y.png.tmp" + std::to_string(::getppid()) + "-2");
  const std::string mine = dir.file("z.png.tmp" + std::to_string(::getpid()) + "-3");
  for (const auto& p : {dead, live, mine}) std::ofstream(p) << "partial";
  EXPECT_EQ(sweep_stale_temporaries(dir.path().string()), 1u);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(mine));
}
