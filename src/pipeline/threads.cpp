// Intra-op threads: LibTorch starts with whatever OpenMP/MKL decide (here: one thread), so the
// library sets the count itself, once per process (torch cannot safely change it later).
#include <sched.h>

#include <mutex>
#include <thread>

#include <ATen/Parallel.h>

#include "common/log.hpp"
#include "pipeline/pipeline.hpp"

namespace ovseg::detail {

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

void init_threads(int requested) {
  static std::once_flag once;
  static int chosen = 0;
  const int want = requested > 0 ? requested : usable_cores();
  std::call_once(once, [&] {
    chosen = want;
    at::set_num_threads(want);
    detail::log().debug("intra-op threads: {}", want);
  });
  if (want != chosen)
    detail::log().debug("intra-op threads stay at {} (set once per process; {} requested)", chosen, want);
}

}  // namespace ovseg::detail
