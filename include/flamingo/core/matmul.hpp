#pragma once
// Matrix product of tensors and views: C = A · B, shapes [M, K] · [K, N].
// Contiguous rows go straight to the GEMM kernel; a transposed B (a view of a
// [N, K] matrix, as PyTorch stores Linear weights) uses the A · W^T kernel;
// any other layout is packed into a contiguous copy first.
#include <type_traits>

#include "../kernels/gemm.hpp"
#include "expr.hpp"

namespace flamingo {

namespace detail {
template <class X>
auto as_view(const X& x) {
    if constexpr (is_tensor<X>::value) return x.view();
    else return x;
}
}  // namespace detail

template <class A, class B>
    requires((is_tensor<A>::value || is_tensor_view<A>::value) && (is_tensor<B>::value || is_tensor_view<B>::value))
auto matmul(const A& a_in, const B& b_in) {
    auto a = detail::as_view(a_in);
    auto b = detail::as_view(b_in);
    using EA = typename decltype(a)::extents_type;
    using EB = typename decltype(b)::extents_type;
    static_assert(EA::rank() == 2 && EB::rank() == 2, "matmul: both operands must be matrices (rank 2)");
    static_assert(extents_compatible(EA::static_extent(1), EB::static_extent(0)),
                  "matmul: inner dimensions differ ([M, K] · [K, N] needs equal K)");
    static_assert(std::is_same_v<typename decltype(a)::value_type, float> &&
                      std::is_same_v<typename decltype(b)::value_type, float>,
                  "matmul: float operands");
    const std::size_t M = a.extent(0), K = a.extent(1), N = b.extent(1);
    check(b.extent(0) == K, "matmul: cannot multiply ", shape_string(a.extents()), " by ", shape_string(b.extents()));
    using Out = extents<EA::static_extent(0), EB::static_extent(1)>;
    Tensor<float, Out> c{Out(M, N)};
    if (M == 0 || N == 0) return c;
    // Row-contiguous copies of operands whose rows are not contiguous.
    Matrix<> ac, bc;
    const float* pa = a.data();
    std::size_t lda = std::size_t(a.stride(0));
    if (a.stride(1) != 1 || a.stride(0) < std::ptrdiff_t(K)) {
        ac = Matrix<>(M, K);
        ac = a;
        pa = ac.data(), lda = K;
    }
    if (b.stride(1) == 1 && b.stride(0) >= std::ptrdiff_t(N)) {
        kernels::matmul(M, N, K, pa, lda, b.data(), std::size_t(b.stride(0)), c.data(), N);
    } else if (b.stride(0) == 1 && b.stride(1) >= std::ptrdiff_t(K)) {  // B^T is row-major [N, K]
        kernels::linear(M, N, K, pa, lda, b.data(), std::size_t(b.stride(1)), nullptr, c.data(), N);
    } else {
        bc = Matrix<>(K, N);
        bc = b;
        kernels::matmul(M, N, K, pa, lda, bc.data(), N, c.data(), N);
    }
    return c;
}

}  // namespace flamingo
