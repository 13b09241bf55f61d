#pragma once
// Matrix products on raw row-major storage with leading dimensions.
//
//   matmul: C[M,N] = A[M,K] · B[K,N]
//   linear: Y[M,N] = X[M,K] · W[N,K]^T + bias[N]   (PyTorch nn.Linear, W stored [out, in])
//
// Both take `accumulate` (C += ... instead of C = ...). The path is chosen by M:
// up to 8 rows (decoding, beam search) the weights are streamed once for all
// rows; beyond that a packed, register-blocked GEMM runs. Work is split over
// flamingo::num_threads() threads; nested inside a parallel_for it runs serially.
// Accuracy: f32 accumulation, error of the order of sqrt(K) * 2^-24 * sum|x||w|
// (tests allow 1e-5 * sum|x||w|).
//
// bf16 weights, one row (decoding one sequence, bound by memory): widened to
// f32 in registers (exact), the activations are not rounded, the f32 contract
// holds. bf16 weights, 2+ rows (batched decoding and beam search, bound by the
// multiply-adds once a few rows share each weight; prompts, image encoding): on
// a CPU with AVX512-BF16 (compiled in with -march=native) the product runs on
// vdpbf16ps, which multiplies bf16 pairs at twice the f32 rate. The activations
// are then rounded to bf16 (nearest even; denormals flushed to zero), and the
// result is the f32-accumulated product of bf16-rounded activations and the
// bf16 weights: within the f32 bound above of that product (tests: 1e-5), and
// within 2^-8 * sum|x||w| of the product of the unrounded activations (each
// rounding is at most 2^-9 relative), as oneDNN's bf16 GEMM. Elsewhere, or with
// FLAMINGO_BF16_GEMM=widen in the environment, the weights are widened to f32
// and the f32 contract holds for every M. bf16_gemm_kind() names the path.
// Scratch buffers are per thread and only grow: steady-state calls allocate nothing.
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "detail/gemm_packed.hpp"
#include "detail/gemm_small.hpp"

namespace flamingo::kernels {

// Whether bf16 weights with more than one row multiply in bf16 (vdpbf16ps)
// when compiled in: yes unless FLAMINGO_BF16_GEMM=widen (read at first use).
// Tests flip it to hold both paths to their contracts in one process.
// One switch for every kernel set, hence outside the instruction-set namespace.
inline std::atomic<bool>& bf16_dot_switch() {
    static std::atomic<bool> on{[] {
        const char* e = std::getenv("FLAMINGO_BF16_GEMM");
        return !(e && std::string_view(e) == "widen");
    }()};
    return on;
}

FLAMINGO_KERNELS_BEGIN

namespace detail {

// A row-major [rows, cols] operand needs ld >= cols unless it has a single row.
inline void check_matrix(const char* fn, const char* name, const void* p, std::size_t rows, std::size_t cols,
                         std::size_t ld) {
    if (rows == 0 || cols == 0) return;
    check(p != nullptr, fn, ": ", name, " is null but has shape [", rows, ", ", cols, "]");
    check(rows == 1 || ld >= cols, fn, ": ", name, " has shape [", rows, ", ", cols, "] but leading dimension ", ld);
}

// K == 0: the product is empty, only the bias (if any) remains.
inline void empty_product(std::size_t M, std::size_t N, const float* bias, float* C, std::size_t ldc,
                          bool accumulate) {
    for (std::size_t i = 0; i < M; ++i)
        for (std::size_t j = 0; j < N; ++j) {
            float b = bias ? bias[j] : 0.0f;
            C[i * ldc + j] = accumulate ? C[i * ldc + j] + b : b;
        }
}

inline bool bf16_dot_enabled() {
#if FLAMINGO_KERNELS_DISPATCHED
    return active_kernels().bf16_dot && bf16_dot_switch().load(std::memory_order_relaxed);
#else
    return kBf16Dot && bf16_dot_switch().load(std::memory_order_relaxed);
#endif
}

}  // namespace detail

// The product bf16 weights get beyond a few rows, for logs.
inline const char* bf16_gemm_kind() {
    return detail::bf16_dot_enabled() ? "bf16 products beyond one row (AVX512-BF16 vdpbf16ps, activations rounded to bf16)"
                                      : "bf16 weights widened to f32, f32 products";
}

// The kernel set in use, for logs (kernels/dispatch.hpp).
inline std::string kernel_set() {
#if FLAMINGO_KERNELS_DISPATCHED
    return std::string(active_kernels().description) + ", chosen at run time (FLAMINGO_ISA=avx512|avxvnni|avx2|sse2 picks another)";
#else
#define FLAMINGO_KERNELS_STR2(x) #x
#define FLAMINGO_KERNELS_STR(x) FLAMINGO_KERNELS_STR2(x)
    return FLAMINGO_KERNELS_STR(FLAMINGO_KERNELS_NS) ", fixed by the compiler flags of this build";
#endif
}

// C[M,N] = A[M,K] · B[K,N]   (accumulate: C += ...)
inline void matmul(std::size_t M, std::size_t N, std::size_t K, const float* A, std::size_t lda, const float* B,
                   std::size_t ldb, float* C, std::size_t ldc, bool accumulate = false) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().matmul(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
#else
    if (M == 0 || N == 0) return;
    detail::check_matrix("matmul", "A", A, M, K, lda);
    detail::check_matrix("matmul", "B", B, K, N, ldb);
    detail::check_matrix("matmul", "C", C, M, N, ldc);
    if (K == 0) return detail::empty_product(M, N, nullptr, C, ldc, accumulate);
    if (M <= detail::kSmallM) return detail::matmul_small(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    // Packing B one sliver at a time reads K short pieces of rows: fine while B is
    // in cache or there are many rows of A to amortise it; otherwise pack K-blocks
    // of long rows.
    if (M >= 256 || K * N * sizeof(float) <= (std::size_t(8) << 20))
        detail::gemm_panels(M, N, K, A, lda, detail::RowMajorPanels{B, ldb}, C, ldc, accumulate, nullptr);
    else
        detail::gemm_packed(M, N, K, A, lda, detail::BRowMajor{B, ldb}, C, ldc, accumulate, nullptr);
#endif
}

// Y[M,N] = X[M,K] · W[N,K]^T + bias[N]  -- PyTorch nn.Linear, W stored [out, in].
// W is float or flamingo::bf16 (see the header comment for the arithmetic); bias may be nullptr.
template <class W>
void linear(std::size_t M, std::size_t N, std::size_t K, const float* X, std::size_t ldx, const W* w,
            std::size_t ldw, const float* bias, float* Y, std::size_t ldy, bool accumulate = false) {
    static_assert(std::is_same_v<W, float> || std::is_same_v<W, bf16>,
                  "linear: weights must be float or flamingo::bf16");
#if FLAMINGO_KERNELS_DISPATCHED
    if constexpr (std::is_same_v<W, bf16>)
        active_kernels().linear_bf16(M, N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
    else
        active_kernels().linear_f32(M, N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
#else
    if (M == 0 || N == 0) return;
    detail::check_matrix("linear", "X", X, M, K, ldx);
    detail::check_matrix("linear", "W", w, N, K, ldw);
    detail::check_matrix("linear", "Y", Y, M, N, ldy);
    if (K == 0) return detail::empty_product(M, N, bias, Y, ldy, accumulate);
#if defined(__AVX512BF16__)
    if constexpr (std::is_same_v<W, bf16>)
        if (M > 1 && M <= detail::kSmallM && detail::bf16_dot_enabled())
            return detail::linear_small_bf16(M, N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
#endif
    if (M <= detail::kSmallM) return detail::linear_small(M, N, K, X, ldx, w, ldw, bias, Y, ldy, accumulate);
#if defined(__AVX512BF16__)
    if constexpr (std::is_same_v<W, bf16>)
        if (detail::bf16_dot_enabled())
            return detail::gemm_panels<detail::WeightPairs, detail::Bf16Dot>(M, N, K, X, ldx, detail::WeightPairs{w, ldw},
                                                                            Y, ldy, accumulate, bias);
#endif
    detail::gemm_panels(M, N, K, X, ldx, detail::WeightRows<W>{w, ldw}, Y, ldy, accumulate, bias);
#endif
}

FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels
