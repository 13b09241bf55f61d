#pragma once
// Pieces of the packed GEMM that multiply in bf16 (AVX512-BF16, vdpbf16ps), for
// bf16 weights and enough rows that the product is bound by arithmetic.
//
// vdpbf16ps multiplies pairs of bf16 and adds both products to an f32 lane, so
// both operands are packed in k-pairs: one 32-bit word holds elements k (low
// half) and k + 1 (high half) of a row, zero-padded when K is odd. The weights
// are bf16 already and are only rearranged (no widening, half the bytes of an
// f32 panel); the activations are rounded to bf16 (nearest even, vcvtne2ps2bf16)
// while packing. One k-pair step of the MR x NR micro-kernel is MR*NV vdpbf16ps
// from NV vector loads and MR broadcasts: twice the multiply-adds of an f32 step
// for the same instruction count.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "gemm_simd.hpp"

#include "isa.hpp"

namespace flamingo::kernels {
FLAMINGO_KERNELS_BEGIN
namespace detail {

// Adds bias and stores an MR x NV tile of accumulators to C (or adds it to C).
template <std::size_t MR, std::size_t NV>
inline void store_tile(fbatch (&acc)[MR][NV], float* c, std::size_t ldc, bool load_c, const float* bias) {
    if (bias) {
        for (std::size_t j = 0; j < NV; ++j) {
            fbatch bj = fbatch::load_unaligned(bias + j * kV);
            for (std::size_t i = 0; i < MR; ++i) acc[i][j] += bj;
        }
    }
    for (std::size_t i = 0; i < MR; ++i) {
        float* ci = c + i * ldc;
        for (std::size_t j = 0; j < NV; ++j) {
            fbatch v = acc[i][j];
            if (load_c) v += fbatch::load_unaligned(ci + j * kV);
            v.store_unaligned(ci + j * kV);
        }
    }
}

#if defined(__AVX512BF16__)
inline constexpr bool kBf16Dot = true;

// acc = A_sliver · B_sliver over kc k-pairs (a: [kc][MR] words, b: [kc][NV*16]
// words); C tile = (load_c ? C : 0) + acc (+ bias).
template <std::size_t MR, std::size_t NV>
inline void micro_kernel(std::size_t kc, const std::uint32_t* __restrict a, const std::uint32_t* __restrict b,
                         float* c, std::size_t ldc, bool load_c, const float* bias) {
    static_assert(kV == 16);
    for (std::size_t i = 0; i < MR; ++i)
        for (std::size_t j = 0; j < NV * kV; j += 64 / sizeof(float)) __builtin_prefetch(c + i * ldc + j, 1);
    __m512 acc[MR][NV];
    for (std::size_t i = 0; i < MR; ++i)
        for (std::size_t j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();
    for (std::size_t k = 0; k < kc; ++k) {
        __m512bh bv[NV];
        for (std::size_t j = 0; j < NV; ++j) bv[j] = (__m512bh)_mm512_load_si512(b + j * kV);
        for (std::size_t i = 0; i < MR; ++i) {
            __m512bh av = (__m512bh)_mm512_set1_epi32(int(a[i]));
            for (std::size_t j = 0; j < NV; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);
        }
        a += MR;
        b += NV * kV;
    }
    fbatch out[MR][NV];
    for (std::size_t i = 0; i < MR; ++i)
        for (std::size_t j = 0; j < NV; ++j) out[i][j] = fbatch(acc[i][j]);
    store_tile<MR, NV>(out, c, ldc, load_c, bias);
}

// GCC 12 flags the masked loads' undefined pass-through operand once inlined
// (-Wuninitialized); as for transpose16x16, the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"

// 16 k-pairs (32 elements) of one row from k = 2p on, as 16 words; elements at
// or beyond K read as zero (masked loads: nothing past the row is touched).
inline __m512 row_pairs(const float* s, std::size_t p, std::size_t K) {
    const std::size_t k = 2 * p, n = K - k;
    __m512 lo, hi;
    if (n >= 32) {
        lo = _mm512_loadu_ps(s + k), hi = _mm512_loadu_ps(s + k + 16);
    } else {
        lo = _mm512_maskz_loadu_ps(__mmask16(n >= 16 ? 0xffffu : (1u << n) - 1), s + k);
        hi = _mm512_maskz_loadu_ps(__mmask16(n <= 16 ? 0u : (1u << (n - 16)) - 1), s + k + 16);
    }
    return _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(hi, lo));  // lo -> elements 0..15
}
inline __m512 row_pairs(const bf16* s, std::size_t p, std::size_t K) {
    const std::size_t k = 2 * p, n = K - k;
    if (n >= 32) return _mm512_castsi512_ps(_mm512_loadu_si512(s + k));
    return _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(__mmask32((std::uint64_t(1) << n) - 1), s + k));
}

#pragma GCC diagnostic pop

// dst[p * R + r] = k-pair p of row r (elements 2p, 2p + 1; bf16, zero past K)
// for r < rows, 0 for rows <= r < R; p < ceil(K / 2). R is a multiple of 8 up
// to 16, or of 16. Blocks of 16 rows x 16 pairs are transposed in registers as
// 32-bit words; rows are prefetched ahead as in pack_interleaved.
template <class T>
inline void pack_pairs(const T* src, std::size_t ld, std::size_t rows, std::size_t R, std::size_t K,
                       std::uint32_t* dst) {
    constexpr std::size_t ahead = 512 / sizeof(T);
    const std::size_t P = (K + 1) / 2;
    for (std::size_t r0 = 0; r0 < R; r0 += 16) {
        const std::size_t live = rows > r0 ? std::min<std::size_t>(16, rows - r0) : 0;
        const std::size_t width = std::min<std::size_t>(16, R - r0);
        const __mmask16 store_mask = __mmask16((1u << width) - 1);
        const T* s0 = src + r0 * ld;
        for (std::size_t p = 0; p < P; p += 16) {
            __m512 v[16];
            for (std::size_t i = 0; i < 16; ++i) {
                if (i < live) {
                    __builtin_prefetch(s0 + i * ld + 2 * p + ahead, 0, 3);
                    v[i] = row_pairs(s0 + i * ld, p, K);
                } else {
                    v[i] = _mm512_setzero_ps();
                }
            }
            transpose16x16(v);
            const std::size_t np = std::min<std::size_t>(16, P - p);
            for (std::size_t c = 0; c < np; ++c)
                _mm512_mask_storeu_epi32(dst + (p + c) * R + r0, store_mask, _mm512_castps_si512(v[c]));
        }
    }
}
#else
inline constexpr bool kBf16Dot = false;
#endif

}  // namespace detail
FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels
