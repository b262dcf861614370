// Returning freed heap memory to the system between pipeline stages (keeps the peak resident size low).
#include <cstddef>  // brings in <features.h>, which defines __GLIBC__

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "pipeline/pipeline.hpp"

namespace ovseg::detail {

void release_freed_memory() {
#if defined(__GLIBC__)
  // glibc serves tensors below its (adaptive, up to 32 MB) mmap threshold from heaps that it
  // trims only at their top, so each stage's freed activations (≈ 300 MB after the proposals or
  // the CLIP batches) stay resident while the next stage, with other sizes, maps fresh memory.
  // malloc_trim(0) gives the free pages of every arena back (a few ms).
  malloc_trim(0);
#endif
}

}  // namespace ovseg::detail
