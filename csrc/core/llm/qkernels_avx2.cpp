// AVX2 + FMA + F16C kernels. PMADDUBSW multiplies unsigned by signed bytes: 4-bit weights
// are unsigned already (Q4_1; Q4_0 after its bias is taken out through the activations'
// sum), and for signed Q8_0 weights the sign moves onto the activations (PSIGNB), as in
// llama.cpp. Pairs of products stay within int16 (15 * 127 * 2 and 127 * 127 * 2).
#include "qkernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstring>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace lm {
namespace {

inline float half(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return _cvtsh_ss(v);
}

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15) then high (16..31).
inline __m256i unpack_nibbles(const uint8_t* p) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

inline __m256 udot_ps(__m256i u, __m256i s) {
    const __m256i p16 = _mm256_maddubs_epi16(u, s);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

// Signed weights q . signed activations y: the sign moves onto y (PSIGNB).
inline __m256 sdot_ps(__m256i q, __m256i y) {
    return udot_ps(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q));
}

float dot_q4_0(const uint8_t* w, const Q8Block* x, size_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; ++b, w += 18) {
        // q - 8 in [-8, 7], signed: the sign moves onto the activations as for Q8_0.
        const __m256i q = _mm256_sub_epi8(unpack_nibbles(w + 2), _mm256_set1_epi8(8));
        const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(w) * x[b].d), sdot_ps(q, y), acc);
    }
    return hsum(acc);
}

// One accumulator, blocks in order, the offsets summed apart: llama.cpp's order of
// operations, so the two engines round alike (see Q8Block).
float dot_q4_1(const uint8_t* w, const Q8Block* x, size_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float offs = 0;
    for (size_t b = 0; b < nb; ++b, w += 20) {
        const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(w) * x[b].d), udot_ps(unpack_nibbles(w + 4), y),
                              acc);
        offs += half(w + 2) * x[b].s;
    }
    return hsum(acc) + offs;
}

float dot_q8_0(const uint8_t* w, const Q8Block* x, size_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; ++b, w += 34) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 2));
        const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(w) * x[b].d), sdot_ps(q, y), acc);
    }
    return hsum(acc);
}

float dot_f16(const uint16_t* w, const float* x, size_t n) {
    __m256 acc = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
        acc = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), acc);
    }
    float s = hsum(acc);
    for (; i < n; ++i) s += _cvtsh_ss(w[i]) * x[i];
    return s;
}

float dot_f32(const float* a, const float* b, size_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float s = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

void axpy_f32(float a, const float* x, float* y, size_t n) {
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
}

void axpy_f16(float a, const uint16_t* x, float* y, size_t n) {
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, v, _mm256_loadu_ps(y + i)));
    }
    for (; i < n; ++i) y[i] += a * _cvtsh_ss(x[i]);
}

void to_f16(const float* x, uint16_t* out, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; ++i) out[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

void round_f16(float* x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i),
                                                                _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; ++i) x[i] = _cvtsh_ss(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
}

void axpy_q8_0(float a, const uint8_t* w, float* y, size_t n) {
    for (size_t b = 0; b < n / kQBlock; ++b, w += 34, y += kQBlock) {
        const __m256 ad = _mm256_set1_ps(a * half(w));
        for (size_t k = 0; k < kQBlock; k += 8) {
            const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + 2 + k));
            const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
            _mm256_storeu_ps(y + k, _mm256_fmadd_ps(ad, q, _mm256_loadu_ps(y + k)));
        }
    }
}

const QKernels kAvx2{"avx2",   dot_q4_0, dot_q4_1, dot_q8_0,  dot_f16,  dot_f32,
                     axpy_f32, axpy_f16, to_f16,   round_f16, axpy_q8_0};

}  // namespace

const QKernels* qkernels_avx2() { return &kAvx2; }

}  // namespace lm

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else  // not x86-64

namespace lm {
const QKernels* qkernels_avx2() { return nullptr; }
}  // namespace lm

#endif
