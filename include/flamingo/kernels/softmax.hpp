#pragma once
// Row-wise softmax, in place, numerically stable: exp(x - max) / sum.
#include <cstddef>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "detail/vmath.hpp"

namespace flamingo::kernels {

FLAMINGO_KERNELS_BEGIN

namespace detail::softmax_impl {

inline float row_max(const float* x, std::size_t n) {
    using namespace vmath;
    vf m0(-kInf), m1(-kInf), m2(-kInf), m3(-kInf);
    std::size_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        m0 = xsimd::max(m0, vf::load_unaligned(x + i));
        m1 = xsimd::max(m1, vf::load_unaligned(x + i + W));
        m2 = xsimd::max(m2, vf::load_unaligned(x + i + 2 * W));
        m3 = xsimd::max(m3, vf::load_unaligned(x + i + 3 * W));
    }
    for (; i + W <= n; i += W) m0 = xsimd::max(m0, vf::load_unaligned(x + i));
    if (i < n) m1 = xsimd::max(m1, load_tail(x + i, n - i, -kInf));
    return hmax(xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3)));
}

// x = exp(x - shift); returns the sum of the new values.
inline float exp_shift_sum(float* x, std::size_t n, float shift) {
    using namespace vmath;
    const vf s(shift);
    return float(sum_blocks(n, [&](std::size_t i, std::size_t len) {
        if (len == W) {
            const vf e = xsimd::exp(vf::load_unaligned(x + i) - s);
            e.store_unaligned(x + i);
            return e;
        }
        const vf e = xsimd::exp(load_tail(x + i, len, -kInf) - s);  // padding lanes give exp(-inf) = 0
        store_tail(x + i, e, len);
        return e;
    }));
}

inline void softmax_row(float* x, std::size_t n) {
    const float m = row_max(x, n);
    const float sum = exp_shift_sum(x, n, m);
    const vmath::vf r(1.0f / sum);
    vmath::map_inplace(x, n, [&](vmath::vf v) { return v * r; });
}

}  // namespace detail::softmax_impl

// Softmax over each of `rows` rows of `cols` floats, rows `ld` floats apart.
// Like PyTorch, a row whose maximum is -inf or +inf becomes NaN.
inline void softmax_rows(float* x, std::size_t rows, std::size_t cols, std::size_t ld) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().softmax_rows(x, rows, cols, ld);
#else
    if (rows == 0 || cols == 0) return;
    check(rows == 1 || ld >= cols, "softmax_rows: row stride ", ld, " is smaller than the row length ", cols);
    auto body = [&](std::size_t begin, std::size_t end) {
        for (std::size_t r = begin; r < end; ++r) detail::softmax_impl::softmax_row(x + r * ld, cols);
    };
    if (rows > 1 && rows * cols >= (std::size_t(1) << 15))
        parallel_for(rows, body);
    else
        body(0, rows);
#endif
}

FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels
