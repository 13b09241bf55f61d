// The kernel table of one instruction set; included by kernels_<set>.cpp, each
// compiled with that set's flags (CMakeLists.txt). FLAMINGO_KERNELS_NS, chosen
// by the includer, keeps this copy of the inline kernels apart from every other
// (see kernels/detail/isa.hpp); FLAMINGO_KERNELS_TABLE_TU makes the entry points
// run their own bodies rather than dispatch.
#if !defined(FLAMINGO_KERNELS_NS) || !defined(FLAMINGO_KERNELS_TABLE_NAME)
#error "define FLAMINGO_KERNELS_NS and FLAMINGO_KERNELS_TABLE_NAME before including kernels_table.hpp"
#endif
#define FLAMINGO_KERNELS_TABLE_TU 1

#include <flamingo/kernels/activation.hpp>
#include <flamingo/kernels/attention.hpp>
#include <flamingo/kernels/dispatch.hpp>
#include <flamingo/kernels/gemm.hpp>
#include <flamingo/kernels/norm.hpp>
#include <flamingo/kernels/quant.hpp>
#include <flamingo/kernels/rope.hpp>
#include <flamingo/kernels/softmax.hpp>

namespace flamingo::kernels {

// Named in the namespace of its set like everything else here; src/dispatch.cpp
// declares the three the same way.
namespace FLAMINGO_KERNELS_NS {
extern const KernelTable FLAMINGO_KERNELS_TABLE_NAME;
const KernelTable FLAMINGO_KERNELS_TABLE_NAME = {
    FLAMINGO_KERNELS_ISA,
    FLAMINGO_KERNELS_DESCRIPTION,
    detail::kBf16Dot,
    [](std::size_t M, std::size_t N, std::size_t K, const float* A, std::size_t lda, const float* B, std::size_t ldb,
       float* C, std::size_t ldc, bool acc) { matmul(M, N, K, A, lda, B, ldb, C, ldc, acc); },
    [](std::size_t M, std::size_t N, std::size_t K, const float* X, std::size_t ldx, const float* w, std::size_t ldw,
       const float* bias, float* Y, std::size_t ldy, bool acc) { linear(M, N, K, X, ldx, w, ldw, bias, Y, ldy, acc); },
    [](std::size_t M, std::size_t N, std::size_t K, const float* X, std::size_t ldx, const bf16* w, std::size_t ldw,
       const float* bias, float* Y, std::size_t ldy, bool acc) { linear(M, N, K, X, ldx, w, ldw, bias, Y, ldy, acc); },
    [](std::size_t M, const float* X, std::size_t ldx, const QMatrix& W, const float* bias, float* Y, std::size_t ldy,
       bool acc) { linear_q(M, X, ldx, W, bias, Y, ldy, acc); },
    &attention,
    &softmax_rows,
    &layer_norm_rows,
    &rms_norm_rows,
    &gelu_erf,
    &gelu_tanh,
    &quick_gelu,
    &silu,
    &swiglu,
    &apply_rope,
};
}  // namespace FLAMINGO_KERNELS_NS

}  // namespace flamingo::kernels
