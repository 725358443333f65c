// The reference kernel: plain C++, always compiled, the one every SIMD kernel must equal.
#include <algorithm>
#include <cstring>

#include "index/kernels.h"
#include "index/tile_driver.h"

namespace lm {
namespace {

struct ScalarTile {
    static constexpr int kMaxQ = 1;
    static constexpr int kMaxB = 1;
    template <int QT, int BT>
    static void run(const uint8_t* q, size_t, const float* qs, const int8_t* blk, const int32_t*,
                    const float* rs, size_t stride, float* out, size_t) {
        const int8_t* query = reinterpret_cast<const int8_t*>(q);
        int32_t acc[kBlockRows] = {};
        for (size_t g = 0; g < stride / kGroup; ++g) {
            const int8_t* grp = blk + g * kBlockRows * kGroup;
            for (size_t r = 0; r < kBlockRows; ++r)
                for (size_t j = 0; j < kGroup; ++j)
                    acc[r] += int32_t(query[g * kGroup + j]) * int32_t(grp[r * kGroup + j]);
        }
        for (size_t r = 0; r < kBlockRows; ++r) out[r] = float(acc[r]) * (qs[0] * rs[r]);
    }
};

void score_scalar(const ScoreArgs& a) { drive_tiles<ScalarTile>(a); }

const Kernel kScalar{"scalar", 1, prepare_copy, score_scalar};

}  // namespace

const Kernel* kernel_scalar() { return &kScalar; }

}  // namespace lm
