// CRC32C (Castagnoli), with the SSE4.2 instruction where the CPU has it and a table
// otherwise. Used for the checksums of every on-disk format.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lm {

// Extends `crc` (0 for a fresh checksum) over n bytes.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

// The table implementation, exposed so that tests can check the hardware one against it.
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);

}  // namespace lm
