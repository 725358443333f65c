// AVX-512 VNNI: one VPDPBUSD multiplies 64 code pairs and adds them into 16 rows' sums.
// VPDPBUSD wants an unsigned operand, so the query is shifted to u8 (q + 128) and the
// excess 128 * sum(row codes) is subtracted at the end; both sides stay exact integers.
#include "index/kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <algorithm>

#include "index/kernels_x86.h"
#include "index/tile_driver.h"

#if defined(__clang__)
#pragma clang attribute push( \
    __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")
// GCC 12 warns about the deliberately undefined source of _mm512_undefined_* inside its own
// intrinsics once they are inlined here; the values are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace lm {
namespace {

struct Avx512VnniTile {
    // 4 queries x 4 blocks = 16 accumulators of 16 rows: 16 VPDPBUSD per 8 loads.
    static constexpr int kMaxQ = 4;
    static constexpr int kMaxB = 4;
    template <int QT, int BT>
    static void run(const uint8_t* q, size_t qstride, const float* qs, const int8_t* blk,
                    const int32_t* sums, const float* rs, size_t stride, float* out,
                    size_t ostride) {
        __m512i acc[QT][BT];
        for (int i = 0; i < QT; ++i)
            for (int j = 0; j < BT; ++j) acc[i][j] = _mm512_setzero_si512();
        const size_t bytes_per_block = kBlockRows * stride;
        const size_t groups = stride / kGroup;
        for (size_t g = 0; g < groups; ++g) {
            __m512i d[BT];
            for (int j = 0; j < BT; ++j)
                d[j] = _mm512_loadu_si512(blk + j * bytes_per_block + g * 64);
            for (int i = 0; i < QT; ++i) {
                const __m512i qv = _mm512_set1_epi32(load_group(q + i * qstride + g * kGroup));
                for (int j = 0; j < BT; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], qv, d[j]);
            }
        }
        for (int j = 0; j < BT; ++j) {
            const __m512i excess = _mm512_slli_epi32(_mm512_loadu_si512(sums + j * 16), 7);
            const __m512 row_scale = _mm512_loadu_ps(rs + j * 16);
            for (int i = 0; i < QT; ++i) {
                const __m512i dot = _mm512_sub_epi32(acc[i][j], excess);
                const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(qs[i]), row_scale);
                _mm512_storeu_ps(out + i * ostride + j * 16,
                                 _mm512_mul_ps(_mm512_cvtepi32_ps(dot), scale));
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
void score_avx512_vnni(const ScoreArgs& a) { drive_tiles<Avx512VnniTile>(a); }
const Kernel kAvx512Vnni{"avx512_vnni", 1, prepare_offset, score_avx512_vnni};
}  // namespace
const Kernel* kernel_avx512_vnni() { return &kAvx512Vnni; }
}  // namespace lm

#else
namespace lm {
const Kernel* kernel_avx512_vnni() { return nullptr; }
}  // namespace lm
#endif
