// What the CPU can do (cpuid), and the precision a model runs in (Precision::kAuto, and the
// refusal of bf16 where it would be far slower than fp32).
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "common/log.hpp"
#include "ovseg/ovseg.hpp"

namespace ovseg {

namespace {

#if defined(__x86_64__) || defined(__i386__)
unsigned long long xgetbv0() {
  unsigned int eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned int a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1, fma = (c >> 12) & 1;
  const unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;                // XMM and YMM state
  const bool os_avx512 = os_avx && (xcr0 & 0xE0) == 0xE0;  // opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;         // XTILECFG, XTILEDATA
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = os_avx && fma && ((b >> 5) & 1);
  f.avx512f = os_avx512 && ((b >> 16) & 1);
  f.amx_bf16 = os_amx && ((d >> 22) & 1);
  unsigned int a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512_bf16 = f.avx512f && ((a1 >> 5) & 1);
#endif
  // A switch for tests and for comparing: behave as on a CPU without native bf16.
  if (const char* e = std::getenv("OVSEG_CPU_NO_NATIVE_BF16"); e && *e && std::string(e) != "0")
    f.avx512_bf16 = f.amx_bf16 = false;
  return f;
}

}  // namespace

bool CpuFeatures::native_bf16() const noexcept { return avx512_bf16 || amx_bf16; }

std::string CpuFeatures::summary() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (on) s += (s.empty() ? "" : " ") + std::string(name);
  };
  add(avx2, "AVX2+FMA");
  add(avx512f, "AVX-512F");
  add(avx512_bf16, "AVX512_BF16");
  add(amx_bf16, "AMX-BF16");
  if (s.empty()) s = "no AVX2";
  return s + (native_bf16() ? " (native bf16)" : " (no native bf16)");
}

CpuFeatures cpu_features() { return detect(); }

Precision resolve_precision(Precision requested, const std::string& device) {
  const bool cpu = check_device(device) < 0;
  if (requested == Precision::kAuto) {
    if (!cpu) return Precision::kFp16;
    return cpu_features().native_bf16() ? Precision::kBf16 : Precision::kFp32;
  }
  if (requested == Precision::kBf16 && cpu) {
    const CpuFeatures f = cpu_features();
    if (!f.native_bf16()) {
      // [QUIRK] Without AVX512_BF16 / AMX-BF16, LibTorch 1.13's CPU bf16 matmul falls back to a
      // scalar kernel: R101c + ViT-B/16 took > 330 s per image in bf16 against 29-34 s in fp32 on
      // an AVX2-only Zen 3 (killed; one core busy in a bf16 addmm), and its labels agreed less
      // with fp32 (98.4 % on the fixture, against > 99 % with native bf16).
      const std::string why = "precision bf16: this CPU has no native bfloat16 instructions (AVX512_BF16 or "
                              "AMX-BF16; it has " + f.summary() + "): bf16 runs here more than 10x slower "
                              "than fp32";
      const char* allow = std::getenv("OVSEG_ALLOW_SLOW_BF16");
      if (!(allow && *allow && std::string(allow) != "0"))
        throw Error(ErrorCode::kInvalidArgument, why + "; use fp32 or auto (or set OVSEG_ALLOW_SLOW_BF16=1 to run it anyway)");
      detail::log().warn("{} (running it anyway: OVSEG_ALLOW_SLOW_BF16 is set)", why);
    }
  }
  return requested;
}

}  // namespace ovseg
