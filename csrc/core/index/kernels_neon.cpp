// AArch64 NEON with the dot-product extension: SDOT multiplies signed bytes by signed
// bytes, 4 at a time into each 32-bit lane, so no offset or sign trick is needed. A block
// of 16 rows is four 128-bit registers of 4 rows.
#include "index/kernels.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "index/tile_driver.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif

namespace lm {
namespace {

struct NeonTile {
    // 4 queries x 1 block (4 quarters) = 16 of the 32 vector registers as accumulators.
    static constexpr int kMaxQ = 4;
    static constexpr int kMaxB = 1;
    template <int QT, int BT>
    static void run(const uint8_t* q, size_t qstride, const float* qs, const int8_t* blk,
                    const int32_t*, const float* rs, size_t stride, float* out, size_t ostride) {
        constexpr int P = 4 * BT;  // 4-row quarters
        int32x4_t acc[QT][P];
        for (int i = 0; i < QT; ++i)
            for (int p = 0; p < P; ++p) acc[i][p] = vdupq_n_s32(0);
        const size_t bytes_per_block = kBlockRows * stride;
        for (size_t g = 0; g < stride / kGroup; ++g) {
            int8x16_t d[P];
            for (int p = 0; p < P; ++p)
                d[p] = vld1q_s8(blk + (p / 4) * bytes_per_block + g * 64 + (p % 4) * 16);
            for (int i = 0; i < QT; ++i) {
                int32_t group;
                std::memcpy(&group, q + i * qstride + g * kGroup, sizeof group);
                const int8x16_t qv = vreinterpretq_s8_s32(vdupq_n_s32(group));
                for (int p = 0; p < P; ++p) acc[i][p] = vdotq_s32(acc[i][p], qv, d[p]);
            }
        }
        for (int p = 0; p < P; ++p) {
            const float32x4_t row_scale = vld1q_f32(rs + p * 4);
            for (int i = 0; i < QT; ++i) {
                const float32x4_t scale = vmulq_f32(vdupq_n_f32(qs[i]), row_scale);
                vst1q_f32(out + i * ostride + p * 4, vmulq_f32(vcvtq_f32_s32(acc[i][p]), scale));
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
void score_neon(const ScoreArgs& a) { drive_tiles<NeonTile>(a); }
const Kernel kNeon{"neon_dotprod", 1, prepare_copy, score_neon};
}  // namespace
const Kernel* kernel_neon() { return &kNeon; }
}  // namespace lm

#else
namespace lm {
const Kernel* kernel_neon() { return nullptr; }
}  // namespace lm
#endif
