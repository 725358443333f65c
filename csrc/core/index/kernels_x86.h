// Shared helpers for the x86 kernel files. Included *before* a file's target pragma; it
// only declares what has no ISA of its own.
#pragma once

#include <cstdint>
#include <cstring>

namespace lm {

// Four consecutive codes as one 32-bit word, for a broadcast to every lane.
static inline int32_t load_group(const uint8_t* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

}  // namespace lm
