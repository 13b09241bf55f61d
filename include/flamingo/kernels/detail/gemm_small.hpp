#pragma once
// Kernels for few-row products (M <= kSmallM): one-token decoding (M = 1, GEMV)
// and beam search (M = 2..8). Every weight is read once for all M rows,
// straight from its row in memory with no packing, and the threads split the
// weight rows (linear) or the output columns (matmul). One row is bound by
// memory; from a few rows on, f32 multiply-adds bound bf16 weights on AVX-512,
// hence the vdpbf16ps variant for them below.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../../core/executor.hpp"
#include "gemm_bf16.hpp"
#include "gemm_simd.hpp"

#include "isa.hpp"

namespace flamingo::kernels {
FLAMINGO_KERNELS_BEGIN
namespace detail {

inline constexpr std::size_t kSmallM = 8;
// Accumulator registers the small kernels may use (leaves room for loads).
inline constexpr std::size_t kAccRegs = kAvx512 ? 24 : 8;
// Below this many multiply-adds one thread is faster than waking the others.
inline constexpr std::size_t kParallelMin = 32 * 1024;

// Weight rows handled together by linear_rows<MM>: MM * R accumulators.
template <std::size_t MM>
inline constexpr std::size_t rows_per_step = std::max<std::size_t>(1, std::min<std::size_t>(4, kAccRegs / MM));

// out[m][r] = X[m, :] · w[r, :] for m < MM, r < R.
template <std::size_t MM, std::size_t R, class W>
inline void dot_block(std::size_t K, const float* X, std::size_t ldx, const W* w, std::size_t ldw,
                      float (&out)[MM][R]) {
    // Two interleaved accumulator sets when there are too few chains to hide FMA latency.
    constexpr std::size_t U = MM * R < 8 ? 2 : 1;
    // Vectors used several times are pinned to registers (see pin()); with one
    // or two rows and bf16 the loop is memory-bound and pinning x costs a little
    // (measured: pinning w and x makes f32 M = 2..4 1.4-1.6x faster).
    constexpr bool kPinX = MM > 2 || (MM == 2 && std::is_same_v<W, float>);
    fbatch acc[U][MM][R];
    for (std::size_t u = 0; u < U; ++u)
        for (std::size_t m = 0; m < MM; ++m)
            for (std::size_t r = 0; r < R; ++r) acc[u][m][r] = fbatch(0.0f);
    // Rows are short streams (a few KB); fetching the next R rows' data while
    // these are summed keeps DRAM busy across the row switch.
    const std::uintptr_t next = reinterpret_cast<std::uintptr_t>(w) + R * ldw * sizeof(W);
    std::size_t k = 0;
    for (; k + U * kV <= K; k += U * kV) {
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t b = 0; b < U * kV * sizeof(W); b += 64)
                __builtin_prefetch(reinterpret_cast<const void*>(next + (r * ldw + k) * sizeof(W) + b), 0, 3);
        for (std::size_t u = 0; u < U; ++u) {
            fbatch wv[R];
            for (std::size_t r = 0; r < R; ++r) {
                wv[r] = load_w(w + r * ldw + k + u * kV);
                if constexpr (MM > 1) pin(wv[r]);
            }
            for (std::size_t m = 0; m < MM; ++m) {
                fbatch xv = fbatch::load_unaligned(X + m * ldx + k + u * kV);
                if constexpr (kPinX && R > 1) pin(xv);
                for (std::size_t r = 0; r < R; ++r) acc[u][m][r] = xsimd::fma(xv, wv[r], acc[u][m][r]);
            }
        }
    }
    for (; k + kV <= K; k += kV) {
        fbatch wv[R];
        for (std::size_t r = 0; r < R; ++r) wv[r] = load_w(w + r * ldw + k);
        for (std::size_t m = 0; m < MM; ++m) {
            fbatch xv = fbatch::load_unaligned(X + m * ldx + k);
            for (std::size_t r = 0; r < R; ++r) acc[0][m][r] = xsimd::fma(xv, wv[r], acc[0][m][r]);
        }
    }
    for (std::size_t m = 0; m < MM; ++m)
        for (std::size_t r = 0; r < R; ++r) {
            fbatch s = acc[0][m][r];
            for (std::size_t u = 1; u < U; ++u) s += acc[u][m][r];
            out[m][r] = xsimd::hadd(s);
        }
    for (; k < K; ++k)
        for (std::size_t m = 0; m < MM; ++m)
            for (std::size_t r = 0; r < R; ++r) out[m][r] += X[m * ldx + k] * to_f32(w[r * ldw + k]);
}

// Y[m, n] (=|+=) X[m, :] · W[n, :] + bias[n] for MM rows, weight rows [n0, n1):
// block(std::integral_constant<R'>, n, out) computes out[MM][R'] = the products
// with weight rows [n, n + R'), R rows at a time and then one.
template <std::size_t MM, std::size_t R, class Block>
inline void linear_rows(std::size_t n0, std::size_t n1, const float* bias, float* Y, std::size_t ldy, bool accumulate,
                        Block&& block) {
    std::size_t n = n0;
    auto emit = [&](auto& out, std::size_t rows) {
        for (std::size_t m = 0; m < MM; ++m)
            for (std::size_t r = 0; r < rows; ++r) {
                float v = out[m][r] + (bias ? bias[n + r] : 0.0f);
                float& y = Y[m * ldy + n + r];
                y = accumulate ? y + v : v;
            }
    };
    for (; n + R <= n1; n += R) {
        float out[MM][R];
        block(std::integral_constant<std::size_t, R>{}, n, out);
        emit(out, R);
    }
    for (; n < n1; ++n) {
        float out[MM][1];
        block(std::integral_constant<std::size_t, 1>{}, n, out);
        emit(out, 1);
    }
}

template <std::size_t MM, class W>
inline void linear_small_m(std::size_t N, std::size_t K, const float* X, std::size_t ldx, const W* w,
                           std::size_t ldw, const float* bias, float* Y, std::size_t ldy, bool accumulate) {
    constexpr std::size_t R = rows_per_step<MM>;
    auto body = [&](std::size_t n0, std::size_t n1) {
        linear_rows<MM, R>(n0, n1, bias, Y, ldy, accumulate, [&](auto rows, std::size_t n, auto& out) {
            dot_block<MM, decltype(rows)::value>(K, X, ldx, w + n * ldw, ldw, out);
        });
    };
    if (MM * N * K < kParallelMin)
        body(0, N);
    else
        parallel_for(N, body, R);
}

// Y[M, N] (=|+=) X[M, K] · W[N, K]^T + bias for 1 <= M <= kSmallM.
template <class W>
inline void linear_small(std::size_t M, std::size_t N, std::size_t K, const float* X, std::size_t ldx, const W* w,
                         std::size_t ldw, const float* bias, float* Y, std::size_t ldy, bool accumulate) {
    switch (M) {
        case 1: return linear_small_m<1>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 2: return linear_small_m<2>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 3: return linear_small_m<3>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 4: return linear_small_m<4>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 5: return linear_small_m<5>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 6: return linear_small_m<6>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 7: return linear_small_m<7>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 8: return linear_small_m<8>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        default: break;
    }
}

#if defined(__AVX512BF16__)
// bf16 weights, 2..kSmallM rows (batched decoding, beam search), multiplied in
// bf16 (vdpbf16ps) as the packed GEMM does. With f32 multiply-adds these rows
// cost more than reading the weights (measured: 8 rows run at half the memory's
// pace on one AVX-512 core); vdpbf16ps does twice the multiply-adds per
// instruction and its activations, rounded to bf16 once per call, are half the
// bytes. The weights are read straight from their rows: a k-pair of a row is
// two adjacent bf16, as vdpbf16ps takes them.
template <std::size_t MM, std::size_t R>
inline void dot_block_bf16(std::size_t K, const bf16* xb, std::size_t ldxb, const bf16* w, std::size_t ldw,
                           float (&out)[MM][R]) {
    __m512 acc[MM][R];
    for (std::size_t m = 0; m < MM; ++m)
        for (std::size_t r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
    const char* next = reinterpret_cast<const char*>(w + R * ldw);
    for (std::size_t k = 0; k < K; k += 32) {  // the last step reads zeros past K (row_pairs masks)
        __m512bh wv[R];
        for (std::size_t r = 0; r < R; ++r) {
            __builtin_prefetch(next + (r * ldw + k) * sizeof(bf16), 0, 3);
            wv[r] = (__m512bh)row_pairs(w + r * ldw, k / 2, K);
        }
        for (std::size_t m = 0; m < MM; ++m) {
            const __m512bh xv = (__m512bh)_mm512_load_si512(xb + m * ldxb + k);
            for (std::size_t r = 0; r < R; ++r) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], xv, wv[r]);
        }
    }
    for (std::size_t m = 0; m < MM; ++m)
        for (std::size_t r = 0; r < R; ++r) out[m][r] = _mm512_reduce_add_ps(acc[m][r]);
}

