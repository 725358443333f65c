// INT8 scoring kernels and their run-time dispatch.
//
// Codes live in a *blocked* layout so that a kernel never needs a horizontal sum: rows are
// grouped 16 to a block, and inside a block the codes are interleaved 4 dimensions at a
// time: [row0 d0..3][row1 d0..3]...[row15 d0..3][row0 d4..7]... A query's 4 codes,
// broadcast to every lane, meet 16 rows at once in one 64-byte load, and each 32-bit lane
// accumulates one row's dot product (VPDPBUSD / SDOT / PMADDUBSW+PMADDWD).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lm {

constexpr size_t kBlockRows = 16;  // rows per block
constexpr size_t kGroup = 4;       // dimensions interleaved together
constexpr size_t kMaxDim = 65536;  // keeps every int32 accumulator exact

// Bytes per row in the blocked layout: dim rounded up to the group (padding codes are 0).
inline size_t code_stride(size_t dim) { return (dim + kGroup - 1) / kGroup * kGroup; }

// Offset of (row, first dim of group g) inside a blocked buffer.
inline size_t block_offset(size_t row, size_t stride) {
    return (row / kBlockRows) * kBlockRows * stride + (row % kBlockRows) * kGroup;
}

struct ScoreArgs {
    const uint8_t* queries;  // nq prepared queries, prepared_stride bytes apart
    size_t prepared_stride;
    const float* qscales;  // nq query scales
    size_t nq;
    const int8_t* blocks;    // nblocks * 16 * stride bytes, blocked layout
    const int32_t* rowsums;  // nblocks * 16 sums of each row's codes
    const float* rowscales;  // nblocks * 16 row scales
    size_t nblocks;
    size_t stride;  // code bytes per row (multiple of 4)
    float* out;     // out[q * out_stride + row]: float(dot) * (qscale * rowscale)
    size_t out_stride;
};

struct Kernel {
    const char* name;        // its instruction set's, on common/kernel_choice.h's ladder
    size_t prepared_factor;  // prepared query bytes per code byte
    void (*prepare)(const int8_t* codes, size_t stride, uint8_t* out);
    void (*score)(const ScoreArgs& args);
};

// Query preparations shared by several kernels (plain C++, no ISA of their own).
void prepare_copy(const int8_t* codes, size_t stride, uint8_t* out);    // codes as they are
void prepare_offset(const int8_t* codes, size_t stride, uint8_t* out);  // codes + 128, as u8

// Each returns nullptr when the kernel was not compiled into this build.
const Kernel* kernel_scalar();
const Kernel* kernel_avx2();
const Kernel* kernel_avx_vnni();
const Kernel* kernel_avx512_vnni();
const Kernel* kernel_neon();

// Kernels compiled in, whether or not this CPU runs them, lowest first.
std::vector<const Kernel*> compiled_kernels();
// Kernels this CPU can run, lowest first (scalar is always there).
std::vector<const Kernel*> available_kernels();
// A kernel by name among the available ones, or nullptr.
const Kernel* find_kernel(const std::string& name);
// The kernel chosen once at start-up (common/kernel_choice.h): the best available, at most
// the one LOCALMEM_KERNEL names.
const Kernel& active_kernel();

}  // namespace lm
