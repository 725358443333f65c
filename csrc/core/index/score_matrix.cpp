#include "index/score_matrix.h"

#include <chrono>
#include <cstring>

namespace lm {

void pack_blocked(const int8_t* codes, size_t n, size_t dim, int8_t* blocks_out,
                  int32_t* sums_out) {
    const size_t stride = code_stride(dim);
    const size_t padded = (n + kBlockRows - 1) / kBlockRows * kBlockRows;
    std::memset(blocks_out, 0, padded * stride);
    for (size_t r = 0; r < padded; ++r) sums_out[r] = 0;
    for (size_t r = 0; r < n; ++r) {
        int8_t* base = blocks_out + block_offset(r, stride);
        int32_t sum = 0;
        for (size_t j = 0; j < dim; ++j) {
            base[(j / kGroup) * kBlockRows * kGroup + j % kGroup] = codes[r * dim + j];
            sum += codes[r * dim + j];
        }
        sums_out[r] = sum;
    }
}

std::vector<float> score_matrix(const Kernel& kernel, const int8_t* queries, const float* qscales,
                                size_t nq, const int8_t* codes, const float* scales, size_t n,
                                size_t dim) {
    const size_t stride = code_stride(dim);
    const size_t padded = (n + kBlockRows - 1) / kBlockRows * kBlockRows;
    std::vector<int8_t> blocks(padded * stride);
    std::vector<int32_t> sums(padded);
    pack_blocked(codes, n, dim, blocks.data(), sums.data());
    std::vector<float> padded_scales(padded, 0.0f);
    if (n > 0) std::memcpy(padded_scales.data(), scales, n * sizeof(float));

    const size_t pstride = kernel.prepared_factor * stride;
    std::vector<int8_t> qrow(stride, 0);
    std::vector<uint8_t> prepared(nq * pstride);
    for (size_t q = 0; q < nq; ++q) {
        std::memcpy(qrow.data(), queries + q * dim, dim);
        kernel.prepare(qrow.data(), stride, prepared.data() + q * pstride);
    }
    std::vector<float> out(nq * padded);
    if (nq > 0 && padded > 0) {
        const ScoreArgs a{prepared.data(),
                          pstride,
                          qscales,
                          nq,
                          blocks.data(),
                          sums.data(),
                          padded_scales.data(),
                          padded / kBlockRows,
                          stride,
                          out.data(),
                          padded};
        kernel.score(a);
    }
    std::vector<float> result(nq * n);
    if (n == 0) return result;
    for (size_t q = 0; q < nq; ++q)
        std::memcpy(result.data() + q * n, out.data() + q * padded, n * sizeof(float));
    return result;
}

double measure_read_bandwidth(const uint8_t* data, size_t bytes, size_t repeats) {
    const size_t words = bytes / 8;
    double best = 0.0;
    volatile uint64_t sink = 0;
    for (size_t rep = 0; rep < repeats; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        // Eight independent sums keep enough loads in flight to saturate one core's share
        // of the memory bus; the compiler vectorizes them.
        uint64_t acc[8] = {};
        size_t i = 0;
        for (; i + 8 <= words; i += 8)
            for (size_t j = 0; j < 8; ++j) {
                uint64_t v;
                std::memcpy(&v, data + (i + j) * 8, 8);
                acc[j] += v;
            }
        uint64_t total = 0;
        for (uint64_t a : acc) total += a;
        sink = sink + total;
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (s > 0) best = std::max(best, double(i * 8) / s);
    }
    return best;
}

}  // namespace lm