// The calling thread's rounded activations, shared with the workers of one call.
inline Scratch& small_x_scratch() {
    thread_local Scratch s;
    return s;
}

template <std::size_t MM>
inline void linear_small_bf16_m(std::size_t N, std::size_t K, const float* X, std::size_t ldx, const bf16* w,
                                std::size_t ldw, const float* bias, float* Y, std::size_t ldy, bool accumulate) {
    // Weight rows per pass; 5 and 6 rows measured ~2x faster with 3 than with 4.
    constexpr std::size_t R = MM <= 4 ? 4 : 3;
    // X rounded to bf16 (nearest even), each row zero-padded to a multiple of 32.
    const std::size_t ldxb = (K + 31) / 32 * 32;
    bf16* xb = reinterpret_cast<bf16*>(small_x_scratch().get(MM * ldxb / 2));
    for (std::size_t m = 0; m < MM; ++m)
        for (std::size_t k = 0; k < ldxb; k += 32)
            _mm512_store_si512(xb + m * ldxb + k, _mm512_castps_si512(row_pairs(X + m * ldx, k / 2, K)));
    auto body = [&](std::size_t n0, std::size_t n1) {
        linear_rows<MM, R>(n0, n1, bias, Y, ldy, accumulate, [&](auto rows, std::size_t n, auto& out) {
            dot_block_bf16<MM, decltype(rows)::value>(K, xb, ldxb, w + n * ldw, ldw, out);
        });
    };
    if (MM * N * K < kParallelMin)
        body(0, N);
    else
        parallel_for(N, body, R);
}

// Y[M, N] (=|+=) X[M, K] · W[N, K]^T + bias for 2 <= M <= kSmallM, in bf16.
inline void linear_small_bf16(std::size_t M, std::size_t N, std::size_t K, const float* X, std::size_t ldx,
                              const bf16* w, std::size_t ldw, const float* bias, float* Y, std::size_t ldy,
                              bool accumulate) {
    switch (M) {
        case 2: return linear_small_bf16_m<2>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 3: return linear_small_bf16_m<3>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 4: return linear_small_bf16_m<4>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 5: return linear_small_bf16_m<5>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 6: return linear_small_bf16_m<6>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 7: return linear_small_bf16_m<7>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        case 8: return linear_small_bf16_m<8>(N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
        default: break;
    }
}
#endif

// C[:, j0:j1] (=|+=) A[MM, K] · B[K, j0:j1] for MM rows. B is streamed row by
// row (KG rows at a time, each read contiguously), and C itself, a chunk of it
// at a time small enough to stay in L1, is the accumulator: reading B in long
// contiguous runs is what matters when it comes from L3 or DRAM.
template <std::size_t MM>
inline void matmul_rows(std::size_t j0, std::size_t j1, std::size_t K, const float* A, std::size_t lda,
                        const float* B, std::size_t ldb, float* C, std::size_t ldc, bool accumulate) {
    constexpr std::size_t KG = std::max<std::size_t>(1, std::min<std::size_t>(4, kAccRegs / MM));
    constexpr std::size_t CW = MM <= 4 ? 1024 : 512;  // columns per chunk: MM * CW * 4 bytes <= 16 KiB
    for (std::size_t jc = j0; jc < j1; jc += CW) {
        const std::size_t cw = std::min(CW, j1 - jc), vend = cw / kV * kV;
        if (!accumulate)
            for (std::size_t m = 0; m < MM; ++m) std::fill_n(C + m * ldc + jc, cw, 0.0f);
        auto rows = [&](auto kg_tag, std::size_t k) {  // adds rows k..k+G-1 of B
            constexpr std::size_t G = decltype(kg_tag)::value;
            fbatch a[MM][G];
            for (std::size_t m = 0; m < MM; ++m)
                for (std::size_t g = 0; g < G; ++g) {
                    a[m][g] = fbatch(A[m * lda + k + g]);
                    pin(a[m][g]);
                }
            const float* b = B + k * ldb + jc;
            for (std::size_t v = 0; v < vend; v += kV) {
                fbatch bv[G];
                for (std::size_t g = 0; g < G; ++g) bv[g] = fbatch::load_unaligned(b + g * ldb + v);
                for (std::size_t m = 0; m < MM; ++m) {
                    float* c = C + m * ldc + jc + v;
                    fbatch acc = fbatch::load_unaligned(c);
                    for (std::size_t g = 0; g < G; ++g) acc = xsimd::fma(a[m][g], bv[g], acc);
                    acc.store_unaligned(c);
                }
            }
            for (std::size_t v = vend; v < cw; ++v)  // last columns (fewer than a vector)
                for (std::size_t m = 0; m < MM; ++m)
                    for (std::size_t g = 0; g < G; ++g) C[m * ldc + jc + v] += A[m * lda + k + g] * b[g * ldb + v];
        };
        std::size_t k = 0;
        for (; k + KG <= K; k += KG) rows(std::integral_constant<std::size_t, KG>{}, k);
        for (; k < K; ++k) rows(std::integral_constant<std::size_t, 1>{}, k);
    }
}

// C[m, cols] (=|+=) A[m, :] · B[:, cols] for MM rows: an SV-vector column strip
// with the C strip in registers, walking down B's rows.
template <std::size_t MM, std::size_t SV>
inline void matmul_strip(std::size_t K, const float* A, std::size_t lda, const float* B, std::size_t ldb, float* C,
                         std::size_t ldc, bool accumulate) {
    // Two accumulator sets (even and odd k) when there are too few chains to hide FMA latency.
    constexpr std::size_t U = MM * SV < 8 ? 2 : 1;
    fbatch acc[U][MM][SV];
    for (std::size_t u = 0; u < U; ++u)
        for (std::size_t m = 0; m < MM; ++m)
            for (std::size_t v = 0; v < SV; ++v) acc[u][m][v] = fbatch(0.0f);
    auto step = [&](std::size_t u, std::size_t k) {
        const float* b = B + k * ldb;
        fbatch bv[SV];
        for (std::size_t v = 0; v < SV; ++v) {
            bv[v] = fbatch::load_unaligned(b + v * kV);
            if constexpr (MM > 1) pin(bv[v]);
        }
        for (std::size_t m = 0; m < MM; ++m) {
            fbatch a(A[m * lda + k]);
            if constexpr (SV > 1) pin(a);
            for (std::size_t v = 0; v < SV; ++v) acc[u][m][v] = xsimd::fma(a, bv[v], acc[u][m][v]);
        }
    };
    std::size_t k = 0;
    for (; k + U <= K; k += U)
        for (std::size_t u = 0; u < U; ++u) step(u, k + u);
    for (; k < K; ++k) step(0, k);
    for (std::size_t m = 0; m < MM; ++m)
        for (std::size_t v = 0; v < SV; ++v) {
            float* c = C + m * ldc + v * kV;
            fbatch r = acc[0][m][v];
            for (std::size_t u = 1; u < U; ++u) r += acc[u][m][v];
            if (accumulate) r += fbatch::load_unaligned(c);
            r.store_unaligned(c);
        }
}

// Strips of exactly nv < SV vectors (the columns left after the full strips).
template <std::size_t MM, std::size_t SV>
inline void matmul_strip_n(std::size_t nv, std::size_t K, const float* A, std::size_t lda, const float* B,
                           std::size_t ldb, float* C, std::size_t ldc, bool accumulate) {
    if constexpr (SV > 1) {
        if (nv == SV - 1) return matmul_strip<MM, SV - 1>(K, A, lda, B, ldb, C, ldc, accumulate);
        return matmul_strip_n<MM, SV - 1>(nv, K, A, lda, B, ldb, C, ldc, accumulate);
    }
}

template <std::size_t MM>
inline void matmul_small_m(std::size_t N, std::size_t K, const float* A, std::size_t lda, const float* B,
                           std::size_t ldb, float* C, std::size_t ldc, bool accumulate) {
    constexpr std::size_t SV = std::max<std::size_t>(1, std::min<std::size_t>(8, kAccRegs / MM));
    auto body = [&](std::size_t j0, std::size_t j1) {
        // One or two rows over many columns: stream B's rows (C round trips through
        // L1 are cheap next to one FMA per B element). Otherwise strips, C in registers.
        if (MM <= 2 && j1 - j0 >= 256) return matmul_rows<MM>(j0, j1, K, A, lda, B, ldb, C, ldc, accumulate);
        std::size_t j = j0;
        for (; j + SV * kV <= j1; j += SV * kV) matmul_strip<MM, SV>(K, A, lda, B + j, ldb, C + j, ldc, accumulate);
        if (std::size_t nv = (j1 - j) / kV) {
            matmul_strip_n<MM, SV>(nv, K, A, lda, B + j, ldb, C + j, ldc, accumulate);
            j += nv * kV;
        }
        for (; j < j1; ++j)  // last columns (fewer than a vector)
            for (std::size_t m = 0; m < MM; ++m) {
                float s = 0.0f;
                for (std::size_t k = 0; k < K; ++k) s += A[m * lda + k] * B[k * ldb + j];
                float& c = C[m * ldc + j];
                c = accumulate ? c + s : s;
            }
    };
    if (MM * N * K < kParallelMin)
        body(0, N);
    else
        parallel_for(N, body, SV * kV);
}

inline void matmul_small(std::size_t M, std::size_t N, std::size_t K, const float* A, std::size_t lda,
                         const float* B, std::size_t ldb, float* C, std::size_t ldc, bool accumulate) {
    switch (M) {
        case 1: return matmul_small_m<1>(N, K, A, lda, B, ldb, C, ldc, accumulate);
        case 2: return matmul_small_m<2>(N, K, A, lda, B, ldb, C, ldc, accumulate);
        case 3: return matmul_small_m<3>(N, K, A, lda, B, ldb, C, ldc, accumulate);
        case 4: return matmul_small_m<4>(N, K, A, lda, B, ldb, C, ldc, accumulate);
        case 5: return matmul_small_m<5>(N, K, A, lda, B, ldb, C, ldc, accumulate);
        case 6: return matmul_small_m<6>(N, K, A, lda, B, ldb, C, ldc, accumulate);
        case 7: return matmul_small_m<7>(N, K, A, lda, B, ldb, C, ldc, accumulate);
        case 8: return matmul_small_m<8>(N, K, A, lda, B, ldb, C, ldc, accumulate);
        default: break;
    }
}

}  // namespace detail
FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels
