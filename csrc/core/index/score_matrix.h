// Whole-matrix scoring through one named kernel: the seam where tests compare every SIMD
// kernel with the scalar one, and where doctor's self-check runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "index/kernels.h"

namespace lm {

// Copies n row-major rows of `dim` codes into the blocked layout (blocks_out must hold
// ceil(n/16) * 16 * code_stride(dim) bytes; padding is zeroed). Returns each row's code sum
// in sums_out (padded to whole blocks with 0).
void pack_blocked(const int8_t* codes, size_t n, size_t dim, int8_t* blocks_out, int32_t* sums_out);

// scores[i * n + j] = float(dot(q_i, d_j)) * (qscale_i * dscale_j) computed by `kernel`.
std::vector<float> score_matrix(const Kernel& kernel, const int8_t* queries, const float* qscales,
                                size_t nq, const int8_t* codes, const float* scales, size_t n,
                                size_t dim);

// Best-of-`repeats` single-thread read bandwidth over `bytes` of `data`, in bytes/second.
double measure_read_bandwidth(const uint8_t* data, size_t bytes, size_t repeats);

}  // namespace lm
