// Little-endian field access for the on-disk formats (the hosts we build for are
// little-endian; the static check below stops a big-endian build instead of corrupting).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the on-disk formats are little-endian; a big-endian port needs byte swaps here"
#endif

namespace lm {

template <class T>
inline T load_le(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <class T>
inline void store_le(uint8_t* p, T v) {
    std::memcpy(p, &v, sizeof v);
}

inline size_t pad8(size_t n) { return (n + 7) & ~size_t{7}; }

}  // namespace lm
