// CPU feature detection used by run-time kernel dispatch.
#pragma once

#include <string>

namespace lm {

struct CpuFeatures {
    bool avx2 = false;          // AVX2 + FMA, and the OS saves YMM state
    bool avx_vnni = false;      // VEX-encoded VPDPBUSD on YMM (Alder Lake, Zen 5, ...)
    bool avx512_vnni = false;   // AVX-512 F/BW/VL + VNNI, and the OS saves ZMM state
    bool sse42 = false;         // CRC32 instruction
    bool neon_dotprod = false;  // AArch64 SDOT
};

const CpuFeatures& cpu_features();

// Comma-separated names of the detected features, for build_info().
std::string cpu_feature_string();

}  // namespace lm
