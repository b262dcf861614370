#include "common/fs_util.hpp"

#include <fcntl.h>
#if defined(__x86_64__) || defined(__i386__)
#define OVSEG_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "ovseg/ovseg.hpp"

namespace fs = std::filesystem;

namespace ovseg::detail {

std::string file_kind(unsigned mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "regular file";
    case S_IFDIR: return "directory";
    case S_IFIFO: return "FIFO";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    case S_IFLNK: return "symbolic link";
    default: return "special file";
  }
}

int open_regular_file(const std::string& path, std::uint64_t* size) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
      throw Error(ErrorCode::kIo, path + ": not a regular file (" + file_kind(st.st_mode) + ")");
    throw Error(ErrorCode::kIo, path + ": cannot open file (" + std::strerror(err) + ")");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(ErrorCode::kIo, path + ": cannot open file (" + std::strerror(err) + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    if (S_ISDIR(st.st_mode)) throw Error(ErrorCode::kIo, path + ": is a directory, not a file");
    throw Error(ErrorCode::kIo, path + ": not a regular file (" + file_kind(st.st_mode) + ")");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  if (size) *size = static_cast<std::uint64_t>(st.st_size);
  return fd;
}

void check_regular_file(const std::string& path) { ::close(open_regular_file(path)); }

namespace {

std::string too_large(const std::string& name, std::uint64_t size, std::uint64_t max_bytes, bool at_least) {
  return name + ": file too large (" + (at_least ? "more than " : "") + std::to_string(size) +
         " bytes; the limit is " + std::to_string(max_bytes) + " bytes)";
}

}  // namespace

std::vector<std::uint8_t> read_file(const std::string& path, std::uint64_t max_bytes) {
  std::uint64_t size = 0;
  const int fd = open_regular_file(path, &size);
  if (size > max_bytes) {
    ::close(fd);
    throw Error(ErrorCode::kIo, too_large(path, size, max_bytes, false));
  }
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw Error(ErrorCode::kIo, path + ": read failed (" + std::strerror(err) + ")");
    }
    if (n == 0) break;  // the file shrank while being read
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  bytes.resize(got);
  return bytes;
}

std::string read_text_file(const std::string& path, std::uint64_t max_bytes) {
  auto bytes = read_file(path, max_bytes);
  return std::string(bytes.begin(), bytes.end());
}

std::string read_stream(std::FILE* f, const std::string& name, std::uint64_t max_bytes) {
  std::string out;
  char buf[1 << 16];
  while (true) {
    const std::size_t n = std::fread(buf, 1, sizeof buf, f);
    if (n > 0) {
      if (out.size() + n > max_bytes) throw Error(ErrorCode::kIo, too_large(name, max_bytes, max_bytes, true));
      out.append(buf, n);
    }
    if (n < sizeof buf) {
      if (std::ferror(f)) throw Error(ErrorCode::kIo, name + ": read failed (" + std::strerror(errno) + ")");
      break;
    }
  }
  return out;
}

void write_file_atomic(const std::string& path, const void* bytes, std::size_t size) {
  const fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec) throw Error(ErrorCode::kIo, path + ": cannot create directory " + target.parent_path().string() + " (" + ec.message() + ")");
  }
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string tmp = path + ".tmp" + std::to_string(::getpid()) + "-" + std::to_string(rng() % 1000000);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(ErrorCode::kIo, path + ": cannot write (" + std::strerror(errno) + ")");
  const auto* p = static_cast<const char*>(bytes);
  std::size_t left = size;
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(ErrorCode::kIo, path + ": write failed (" + std::strerror(err) + ")");
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::kIo, path + ": cannot rename temporary file (" + std::strerror(err) + ")");
  }
}

bool parse_temporary_name(const std::string& full, long* pid) {
  // NAME.tmpPID-N, or NAME.tmpPID-N.EXT for writers that need the extension last (a video's
  // container is chosen by it): PID and N decimal, NAME not empty, EXT 1-8 letters or digits.
  std::string name = full;
  if (const std::size_t dot = name.rfind('.'); dot != std::string::npos && dot + 1 < name.size() &&
                                               name.size() - dot - 1 <= 8 && name.compare(dot, 4, ".tmp") != 0) {
    const bool alnum = std::all_of(name.begin() + static_cast<std::ptrdiff_t>(dot) + 1, name.end(),
                                   [](unsigned char c) { return std::isalnum(c) != 0; });
    if (alnum) name.resize(dot);
  }
  const std::size_t at = name.rfind(".tmp");
  if (at == std::string::npos || at == 0) return false;
  std::size_t i = at + 4;
  const std::size_t pid_start = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
  if (i == pid_start || i - pid_start > 9 || i >= name.size() || name[i] != '-') return false;
  const std::size_t dash = i++;
  const std::size_t n_start = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
  if (i == n_start || i != name.size()) return false;
  if (pid) *pid = std::stol(name.substr(pid_start, dash - pid_start));
  return true;
}

std::size_t sweep_stale_temporaries(const std::string& dir) {
  std::error_code ec;
  fs::directory_iterator it(dir.empty() ? fs::path(".") : fs::path(dir), ec), end;
  if (ec) return 0;
  std::size_t removed = 0;
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    long pid = 0;
    const std::string name = it->path().filename().string();
    if (!parse_temporary_name(name, &pid) || pid <= 0) continue;
    std::error_code te;
    if (!it->is_regular_file(te)) continue;
    if (pid == static_cast<long>(::getpid())) continue;                          // ours, being written
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) continue;  // that process still runs
    if (fs::remove(it->path(), te)) ++removed;
  }
  return removed;
}

// ---- SHA-256 (FIPS 180-4) ----------------------------------------------------------------------
namespace {

constexpr std::uint32_t kSha256K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

// The x86 SHA extensions (SHA-NI: Goldmont, Ice Lake and later, every Zen): ~5x the portable
// code, which matters for bundles of 0.8-2 GB whose every file is verified at load.
#ifdef OVSEG_SHA_NI
bool cpu_has_sha_ni() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool sha = (b >> 29) & 1u;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool sse41 = (c >> 19) & 1u, ssse3 = (c >> 9) & 1u;
  return sha && sse41 && ssse3;
}

// `blocks` 64-byte blocks into the state h (a..h). The message schedule four words at a time
// (sha256msg1/msg2), two rounds per sha256rnds2; the state kept as ABEF / CDGH as the
// instructions want it.
__attribute__((target("sha,sse4.1,ssse3"))) void sha256_blocks_sha_ni(std::uint32_t h[8], const std::uint8_t* p,
                                                                       std::size_t blocks) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i abcd = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h));
  __m128i efgh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 4));
  const __m128i cdab = _mm_shuffle_epi32(abcd, 0xB1);
  efgh = _mm_shuffle_epi32(efgh, 0x1B);
  __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
  __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
  for (std::size_t b = 0; b < blocks; ++b, p += 64) {
    const __m128i abef0 = abef, cdgh0 = cdgh;
    __m128i w[16];
    for (int g = 0; g < 4; ++g)
      w[g] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * g)), bswap);
    for (int g = 4; g < 16; ++g)
      w[g] = _mm_sha256msg2_epu32(
          _mm_add_epi32(_mm_sha256msg1_epu32(w[g - 4], w[g - 3]), _mm_alignr_epi8(w[g - 1], w[g - 2], 4)), w[g - 1]);
    for (int g = 0; g < 16; ++g) {
      __m128i m = _mm_add_epi32(w[g], _mm_loadu_si128(reinterpret_cast<const __m128i*>(kSha256K + 4 * g)));
      cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);  // two rounds: the new ABEF
      m = _mm_shuffle_epi32(m, 0x0E);
      abef = _mm_sha256rnds2_epu32(abef, cdgh, m);  // two more (the old ABEF is now CDGH)
    }
    abef = _mm_add_epi32(abef, abef0);
    cdgh = _mm_add_epi32(cdgh, cdgh0);
  }
  const __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
  const __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h), _mm_blend_epi16(feba, dchg, 0xF0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 4), _mm_alignr_epi8(dchg, feba, 8));
}
#else
bool cpu_has_sha_ni() { return false; }
void sha256_blocks_sha_ni(std::uint32_t*, const std::uint8_t*, std::size_t) {}
#endif

class Sha256 {
 public:
  explicit Sha256(bool use_sha_ni = sha_ni()) : sha_ni_(use_sha_ni) {}
  static bool sha_ni() {
    static const bool have = cpu_has_sha_ni();
    return have;
  }
  void update(const std::uint8_t* data, std::size_t n) {
    total_ += n;
    while (n > 0) {
      if (fill_ == 0 && n >= 64) {  // whole blocks straight from the input
        const std::size_t blocks = n / 64;
        blocks_from(data, blocks);
        data += blocks * 64;
        n -= blocks * 64;
        continue;
      }
      const std::size_t take = std::min(n, std::size_t{64} - fill_);
      std::memcpy(buf_.data() + fill_, data, take);
      fill_ += take;
      data += take;
      n -= take;
      if (fill_ == 64) {
        blocks_from(buf_.data(), 1);
        fill_ = 0;
      }
    }
  }
  std::string hex() {
    const std::uint64_t bits = total_ * 8;
    const std::uint8_t pad = 0x80;
    update(&pad, 1);
    const std::uint8_t zero = 0;
    while (fill_ != 56) update(&zero, 1);
    std::uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(bits >> (56 - 8 * i));
    update(len, 8);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (std::uint32_t v : h_)
      for (int s = 28; s >= 0; s -= 4) out.push_back(digits[(v >> s) & 0xf]);
    return out;
  }

 private:
  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void blocks_from(const std::uint8_t* p, std::size_t blocks) {
    if (sha_ni_) {
      sha256_blocks_sha_ni(h_.data(), p, blocks);
      return;
    }
    for (std::size_t b = 0; b < blocks; ++b) block(p + 64 * b);
  }
  void block(const std::uint8_t* p) {
    const std::uint32_t* k = kSha256K;
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (std::uint32_t{p[4 * i]} << 24) | (std::uint32_t{p[4 * i + 1]} << 16) |
             (std::uint32_t{p[4 * i + 2]} << 8) | std::uint32_t{p[4 * i + 3]};
    for (int i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d; h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
  }

  std::array<std::uint32_t, 8> h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<std::uint8_t, 64> buf_{};
  std::size_t fill_ = 0;
  std::uint64_t total_ = 0;
  bool sha_ni_ = false;
};

}  // namespace

bool sha256_uses_sha_ni() { return Sha256::sha_ni(); }

std::string sha256_hex_portable(const void* bytes, std::size_t size) {
  Sha256 s(false);
  s.update(static_cast<const std::uint8_t*>(bytes), size);
  return s.hex();
}

std::string sha256_hex(const void* bytes, std::size_t size) {
  Sha256 s;
  s.update(static_cast<const std::uint8_t*>(bytes), size);
  return s.hex();
}

std::string sha256_file(const std::string& path) {
  const int fd = open_regular_file(path);
  Sha256 s;
  std::vector<std::uint8_t> buf(1 << 20);
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw Error(ErrorCode::kIo, path + ": read failed (" + std::strerror(err) + ")");
    }
    if (n == 0) break;
    s.update(buf.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  return s.hex();
}

std::vector<std::uint8_t> npy_float32(const float* data, const std::vector<std::int64_t>& shape) {
  std::ostringstream dims;
  std::int64_t count = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    dims << shape[i] << (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
    if (i + 1 < shape.size()) dims << ' ';
    count *= shape[i];
  }
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims.str() + "), }";
  const std::size_t unpadded = 10 + header.size() + 1;  // magic(6)+version(2)+len(2), newline
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  const std::size_t payload = static_cast<std::size_t>(count) * sizeof(float);
  std::vector<std::uint8_t> out(10 + header.size() + payload);
  const std::uint8_t magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                  static_cast<std::uint8_t>(header.size() & 0xff),
                                  static_cast<std::uint8_t>(header.size() >> 8)};
  std::memcpy(out.data(), magic, sizeof magic);
  std::memcpy(out.data() + 10, header.data(), header.size());
  if (payload > 0) std::memcpy(out.data() + 10 + header.size(), data, payload);
  return out;
}

}  // namespace ovseg::detail
