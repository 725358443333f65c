#include "index/quantize.h"

#include <cmath>
#include <string>

#include "common/errors.h"

namespace lm {

void check_finite(const float* x, size_t n, size_t dim, const char* what) {
    for (size_t i = 0; i < n; ++i) {
        const float* row = x + i * dim;
        float acc = 0.0f;
        for (size_t j = 0; j < dim; ++j) acc += row[j] * 0.0f;  // NaN iff any value is NaN/inf
        if (acc == 0.0f) continue;
        for (size_t j = 0; j < dim; ++j) {
            if (!std::isfinite(row[j]))
                throw InvalidArgument(std::string(what) + "[" + std::to_string(i) + ", " +
                                      std::to_string(j) + "] is " + std::to_string(row[j]) +
                                      "; every value must be finite (clean the input, e.g. "
                                      "with numpy.nan_to_num, before passing it)");
        }
    }
}

void quantize_rows(const float* x, size_t n, size_t dim, int8_t* codes, size_t stride,
                   float* scales) {
    check_finite(x, n, dim, "vectors");
    // Adding and subtracting 1.5 * 2^23 rounds a float of magnitude < 2^22 to the nearest
    // integer, ties to even, in the default rounding mode; unlike rint() it vectorizes.
    const float magic = 12582912.0f;
    for (size_t i = 0; i < n; ++i) {
        const float* row = x + i * dim;
        int8_t* out = codes + i * stride;
        float max_abs = 0.0f;
        for (size_t j = 0; j < dim; ++j) max_abs = std::fmax(max_abs, std::fabs(row[j]));
        const float scale = max_abs / 127.0f;
        scales[i] = scale;
        if (scale == 0.0f) {
            for (size_t j = 0; j < stride; ++j) out[j] = 0;
            continue;
        }
        for (size_t j = 0; j < dim; ++j) {
            float q = (row[j] / scale + magic) - magic;
            q = std::fmin(127.0f, std::fmax(-127.0f, q));
            out[j] = static_cast<int8_t>(q);
        }
        for (size_t j = dim; j < stride; ++j) out[j] = 0;
    }
}

void normalize_rows(float* x, size_t n, size_t dim, const char* what) {
    for (size_t i = 0; i < n; ++i) {
        float* row = x + i * dim;
        double ss = 0.0;
        for (size_t j = 0; j < dim; ++j) ss += double(row[j]) * double(row[j]);
        if (ss == 0.0)
            throw InvalidArgument(std::string(what) + "[" + std::to_string(i) +
                                  "] is all zeros; the cosine metric needs a non-zero vector");
        const float inv = static_cast<float>(1.0 / std::sqrt(ss));
        for (size_t j = 0; j < dim; ++j) row[j] *= inv;
    }
}

}  // namespace lm
