#include "common/cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define LM_X86 1
#elif defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#define LM_ARM64_LINUX 1
#endif

#include <cstdint>

namespace lm {
namespace {

#if defined(LM_X86)
uint64_t read_xcr0() {
    uint32_t eax = 0, edx = 0;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
    CpuFeatures f;
#if defined(LM_X86)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = (c >> 27) & 1;
    const bool fma = (c >> 12) & 1;
    f.sse42 = (c >> 20) & 1;
    if (!osxsave) return f;
    // The CPU having AVX is not enough: the OS must save the wider registers on a
    // context switch, which XCR0 tells.
    const uint64_t xcr0 = read_xcr0();
    const bool os_ymm = (xcr0 & 0x6) == 0x6;
    const bool os_zmm = (xcr0 & 0xE6) == 0xE6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    const bool avx2 = (b >> 5) & 1;
    const bool avx512f = (b >> 16) & 1;
    const bool avx512bw = (b >> 30) & 1;
    const bool avx512vl = (b >> 31) & 1;
    const bool avx512vnni = (c >> 11) & 1;
    f.avx2 = avx2 && fma && os_ymm;
    f.avx512_vnni = f.avx2 && avx512f && avx512bw && avx512vl && avx512vnni && os_zmm;
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx_vnni = f.avx2 && ((a1 >> 4) & 1);
#elif defined(LM_ARM64_LINUX)
    const unsigned long hw = getauxval(AT_HWCAP);
#ifdef HWCAP_ASIMDDP
    f.neon_dotprod = (hw & HWCAP_ASIMDDP) != 0;
#endif
#endif
    return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

std::string cpu_feature_string() {
    const CpuFeatures& f = cpu_features();
    std::string s;
    auto add = [&s](bool on, const char* name) {
        if (!on) return;
        if (!s.empty()) s += ",";
        s += name;
    };
    add(f.sse42, "sse4.2");
    add(f.avx2, "avx2");
    add(f.avx_vnni, "avx_vnni");
    add(f.avx512_vnni, "avx512_vnni");
    add(f.neon_dotprod, "neon_dotprod");
    return s;
}

}  // namespace lm
