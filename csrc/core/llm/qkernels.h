// Dequantize-and-dot kernels for ggml's block formats, chosen at run time by the dispatcher
// the vector index uses too (common/kernel_choice.h): a scalar set that is always there and
// an AVX2 set when the CPU has it (LOCALMEM_KERNEL=scalar forces the scalar set, to test it
// on any machine).
//
// Like llama.cpp, a matrix-vector product quantizes the activations once to 8-bit blocks
// of 32 (Q8Block) and then takes integer dot products with each weight row, so a row of
// Q4_1 weights is read once and never expanded to floats.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lm {

constexpr size_t kQBlock = 32;

// As ggml's block_q8_1, with its rounding: d and s pass through f16 (llama.cpp stores them
// as halves), so our products round like llama.cpp's and the two engines agree on the
// argmax wherever the model is not split between two tokens.
struct Q8Block {
    float d;  // scale: x[i] ~ d * qs[i]
    float s;  // d * sum(qs), for Q4_1's offset m
    int8_t qs[kQBlock];
};

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// x: n floats, n a multiple of 32.
void quantize_q8(const float* x, size_t n, Q8Block* out);

// Expands n elements of a row of `type` (ggml id: F32, F16, Q4_0, Q4_1, Q8_0) to floats.
void dequantize_row(uint32_t type, const uint8_t* src, float* dst, size_t n);

// Quantizes n floats to Q8_0 blocks (34 bytes each), as ggml does (round to nearest).
void quantize_row_q8_0(const float* x, size_t n, uint8_t* dst);

struct QKernels {
    const char* name;
    // Dot products of one weight row (nb blocks of 32) with quantized activations.
    float (*dot_q4_0)(const uint8_t* w, const Q8Block* x, size_t nb);
    float (*dot_q4_1)(const uint8_t* w, const Q8Block* x, size_t nb);
    float (*dot_q8_0)(const uint8_t* w, const Q8Block* x, size_t nb);
    // Float rows (n elements) with float activations.
    float (*dot_f16)(const uint16_t* w, const float* x, size_t n);
    float (*dot_f32)(const float* a, const float* b, size_t n);
    // y += a * x over n floats.
    void (*axpy_f32)(float a, const float* x, float* y, size_t n);
    // y += a * x with x in f16 (a row of the KV cache's values).
    void (*axpy_f16)(float a, const uint16_t* x, float* y, size_t n);
    // out = f16(x), round to nearest even; x rounded in place through f16.
    void (*to_f16)(const float* x, uint16_t* out, size_t n);
    void (*round_f16)(float* x, size_t n);
    // y += a * dequantized Q8_0 row of n elements (a streamed down-projection column).
    void (*axpy_q8_0)(float a, const uint8_t* w, float* y, size_t n);
    // One query row of attention over positions 0..npos-1 of an f16 KV cache (k, v: that
    // head's vector at position 0, `stride` elements apart) in llama.cpp's order of
    // operations for a batch (see the note before reduce16, below); hd a multiple of 16.
    // Scratch: s for npos + 16 floats, acc for 16 * hd. Writes hd floats to out.
    void (*attend_f16)(const uint16_t* k, const uint16_t* v, size_t stride, const float* q,
                       size_t hd, size_t npos, float scale, float* s, float* acc, float* out);
    // out = silu(x) over n floats, as ggml computes it (silu below).
    void (*silu)(const float* x, float* out, size_t n);
};

// One weight row of `type` (n elements) . x: quantized activations xq for the block
// types, floats xf for F16 / F32.
inline float dot_row(const QKernels& k, uint32_t type, const uint8_t* row, const Q8Block* xq,
                     const float* xf, size_t n) {
    switch (type) {
        case 2:
            return k.dot_q4_0(row, xq, n / kQBlock);
        case 3:
            return k.dot_q4_1(row, xq, n / kQBlock);
        case 8:
            return k.dot_q8_0(row, xq, n / kQBlock);
        case 1:
            return k.dot_f16(reinterpret_cast<const uint16_t*>(row), xf, n);
        default:
            return k.dot_f32(reinterpret_cast<const float*>(row), xf, n);
    }
}

// llama.cpp's attention, to the bit, for a batch of tokens (its KQ and KQV products go to
// llamafile's tinyBLAS, the softmax to ggml's vectorized expf; built with AVX-512 on x86):
// - a product of two f16 vectors (a key with the f16-rounded query; the f16-rounded
//   probabilities with a row of values) keeps 16 lanes; element i goes to lane i % 16 with
//   one fused multiply-add, and the lanes are summed in reduce16's order;
// - the softmax exponentiates x - max with expf_ggml, sums each 16 values in reduce16's
//   order into a double, and multiplies by (float)(1.0 / sum).
// Being bit-identical to the reference engine on the same GGUF is what lets the dense
// engine's argmax agree with it even where the model is nearly split between two tokens.

// The order in which GCC's _mm512_reduce_add_ps adds 16 lanes.
inline float reduce16(const float* a) {
    float h[8], g[4];
    for (int i = 0; i < 8; ++i) h[i] = a[8 + i] + a[i];
    for (int i = 0; i < 4; ++i) g[i] = h[4 + i] + h[i];
    return (g[0] + g[2]) + (g[1] + g[3]);
}

// ggml's AVX-512 expf (ARM's optimized-routines polynomial, scaled with VSCALEFPS), one
// value at a time: max error 1.5 ulp; below -103.97 it flushes to 0, above 88.38 to inf.
inline float expf_ggml(float x) {
    const float r = 0x1.8p23f;
    const float z = std::fma(x, 0x1.715476p+0f, r);
    const float n = z - r;                                           // round(x / ln 2)
    if (!(std::fabs(n) <= 192.0f)) return n <= 0 ? 0.0f : INFINITY;  // NaN n: x was -inf
    const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
    const float u = b * b;
    const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                      std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                             u, std::fma(0x1.ffffecp-1f, b, 1.0f));
    return std::ldexp(j, int(n));
}

// The softmax's exponentials for one chunk of at most 16 scores (n of them): each
// s[i] becomes expf_ggml(s[i] - mx); returns their sum in reduce16's order.
inline float exp_chunk16(float* s, size_t n, float mx) {
    float lanes[16] = {};
    for (size_t i = 0; i < n; ++i) lanes[i] = s[i] = expf_ggml(s[i] - mx);
    return reduce16(lanes);
}

// SwiGLU's gate activation with ggml's expf: x / (1 + e^-x).
inline float silu(float x) { return x / (1.0f + expf_ggml(-x)); }

const QKernels& qkernels_scalar();
const QKernels* qkernels_avx2();  // nullptr when not compiled in
// The set chosen once (common/kernel_choice.h): the best this CPU runs, at most the one
// LOCALMEM_KERNEL names.
const QKernels& qkernels_active();
// The sets this CPU can run, scalar first.
std::vector<const QKernels*> qkernels_available();

}  // namespace lm
