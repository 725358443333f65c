// AVX2 + FMA + F16C kernels. PMADDUBSW multiplies unsigned by signed bytes: 4-bit weights
// are unsigned already (Q4_1; Q4_0 after its bias is taken out through the activations'
// sum), and for signed Q8_0 weights the sign moves onto the activations (PSIGNB), as in
// llama.cpp. Pairs of products stay within int16 (15 * 127 * 2 and 127 * 127 * 2).
#include "llm/qkernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <algorithm>
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

// expf_ggml on 8 lanes. ggml scales by 2^n with VSCALEFPS; here 2^n is built from its bits,
// exact while it is a normal float (|n| <= 126), and the rare other lanes take expf_ggml.
inline __m256 expf8_ggml(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 far = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), n),
                                     _mm256_set1_ps(126.0f), _CMP_NLE_UQ);
    if (_mm256_movemask_ps(far)) {
        alignas(32) float v[8];
        _mm256_store_ps(v, x);
        for (float& e : v) e = expf_ggml(e);
        return _mm256_load_ps(v);
    }
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 p = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
            _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// 16 lanes held as (lo: lanes 0..7, hi: 8..15), summed in reduce16's order.
inline float hsum16(__m256 lo, __m256 hi) { return hsum(_mm256_add_ps(hi, lo)); }

inline __m256 load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

void attend_f16(const uint16_t* k, const uint16_t* v, size_t stride, const float* q, size_t hd,
                size_t npos, float scale, float* s, float* acc, float* out) {
    float mx = -INFINITY;
    for (size_t j = 0; j < npos; ++j) {
        const uint16_t* kj = k + j * stride;
        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
        for (size_t l = 0; l < hd; l += 16) {
            lo = _mm256_fmadd_ps(load_f16(kj + l), _mm256_loadu_ps(q + l), lo);
            hi = _mm256_fmadd_ps(load_f16(kj + l + 8), _mm256_loadu_ps(q + l + 8), hi);
        }
        s[j] = hsum16(lo, hi) * scale;
        mx = std::max(mx, s[j]);
    }
    double sum = 0;
    const __m256 vmx = _mm256_set1_ps(mx);
    size_t c = 0;
    for (; c + 16 <= npos; c += 16) {
        const __m256 e0 = expf8_ggml(_mm256_sub_ps(_mm256_loadu_ps(s + c), vmx));
        const __m256 e1 = expf8_ggml(_mm256_sub_ps(_mm256_loadu_ps(s + c + 8), vmx));
        _mm256_storeu_ps(s + c, e0);
        _mm256_storeu_ps(s + c + 8, e1);
        sum += double(hsum16(e0, e1));
    }
    if (c < npos) sum += double(exp_chunk16(s + c, npos - c, mx));
    const float inv = float(1.0 / sum);
    const __m256 vinv = _mm256_set1_ps(inv);
    size_t j = 0;
    for (; j + 8 <= npos; j += 8)
        _mm256_storeu_ps(
            s + j, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(s + j), vinv),
                                                   _MM_FROUND_TO_NEAREST_INT)));
    for (; j < npos; ++j) s[j] = _cvtsh_ss(_cvtss_sh(s[j] * inv, _MM_FROUND_TO_NEAREST_INT));
    std::fill(acc, acc + 16 * hd, 0.0f);
    for (j = 0; j < npos; ++j) {
        float* a = acc + (j % 16) * hd;
        const uint16_t* vj = v + j * stride;
        const __m256 p = _mm256_set1_ps(s[j]);
        for (size_t d = 0; d < hd; d += 8)
            _mm256_storeu_ps(a + d, _mm256_fmadd_ps(load_f16(vj + d), p, _mm256_loadu_ps(a + d)));
    }
    for (size_t d = 0; d < hd; d += 8) {
        __m256 h[8], g[4];
        for (size_t i = 0; i < 8; ++i)
            h[i] = _mm256_add_ps(_mm256_loadu_ps(acc + (8 + i) * hd + d),
                                 _mm256_loadu_ps(acc + i * hd + d));
        for (size_t i = 0; i < 4; ++i) g[i] = _mm256_add_ps(h[4 + i], h[i]);
        _mm256_storeu_ps(out + d,
                         _mm256_add_ps(_mm256_add_ps(g[0], g[2]), _mm256_add_ps(g[1], g[3])));
    }
}

void silu_f32(const float* x, float* out, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 e = expf8_ggml(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_storeu_ps(out + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
    }
    for (; i < n; ++i) out[i] = silu(x[i]);
}

const QKernels kAvx2{"avx2",   dot_q4_0, dot_q4_1,  dot_q8_0,  dot_f16,    dot_f32, axpy_f32,
                     axpy_f16, to_f16,   round_f16, axpy_q8_0, attend_f16, silu_f32};

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
