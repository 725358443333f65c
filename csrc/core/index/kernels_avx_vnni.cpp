// AVX-VNNI: the VEX-encoded VPDPBUSD on 256-bit registers (CPUs with VNNI but without
// AVX-512, such as Alder Lake). Same offset trick as the AVX-512 kernel; a block of 16
// rows is two registers of 8 rows.
#include "index/kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <algorithm>

#include "index/kernels_x86.h"
#include "index/tile_driver.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,avxvnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,avxvnni")
#endif

namespace lm {
namespace {

struct AvxVnniTile {
    // 4 queries x 1 block (2 halves) = 8 of the 16 YMM registers as accumulators.
    static constexpr int kMaxQ = 4;
    static constexpr int kMaxB = 1;
    template <int QT, int BT>
    static void run(const uint8_t* q, size_t qstride, const float* qs, const int8_t* blk,
                    const int32_t* sums, const float* rs, size_t stride, float* out,
                    size_t ostride) {
        constexpr int H = 2 * BT;  // 8-row halves
        __m256i acc[QT][H];
        for (int i = 0; i < QT; ++i)
            for (int h = 0; h < H; ++h) acc[i][h] = _mm256_setzero_si256();
        const size_t bytes_per_block = kBlockRows * stride;
        for (size_t g = 0; g < stride / kGroup; ++g) {
            __m256i d[H];
            for (int h = 0; h < H; ++h)
                d[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                    blk + (h / 2) * bytes_per_block + g * 64 + (h % 2) * 32));
            for (int i = 0; i < QT; ++i) {
                const __m256i qv = _mm256_set1_epi32(load_group(q + i * qstride + g * kGroup));
                for (int h = 0; h < H; ++h)
                    acc[i][h] = _mm256_dpbusd_avx_epi32(acc[i][h], qv, d[h]);
            }
        }
        for (int h = 0; h < H; ++h) {
            const __m256i excess = _mm256_slli_epi32(
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + h * 8)), 7);
            const __m256 row_scale = _mm256_loadu_ps(rs + h * 8);
            for (int i = 0; i < QT; ++i) {
                const __m256i dot = _mm256_sub_epi32(acc[i][h], excess);
                const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(qs[i]), row_scale);
                _mm256_storeu_ps(out + i * ostride + h * 8,
                                 _mm256_mul_ps(_mm256_cvtepi32_ps(dot), scale));
            }
        }
    }
};

}  // namespace
}  // namespace lm

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace lm {
namespace {
void score_avx_vnni(const ScoreArgs& a) { drive_tiles<AvxVnniTile>(a); }
const Kernel kAvxVnni{"avx_vnni", 1, prepare_offset, score_avx_vnni};
}  // namespace
const Kernel* kernel_avx_vnni() { return &kAvxVnni; }
}  // namespace lm

#else
namespace lm {
const Kernel* kernel_avx_vnni() { return nullptr; }
}  // namespace lm
#endif
