#pragma once
// SIMD building blocks shared by the GEMM and GEMV kernels: the float batch of
// the compile-time architecture (xsimd picks it from -march), weight loads that
// widen bf16 to f32 in registers, and small in-register transposes for packing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#if defined(__AVX__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../../core/dtype.hpp"

#include "isa.hpp"

namespace flamingo::kernels {
FLAMINGO_KERNELS_BEGIN
namespace detail {

using fbatch = xsimd::batch<float>;
inline constexpr std::size_t kV = fbatch::size;  // floats per vector register

#if defined(__AVX512F__)
inline constexpr bool kAvx512 = (kV == 16);
#else
inline constexpr bool kAvx512 = false;
#endif
#if defined(__AVX__)
inline constexpr bool kAvx = (kV >= 8);
#else
inline constexpr bool kAvx = false;
#endif

// Loads kV consecutive weights as f32. bf16 is the top half of an f32, so
// widening is a zero-extend and a 16-bit shift: exact, and cheap enough that
// bf16 GEMV stays memory-bound.
inline fbatch load_w(const float* p) { return fbatch::load_unaligned(p); }

inline fbatch load_w(const bf16* p) {
#if defined(__AVX512F__)
    static_assert(kV == 16);
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return fbatch(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
#elif defined(__AVX2__)
    static_assert(kV == 8);
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return fbatch(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
#elif defined(__SSE2__) && !defined(__AVX__)
    static_assert(kV == 4);
    // interleaving zeros below each 16-bit value puts it in the top half of a 32-bit lane
    __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return fbatch(_mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h)));
#else
    alignas(64) float tmp[kV];
    for (std::size_t i = 0; i < kV; ++i) tmp[i] = float(p[i]);
    return fbatch::load_aligned(tmp);
#endif
}

// Keeps v in a register: without this GCC folds the load of a vector that is
// used several times into every FMA that uses it, re-loading it each time, and
// a loop with many accumulators becomes bound by load bandwidth.
inline void pin(fbatch& v) {
#if defined(__GNUC__) && defined(__AVX512F__)
    typename fbatch::register_type r = v;
    asm("" : "+v"(r));
    v = fbatch(r);
#elif defined(__GNUC__) && defined(__SSE2__)
    typename fbatch::register_type r = v;
    asm("" : "+x"(r));
    v = fbatch(r);
#endif
}

inline float to_f32(float x) { return x; }
inline float to_f32(bf16 x) { return float(x); }

// 64-byte aligned scratch that only grows; one per thread (thread_local), so
// steady-state calls allocate nothing.
struct Scratch {
    struct Free {
        void operator()(float* p) const { std::free(p); }
    };
    std::unique_ptr<float, Free> data;
    std::size_t capacity = 0;

    float* get(std::size_t n) {
        if (n > capacity) {
            std::size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
            data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
            if (!data) throw std::bad_alloc();
            capacity = n;
        }
        return data.get();
    }
};

#if defined(__AVX__)
// Transposes 8 rows of 8 floats in registers.
inline void transpose8x8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 2; ++g) {  // per lane: columns 0..3 of rows 4g..4g+3
        __m256 a = t[4 * g], b = t[4 * g + 1], c = t[4 * g + 2], d = t[4 * g + 3];
        u[4 * g + 0] = _mm256_shuffle_ps(a, c, 0x44);
        u[4 * g + 1] = _mm256_shuffle_ps(a, c, 0xEE);
        u[4 * g + 2] = _mm256_shuffle_ps(b, d, 0x44);
        u[4 * g + 3] = _mm256_shuffle_ps(b, d, 0xEE);
    }
    for (int c = 0; c < 4; ++c) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}
#endif

#if defined(__AVX512F__)
// GCC 12 flags the intrinsics' deliberately undefined pass-through operand
// (-Wuninitialized) once they are inlined here; the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
// Transposes 16 rows of 16 floats in registers.
inline void transpose16x16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; ++g) {  // per 128-bit lane L: column 4L+c of rows 4g..4g+3 in u[4g+c]
        __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
        __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int c = 0; c < 4; ++c) {  // gather lane L of the four row groups into column 4L+c
        __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
        __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
        __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
        r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
        r[4 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
}
#pragma GCC diagnostic pop
#endif

// dst[k * R + r] = src[r * ld + k] for r < rows, 0 for rows <= r < R; k < kc.
// This is how both GEMM operands are packed when the reduction dimension is
// contiguous in memory (A always, B when it is a weight stored [out, in]).
// Blocks of G rows x G columns are transposed in registers; the G rows are
// read as G concurrent streams, each prefetched a few lines ahead because the
// hardware prefetchers do not follow that many streams (rows of a weight are
// often a multiple of 4 KiB apart).
template <class T>
inline void pack_interleaved(const T* src, std::size_t ld, std::size_t rows, std::size_t R, std::size_t kc,
                             float* dst) {
    [[maybe_unused]] constexpr std::size_t ahead = 512 / sizeof(T);  // prefetch distance in elements
    std::size_t kb = 0;                              // columns done by the block path
#if defined(__AVX512F__)
    if (R % 16 == 0 && kc >= 16) {
        kb = kc / 16 * 16;
        for (std::size_t r0 = 0; r0 < R; r0 += 16) {
            const std::size_t live = rows > r0 ? std::min<std::size_t>(16, rows - r0) : 0;
            const T* s0 = src + r0 * ld;
            for (std::size_t k = 0; k < kb; k += 16) {
                __m512 v[16];
                for (std::size_t i = 0; i < 16; ++i) {
                    if (i < live) {
                        __builtin_prefetch(s0 + i * ld + k + ahead, 0, 3);
                        v[i] = __m512(load_w(s0 + i * ld + k));
                    } else {
                        v[i] = _mm512_setzero_ps();
                    }
                }
                transpose16x16(v);
                for (std::size_t i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (k + i) * R + r0, v[i]);
            }
        }
    }
#elif defined(__AVX__)
    // 8x8 blocks: f32 sources, or bf16 where a vector holds 8 floats
    if (R % 8 == 0 && kc >= 8 && (std::is_same_v<T, float> || kV == 8)) {
        kb = kc / 8 * 8;
        for (std::size_t r0 = 0; r0 < R; r0 += 8) {
            const std::size_t live = rows > r0 ? std::min<std::size_t>(8, rows - r0) : 0;
            const T* s0 = src + r0 * ld;
            for (std::size_t k = 0; k < kb; k += 8) {
                __m256 v[8];
                for (std::size_t i = 0; i < 8; ++i) {
                    if (i < live) {
                        __builtin_prefetch(s0 + i * ld + k + ahead, 0, 3);
                        if constexpr (std::is_same_v<T, float>)
                            v[i] = _mm256_loadu_ps(s0 + i * ld + k);
                        else
                            v[i] = __m256(load_w(s0 + i * ld + k));
                    } else {
                        v[i] = _mm256_setzero_ps();
                    }
                }
                transpose8x8(v);
                for (std::size_t i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (k + i) * R + r0, v[i]);
            }
        }
    }
#endif
    for (std::size_t r = 0; r < R; ++r) {  // remaining columns, element by element
        const T* s = src + r * ld;
        for (std::size_t k = kb; k < kc; ++k) dst[k * R + r] = r < rows ? to_f32(s[k]) : 0.0f;
    }
}

}  // namespace detail
FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels
