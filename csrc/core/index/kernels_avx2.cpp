// AVX2 without VNNI. PMADDUBSW multiplies unsigned by signed bytes, so the query's sign is
// moved onto the row codes (PSIGNB) and its magnitude is the unsigned side:
// |q| * (d * sign(q)) = q * d. Codes stay in [-127, 127], so a pair of products is at most
// 2 * 127 * 127 = 32258 and PMADDUBSW's int16 saturation never triggers; PMADDWD then
// widens the pairs to int32.
#include "index/kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>

#include "index/kernels_x86.h"
#include "index/tile_driver.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

namespace lm {
namespace {

// Prepared query: the codes, then their magnitudes.
void prepare_sign_abs(const int8_t* codes, size_t stride, uint8_t* out) {
    for (size_t i = 0; i < stride; ++i) {
        out[i] = static_cast<uint8_t>(codes[i]);
        out[stride + i] = static_cast<uint8_t>(std::abs(int(codes[i])));
    }
}

struct Avx2Tile {
    static constexpr int kMaxQ = 4;
    static constexpr int kMaxB = 1;
    template <int QT, int BT>
    static void run(const uint8_t* q, size_t qstride, const float* qs, const int8_t* blk,
                    const int32_t*, const float* rs, size_t stride, float* out, size_t ostride) {
        constexpr int H = 2 * BT;
        const __m256i ones = _mm256_set1_epi16(1);
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
                const uint8_t* qi = q + i * qstride + g * kGroup;
                const __m256i sign = _mm256_set1_epi32(load_group(qi));
                const __m256i mag = _mm256_set1_epi32(load_group(qi + stride));
                for (int h = 0; h < H; ++h) {
                    const __m256i pairs = _mm256_maddubs_epi16(mag, _mm256_sign_epi8(d[h], sign));
                    acc[i][h] = _mm256_add_epi32(acc[i][h], _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        for (int h = 0; h < H; ++h) {
            const __m256 row_scale = _mm256_loadu_ps(rs + h * 8);
            for (int i = 0; i < QT; ++i) {
                const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(qs[i]), row_scale);
                _mm256_storeu_ps(out + i * ostride + h * 8,
                                 _mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][h]), scale));
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
void score_avx2(const ScoreArgs& a) { drive_tiles<Avx2Tile>(a); }
const Kernel kAvx2{"avx2", 2, prepare_sign_abs, score_avx2};
}  // namespace
const Kernel* kernel_avx2() { return &kAvx2; }
}  // namespace lm

#else
namespace lm {
const Kernel* kernel_avx2() { return nullptr; }
}  // namespace lm
#endif
