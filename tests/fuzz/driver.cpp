// An in-process fuzzing driver for targets written against libFuzzer's entry point
// (LLVMFuzzerTestOneInput), so that the same targets run with GCC + ASan/UBSan in CI and with
// clang's -fsanitize=fuzzer on demand. It is not coverage-guided: mutations (bit flips, byte
// sets, interesting values, insertions, deletions, duplicated chunks, extreme 16/32-bit fields,
// splices of two corpus files) of the seed corpus, chosen by a seeded PRNG.
//
//   fuzz_X CORPUS_DIR [--seconds N] [--runs N] [--seed N] [--max-len N] [--verbose 1]
//
// Prints "fuzz_X: N executions in S s (corpus of K files), no findings" at the end. A finding (a
// crash, a sanitizer report, a failed check in the target, an unexpected exception) ends the
// process with a non-zero status after writing the input to ./fuzz-crash-X.bin (replay it with
// `fuzz_X --replay FILE`). The run is deterministic for a --seed and corpus.
//
// The libraries under test write their complaints about bad input to stderr (libpng, libjpeg,
// OpenCV, spdlog): unless --verbose 1, stderr is a scratch file emptied before each input, and
// only a failing input's messages (with the sanitizer report) reach the original stderr.
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

// A sanitizer runtime's function, in every runtime loaded: GCC links ASan and UBSan as two
// shared libraries, each with its own copy of the common part (report file, death callbacks);
// clang links one runtime into the executable. Empty without sanitizers.
std::vector<void*> sanitizer_functions(const char* symbol) {
  struct Ctx {
    const char* symbol;
    std::vector<void*> found;
  } ctx{symbol, {}};
  if (void* f = ::dlsym(RTLD_DEFAULT, symbol)) ctx.found.push_back(f);
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) -> int {
        auto& c = *static_cast<Ctx*>(data);
        if (!info->dlpi_name || !std::strstr(info->dlpi_name, "san")) return 0;
        if (void* h = ::dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD)) {
          void* f = ::dlsym(h, c.symbol);
          if (f && std::find(c.found.begin(), c.found.end(), f) == c.found.end()) c.found.push_back(f);
          ::dlclose(h);
        }
        return 0;
      },
      &ctx);
  return ctx.found;
}

std::vector<std::uint8_t> g_current;
int g_err_fd = 2;             // the original stderr
char g_crash_path[4096] = "";  // where a finding's input goes
bool g_quiet = false;           // stderr is a scratch file (see main)

void say(const char* s) {
  const std::size_t n = std::strlen(s);
  for (std::size_t off = 0; off < n;) {
    const ssize_t w = ::write(g_err_fd, s + off, n - off);
    if (w <= 0) break;
    off += static_cast<std::size_t>(w);
  }
}

// Async-signal-safe (pread/write only): the failing input's stderr, to the original stderr.
void copy_report() {
  if (!g_quiet) return;
  g_quiet = false;
  char buf[4096];
  off_t at = 0;
  for (ssize_t n; (n = ::pread(2, buf, sizeof buf, at)) > 0; at += n) {
    for (ssize_t off = 0; off < n;) {
      const ssize_t w = ::write(g_err_fd, buf + off, static_cast<std::size_t>(n - off));
      if (w <= 0) break;
      off += w;
    }
  }
}

// Before each input in quiet mode: forget the previous input's messages.
void clear_stderr() {
  if (g_quiet) {
    ::ftruncate(2, 0);
    ::lseek(2, 0, SEEK_SET);
  }
}

void save_current_input() {
  copy_report();
  if (!g_crash_path[0]) return;
  const int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  for (std::size_t off = 0; off < g_current.size();) {
    const ssize_t w = ::write(fd, g_current.data() + off, g_current.size() - off);
    if (w <= 0) break;
    off += static_cast<std::size_t>(w);
  }
  ::close(fd);
  say("fuzz: the input that failed is in ");
  say(g_crash_path);
  say("\n");
}

void on_fatal_signal(int sig) {
  say("fuzz: finding: fatal signal ");
  say(sig == SIGABRT ? "SIGABRT" : sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : sig == SIGFPE ? "SIGFPE" : "SIGILL");
  say("\n");
  save_current_input();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void mutate(std::vector<std::uint8_t>& d, const std::vector<std::vector<std::uint8_t>>& corpus, std::mt19937_64& rng,
            std::size_t max_len) {
  auto pick = [&](std::size_t n) { return n == 0 ? std::size_t{0} : static_cast<std::size_t>(rng() % n); };
  const int rounds = 1 + static_cast<int>(rng() % 4);
  static const std::uint8_t kInteresting[] = {0, 1, 0x7F, 0x80, 0xFF, 0xFE, 0x10, 0x20, '\n', '\r', '{', '}', '"', ','};
  for (int r = 0; r < rounds; ++r) {
    switch (rng() % 8) {
      case 0: if (!d.empty()) d[pick(d.size())] ^= static_cast<std::uint8_t>(1u << (rng() % 8)); break;
      case 1: if (!d.empty()) d[pick(d.size())] = static_cast<std::uint8_t>(rng()); break;
      case 2: if (!d.empty()) d[pick(d.size())] = kInteresting[pick(sizeof kInteresting)]; break;
      case 3: if (d.size() < max_len) d.insert(d.begin() + static_cast<std::ptrdiff_t>(pick(d.size() + 1)), static_cast<std::uint8_t>(rng())); break;
      case 4: if (!d.empty()) {
          const std::size_t at = pick(d.size());
          const std::size_t n = 1 + pick(std::min<std::size_t>(16, d.size() - at));
          d.erase(d.begin() + static_cast<std::ptrdiff_t>(at), d.begin() + static_cast<std::ptrdiff_t>(at + n));
        } break;
      case 5: if (!d.empty() && d.size() < max_len) {
          const std::size_t at = pick(d.size());
          const std::size_t n = 1 + pick(std::min<std::size_t>(64, d.size() - at));
          const std::vector<std::uint8_t> chunk(d.begin() + static_cast<std::ptrdiff_t>(at), d.begin() + static_cast<std::ptrdiff_t>(at + n));
          d.insert(d.begin() + static_cast<std::ptrdiff_t>(pick(d.size() + 1)), chunk.begin(), chunk.end());
        } break;
      case 6: if (!corpus.empty()) {  // splice: our head, another file's tail
          const auto& o = corpus[pick(corpus.size())];
          const std::size_t cut = pick(d.size() + 1), from = pick(o.size() + 1);
          d.resize(cut);
          d.insert(d.end(), o.begin() + static_cast<std::ptrdiff_t>(from), o.end());
        } break;
      default: if (d.size() >= 4) {  // a 16/32-bit field set to an extreme value
          const std::size_t at = pick(d.size() - 3);
          const std::uint32_t v = rng() % 2 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(rng() % 70000);
          std::memcpy(d.data() + at, &v, rng() % 2 ? 4 : 2);
        } break;
    }
  }
  if (d.size() > max_len) d.resize(max_len);
}

std::vector<std::uint8_t> read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

// The targets' report channel (targets.cpp): a failed check, written where sanitizer reports go.
extern "C" void ovseg_fuzz_report(const char* message) {
  say("fuzz: finding: ");
  say(message);
  say("\n");
}

int main(int argc, char** argv) {
  const std::string name = std::filesystem::path(argv[0]).filename().string();
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: %s CORPUS_DIR [--seconds N] [--runs N] [--seed N] [--max-len N] [--verbose 1]\n"
                 "       %s --replay FILE\n",
                 argv[0], argv[0]);
    return 2;
  }
  double seconds = 10;
  long long runs = -1;
  std::uint64_t seed = 1;
  std::size_t max_len = 1 << 16;
  bool verbose = false;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (k == "--runs") runs = std::atoll(argv[i + 1]);
    else if (k == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (k == "--max-len") max_len = static_cast<std::size_t>(std::atoll(argv[i + 1]));
    else if (k == "--verbose") verbose = std::atoi(argv[i + 1]) != 0;
    else {
      std::fprintf(stderr, "%s: unknown option %s\n", name.c_str(), k.c_str());
      return 2;
    }
  }
  if (std::string(argv[1]) == "--replay") {  // one input, with all output
    if (argc < 3) return 2;
    g_current = read_all(argv[2]);
    LLVMFuzzerTestOneInput(g_current.data(), g_current.size());
    std::printf("%s: %s ran without a finding\n", name.c_str(), argv[2]);
    return 0;
  }

  std::vector<std::vector<std::uint8_t>> corpus;
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(argv[1], ec))
    if (e.is_regular_file()) files.push_back(e.path());
  if (ec) {
    std::fprintf(stderr, "%s: cannot read the corpus directory %s: %s\n", name.c_str(), argv[1], ec.message().c_str());
    return 2;
  }
  std::sort(files.begin(), files.end());  // directory order is not stable; the run must be
  for (const auto& f : files) corpus.push_back(read_all(f));
  if (corpus.empty()) corpus.emplace_back();

  std::snprintf(g_crash_path, sizeof g_crash_path, "%s/fuzz-crash-%s.bin",
                std::filesystem::current_path(ec).string().c_str(), name.c_str());
  if (!verbose) {
    // stderr goes to a scratch file, emptied before each input; when the process dies, what it
    // holds (the sanitizer report, the libraries' messages about the failing input) is copied to
    // the original stderr.
    char path[] = "/tmp/ovseg-fuzz-stderr-XXXXXX";
    const int tmp = ::mkstemp(path);
    const int saved = tmp >= 0 ? ::dup(2) : -1;
    if (tmp >= 0 && saved >= 0) {
      ::unlink(path);
      g_err_fd = saved;
      ::dup2(tmp, 2);
      ::close(tmp);
      g_quiet = true;
    }
  }
  // A sanitizer report ends the process through its death callback; without a sanitizer, the
  // fatal signals do. SIGABRT (a failed check, std::terminate) is not a sanitizer's.
  const auto death_callbacks = sanitizer_functions("__sanitizer_set_death_callback");
  for (void* f : death_callbacks) reinterpret_cast<void (*)(void (*)())>(f)(save_current_input);
  if (death_callbacks.empty())
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL}) ::signal(sig, on_fatal_signal);
  ::signal(SIGABRT, on_fatal_signal);

  std::mt19937_64 rng(seed);
  {
    char line[512];
    std::snprintf(line, sizeof line, "%s: seed %llu, %zu corpus files\n", name.c_str(),
                  static_cast<unsigned long long>(seed), corpus.size());
    say(line);
  }
  const auto start = std::chrono::steady_clock::now();
  long long execs = 0;
  for (const auto& c : corpus) {  // the seeds themselves first
    g_current = c;
    clear_stderr();
    LLVMFuzzerTestOneInput(g_current.data(), g_current.size());
    ++execs;
  }
  while (true) {
    if (runs >= 0 ? execs >= runs
                  : std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= seconds)
      break;
    g_current = corpus[static_cast<std::size_t>(rng() % corpus.size())];
    mutate(g_current, corpus, rng, max_len);
    clear_stderr();
    LLVMFuzzerTestOneInput(g_current.data(), g_current.size());
    ++execs;
  }
  clear_stderr();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %lld executions in %.1f s (corpus of %zu files), no findings\n", name.c_str(), execs, s,
              corpus.size());
  return 0;
}
