#pragma once
// Elementwise activations, in place on n floats.
//
// The formulas are rearranged so that no result loses accuracy to cancellation:
// PyTorch's 0.5 * x * (1 + erf(x / sqrt 2)) cancels for x << 0, where 1 + erf(...)
// is tiny; erfc(-x / sqrt 2) gives the same quantity accurately. Likewise
// 1 + tanh(u) = 2 * sigmoid(2u). The results therefore agree with PyTorch to
// float rounding where PyTorch itself is accurate, and with the exact function
// elsewhere.
#include <cstddef>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "detail/vmath.hpp"

namespace flamingo::kernels {

FLAMINGO_KERNELS_BEGIN

namespace detail::act_impl {

using vmath::vf;

// Runs body(begin, end) over [0, n), split across threads when n is large.
template <class Body>
inline void for_range(std::size_t n, Body body) {
    if (n >= (std::size_t(1) << 16))
        parallel_for(n, body, 64);
    else if (n)
        body(0, n);
}

template <class Op>
inline void map(float* x, std::size_t n, Op op) {
    for_range(n, [&](std::size_t b, std::size_t e) { vmath::map_inplace(x + b, e - b, op); });
}

inline vf gelu_erf(vf x) { return vf(0.5f) * x * xsimd::erfc(x * vf(-0.70710678118654752f)); }

inline vf gelu_tanh(vf x) {
    // 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
    const vf two_u = vf(2.0f * 0.79788456080286536f) * xsimd::fma(vf(0.044715f) * x, x * x, x);
    return x / (vf(1.0f) + xsimd::exp(-two_u));
}

inline vf silu(vf x) { return x / (vf(1.0f) + xsimd::exp(-x)); }

inline vf quick_gelu(vf x) { return x / (vf(1.0f) + xsimd::exp(x * vf(-1.702f))); }

}  // namespace detail::act_impl

// GELU with the exact erf form (PyTorch's default nn.GELU()).
inline void gelu_erf(float* x, std::size_t n) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().gelu_erf(x, n);
#else
    detail::act_impl::map(x, n, detail::act_impl::gelu_erf);
#endif
}

// GELU with the tanh approximation (nn.GELU(approximate="tanh"), GPT-2's "gelu_new").
inline void gelu_tanh(float* x, std::size_t n) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().gelu_tanh(x, n);
#else
    detail::act_impl::map(x, n, detail::act_impl::gelu_tanh);
#endif
}

// x * sigmoid(1.702 x), OpenAI CLIP's QuickGELU.
inline void quick_gelu(float* x, std::size_t n) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().quick_gelu(x, n);
#else
    detail::act_impl::map(x, n, detail::act_impl::quick_gelu);
#endif
}

// x * sigmoid(x) (SiLU / swish).
inline void silu(float* x, std::size_t n) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().silu(x, n);
#else
    detail::act_impl::map(x, n, detail::act_impl::silu);
#endif
}

// out = silu(gate) * up (LLaMA's MLP); out may alias gate or up.
inline void swiglu(const float* gate, const float* up, float* out, std::size_t n) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().swiglu(gate, up, out, n);
#else
    using namespace detail::act_impl;
    using vmath::W;
    for_range(n, [&](std::size_t b, std::size_t e) {
        std::size_t i = b;
        for (; i + W <= e; i += W)
            (silu(vf::load_unaligned(gate + i)) * vf::load_unaligned(up + i)).store_unaligned(out + i);
        if (i < e) {
            const std::size_t t = e - i;
            const vf g = vmath::load_tail(gate + i, t, 0.0f), u = vmath::load_tail(up + i, t, 0.0f);
            vmath::store_tail(out + i, silu(g) * u, t);
        }
    });
#endif
}

FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels
