#pragma once
// LayerNorm and RMSNorm over rows.
//
// LayerNorm follows PyTorch: biased variance, (x - mean) / sqrt(var + eps) * gamma + beta.
// Mean and variance are two passes (float partial sums, added in double), which
// keeps the error near float rounding even for rows with a large common offset.
#include <cmath>
#include <cstddef>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "detail/vmath.hpp"

namespace flamingo::kernels {

FLAMINGO_KERNELS_BEGIN

namespace detail::norm_impl {

using vmath::vf;
using vmath::W;

// sum of (x[i] - c)^P for P = 1 or 2.
template <int P>
inline double sum_pow(const float* x, std::size_t n, float c) {
    const vf cv(c);
    return vmath::sum_blocks(n, [&](std::size_t i, std::size_t len) {
        vf v = (len == W ? vf::load_unaligned(x + i) : vmath::load_tail(x + i, len, c)) - cv;  // padding gives 0
        if constexpr (P == 2) v *= v;
        return v;
    });
}

// y = ((x - shift) * scale) * gamma + beta, gamma and beta optional.
inline void affine(const float* x, float* y, std::size_t n, float shift, float scale, const float* gamma,
                   const float* beta) {
    using vmath::load_tail;
    const vf s(shift), r(scale);
    auto f = [&](vf v, std::size_t i, std::size_t len) {
        v = (v - s) * r;
        if (gamma) v *= len == W ? vf::load_unaligned(gamma + i) : load_tail(gamma + i, len, 0.0f);
        if (beta) v += len == W ? vf::load_unaligned(beta + i) : load_tail(beta + i, len, 0.0f);
        return v;
    };
    std::size_t i = 0;
    for (; i + W <= n; i += W) f(vf::load_unaligned(x + i), i, W).store_unaligned(y + i);
    if (i < n) vmath::store_tail(y + i, f(load_tail(x + i, n - i, 0.0f), i, n - i), n - i);
}

template <class Row>
inline void for_rows(std::size_t rows, std::size_t n, Row row) {
    auto body = [&](std::size_t begin, std::size_t end) {
        for (std::size_t r = begin; r < end; ++r) row(r);
    };
    if (rows > 1 && rows * n >= (std::size_t(1) << 15))
        parallel_for(rows, body);
    else
        body(0, rows);
}

}  // namespace detail::norm_impl

// y[r, :] = LayerNorm(x[r, :]) for r < rows; rows of n floats, ldx / ldy apart.
// gamma and beta (n floats each) may be nullptr. y may equal x (with ldy == ldx).
inline void layer_norm_rows(const float* x, std::size_t ldx, float* y, std::size_t ldy, std::size_t rows,
                            std::size_t n, const float* gamma, const float* beta, float eps) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().layer_norm_rows(x, ldx, y, ldy, rows, n, gamma, beta, eps);
#else
    using namespace detail::norm_impl;
    if (rows == 0 || n == 0) return;
    check(rows == 1 || (ldx >= n && ldy >= n), "layer_norm_rows: row strides ", ldx, ", ", ldy,
          " are smaller than the row length ", n);
    for_rows(rows, n, [&](std::size_t r) {
        const float* xr = x + r * ldx;
        const float mean = float(sum_pow<1>(xr, n, 0.0f) / double(n));
        const float var = float(sum_pow<2>(xr, n, mean) / double(n));
        affine(xr, y + r * ldy, n, mean, 1.0f / std::sqrt(var + eps), gamma, beta);
    });
#endif
}

// y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * gamma (LLaMA's RMSNorm); gamma may be nullptr.
inline void rms_norm_rows(const float* x, std::size_t ldx, float* y, std::size_t ldy, std::size_t rows,
                          std::size_t n, const float* gamma, float eps) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().rms_norm_rows(x, ldx, y, ldy, rows, n, gamma, eps);
#else
    using namespace detail::norm_impl;
    if (rows == 0 || n == 0) return;
    check(rows == 1 || (ldx >= n && ldy >= n), "rms_norm_rows: row strides ", ldx, ", ", ldy,
          " are smaller than the row length ", n);
    for_rows(rows, n, [&](std::size_t r) {
        const float* xr = x + r * ldx;
        const float ms = float(sum_pow<2>(xr, n, 0.0f) / double(n));
        affine(xr, y + r * ldy, n, 0.0f, 1.0f / std::sqrt(ms + eps), gamma, nullptr);
    });
#endif
}

FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels
