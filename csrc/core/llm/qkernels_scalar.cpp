// Reference kernels: plain C++, the definition every SIMD set is tested against.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/errors.h"
#include "common/kernel_choice.h"
#include "llm/qkernels.h"

namespace lm {

float f16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) mant <<= 1, --exp;
            bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7FFFFFFFu;
    if (x >= 0x7F800000u) return uint16_t(sign | 0x7C00u | (x > 0x7F800000u ? 0x200u : 0));
    if (x >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // rounds to infinity
    if (x < 0x38800000u) {                                  // subnormal or zero in half precision
        if (x < 0x33000000u) return uint16_t(sign);
        const uint32_t e = x >> 23, m = (x & 0x7FFFFFu) | 0x800000u;
        const uint32_t shift = 126 - e;  // 14..24
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return uint16_t(sign | r);
    }
    uint32_t r = ((x >> 13) - ((127 - 15) << 10));
    const uint32_t rem = x & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // round to nearest even
    return uint16_t(sign | r);
}

static uint16_t load_u16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

static float via_f16(float x) { return f16_to_f32(f32_to_f16(x)); }

void quantize_q8(const float* x, size_t n, Q8Block* out) {
    for (size_t b = 0; b < n / kQBlock; ++b, x += kQBlock) {
        float amax = 0;
        for (size_t i = 0; i < kQBlock; ++i) amax = std::fmax(amax, std::fabs(x[i]));
        const float d = amax / 127.0f, id = amax != 0 ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (size_t i = 0; i < kQBlock; ++i) {
            const int q = int(std::nearbyint(x[i] * id));
            out[b].qs[i] = int8_t(q);
            sum += q;
        }
        out[b].d = via_f16(d);
        out[b].s = via_f16(d * float(sum));
    }
}

void quantize_row_q8_0(const float* x, size_t n, uint8_t* dst) {
    for (size_t b = 0; b < n / kQBlock; ++b, x += kQBlock, dst += 34) {
        float amax = 0;
        for (size_t i = 0; i < kQBlock; ++i) amax = std::fmax(amax, std::fabs(x[i]));
        const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        const uint16_t dh = f32_to_f16(d);
        std::memcpy(dst, &dh, 2);
        for (size_t i = 0; i < kQBlock; ++i)
            dst[2 + i] = uint8_t(int8_t(std::nearbyint(x[i] * id)));
    }
}

void dequantize_row(uint32_t type, const uint8_t* src, float* dst, size_t n) {
    switch (type) {
        case 0:
            std::memcpy(dst, src, n * 4);
            return;
        case 1:
            for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(src + 2 * i));
            return;
        case 2:  // Q4_0: d, 16 bytes; element j = low nibble of byte j, j+16 = high nibble
            for (size_t b = 0; b < n / kQBlock; ++b, src += 18, dst += kQBlock) {
                const float d = f16_to_f32(load_u16(src));
                for (size_t j = 0; j < 16; ++j) {
                    dst[j] = d * float(int(src[2 + j] & 0x0F) - 8);
                    dst[j + 16] = d * float(int(src[2 + j] >> 4) - 8);
                }
            }
            return;
        case 3:  // Q4_1: d, m, 16 bytes; x = d * q + m
            for (size_t b = 0; b < n / kQBlock; ++b, src += 20, dst += kQBlock) {
                const float d = f16_to_f32(load_u16(src)), m = f16_to_f32(load_u16(src + 2));
                for (size_t j = 0; j < 16; ++j) {
                    dst[j] = d * float(src[4 + j] & 0x0F) + m;
                    dst[j + 16] = d * float(src[4 + j] >> 4) + m;
                }
            }
            return;
        case 8:  // Q8_0: d, 32 signed bytes
            for (size_t b = 0; b < n / kQBlock; ++b, src += 34, dst += kQBlock) {
                const float d = f16_to_f32(load_u16(src));
                for (size_t j = 0; j < kQBlock; ++j) dst[j] = d * float(int8_t(src[2 + j]));
            }
            return;
    }
    throw InvalidArgument("dequantize_row: unsupported ggml type " + std::to_string(type));
}

namespace {

float dot_q4_0(const uint8_t* w, const Q8Block* x, size_t nb) {
    float sum = 0;
    for (size_t b = 0; b < nb; ++b, w += 18) {
        int acc = 0;
        for (size_t j = 0; j < 16; ++j)
            acc += (int(w[2 + j] & 0x0F) - 8) * x[b].qs[j] +
                   (int(w[2 + j] >> 4) - 8) * x[b].qs[j + 16];
        sum += f16_to_f32(load_u16(w)) * x[b].d * float(acc);
    }
    return sum;
}

float dot_q4_1(const uint8_t* w, const Q8Block* x, size_t nb) {
    float sum = 0;
    for (size_t b = 0; b < nb; ++b, w += 20) {
        int acc = 0;
        for (size_t j = 0; j < 16; ++j)
            acc += int(w[4 + j] & 0x0F) * x[b].qs[j] + int(w[4 + j] >> 4) * x[b].qs[j + 16];
        sum += f16_to_f32(load_u16(w)) * x[b].d * float(acc) + f16_to_f32(load_u16(w + 2)) * x[b].s;
    }
    return sum;
}

float dot_q8_0(const uint8_t* w, const Q8Block* x, size_t nb) {
    float sum = 0;
    for (size_t b = 0; b < nb; ++b, w += 34) {
        int acc = 0;
        for (size_t j = 0; j < kQBlock; ++j) acc += int(int8_t(w[2 + j])) * x[b].qs[j];
        sum += f16_to_f32(load_u16(w)) * x[b].d * float(acc);
    }
    return sum;
}

float dot_f16(const uint16_t* w, const float* x, size_t n) {
    float sum = 0;
    for (size_t i = 0; i < n; ++i) sum += f16_to_f32(w[i]) * x[i];
    return sum;
}

float dot_f32(const float* a, const float* b, size_t n) {
    float sum = 0;
    for (size_t i = 0; i < n; ++i) sum += a[i] * b[i];
    return sum;
}

void axpy_f32(float a, const float* x, float* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void axpy_f16(float a, const uint16_t* x, float* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] += a * f16_to_f32(x[i]);
}

void to_f16(const float* x, uint16_t* out, size_t n) {
    for (size_t i = 0; i < n; ++i) out[i] = f32_to_f16(x[i]);
}

void round_f16(float* x, size_t n) {
    for (size_t i = 0; i < n; ++i) x[i] = via_f16(x[i]);
}

void axpy_q8_0(float a, const uint8_t* w, float* y, size_t n) {
    for (size_t b = 0; b < n / kQBlock; ++b, w += 34, y += kQBlock) {
        const float ad = a * f16_to_f32(load_u16(w));
        for (size_t j = 0; j < kQBlock; ++j) y[j] += ad * float(int8_t(w[2 + j]));
    }
}

void attend_f16(const uint16_t* k, const uint16_t* v, size_t stride, const float* q, size_t hd,
                size_t npos, float scale, float* s, float* acc, float* out) {
    float lanes[16];
    float mx = -INFINITY;
    for (size_t j = 0; j < npos; ++j) {
        std::fill(lanes, lanes + 16, 0.0f);
        const uint16_t* kj = k + j * stride;
        for (size_t l = 0; l < hd; l += 16)
            for (size_t i = 0; i < 16; ++i)
                lanes[i] = std::fma(f16_to_f32(kj[l + i]), q[l + i], lanes[i]);
        s[j] = reduce16(lanes) * scale;
        mx = std::max(mx, s[j]);
    }
    double sum = 0;
    for (size_t c = 0; c < npos; c += 16)
        sum += double(exp_chunk16(s + c, std::min<size_t>(16, npos - c), mx));
    const float inv = float(1.0 / sum);
    for (size_t j = 0; j < npos; ++j) s[j] = via_f16(s[j] * inv);
    std::fill(acc, acc + 16 * hd, 0.0f);
    for (size_t j = 0; j < npos; ++j) {
        float* a = acc + (j % 16) * hd;
        const uint16_t* vj = v + j * stride;
        for (size_t d = 0; d < hd; ++d) a[d] = std::fma(f16_to_f32(vj[d]), s[j], a[d]);
    }
    for (size_t d = 0; d < hd; ++d) {
        for (size_t i = 0; i < 16; ++i) lanes[i] = acc[i * hd + d];
        out[d] = reduce16(lanes);
    }
}

void silu_f32(const float* x, float* out, size_t n) {
    for (size_t i = 0; i < n; ++i) out[i] = silu(x[i]);
}

const QKernels kScalar{"scalar", dot_q4_0, dot_q4_1,  dot_q8_0,  dot_f16,    dot_f32, axpy_f32,
                       axpy_f16, to_f16,   round_f16, axpy_q8_0, attend_f16, silu_f32};

}  // namespace

const QKernels& qkernels_scalar() { return kScalar; }

std::vector<const QKernels*> qkernels_available() {
    std::vector<const QKernels*> out{&kScalar};
    if (const QKernels* k = qkernels_avx2(); k != nullptr && cpu_runs(k->name)) out.push_back(k);
    return out;
}

const QKernels& qkernels_active() {
    static const QKernels& chosen = choose_kernel(qkernels_available());
    return chosen;
}

}  // namespace lm
