// Symmetric per-vector INT8 quantization: scale = max|x| / 127, q = round(x / scale).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lm {

// Quantizes n rows of `dim` floats (row-major, contiguous) into codes[i * stride + j]
// (j < dim; codes past dim up to stride are set to 0) and scales[i]. Rounds half to even,
// like numpy.rint. A zero row gets scale 0 and all-zero codes. Throws InvalidArgument
// naming the row and column of the first NaN or infinity; nothing is written then.
void quantize_rows(const float* x, size_t n, size_t dim, int8_t* codes, size_t stride,
                   float* scales);

// Scales each row to unit L2 norm in place (for the cosine metric). Throws InvalidArgument
// for a row whose norm is zero, since it has no direction. `what` names the input
// ("vectors", "queries") in messages.
void normalize_rows(float* x, size_t n, size_t dim, const char* what);

// Throws InvalidArgument naming the first non-finite value. `what` names the input.
void check_finite(const float* x, size_t n, size_t dim, const char* what);

}  // namespace lm
