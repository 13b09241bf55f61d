#pragma once
// Small SIMD helpers shared by the transformer kernels (softmax, norms,
// activations, rotary embedding, attention).
//
// The vector width is the one xsimd picks from the compiler flags (-march):
// 16 floats with AVX-512, 8 with AVX2, 4 with SSE. Every kernel handles the
// last n % width elements by copying them through a padded stack array, so
// no kernel reads or writes past the end of its arrays.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <new>

// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 intrinsics
// (_mm512_undefined_*) when xsimd's exp/erf are inlined; the values are unused.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <xsimd/xsimd.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "isa.hpp"

namespace flamingo::kernels {
FLAMINGO_KERNELS_BEGIN
namespace vmath {

using vf = xsimd::batch<float>;
using vb = xsimd::batch_bool<float>;
inline constexpr std::size_t W = vf::size;
inline constexpr float kInf = std::numeric_limits<float>::infinity();

// Loads n < W floats, the other lanes set to `fill`.
inline vf load_tail(const float* p, std::size_t n, float fill) {
    alignas(64) float buf[W];
    for (std::size_t i = 0; i < W; ++i) buf[i] = i < n ? p[i] : fill;
    return vf::load_aligned(buf);
}

// Stores the first n < W lanes.
inline void store_tail(float* p, vf v, std::size_t n) {
    alignas(64) float buf[W];
    v.store_aligned(buf);
    std::memcpy(p, buf, n * sizeof(float));
}

inline float hsum(vf v) { return xsimd::hadd(v); }

inline float hmax(vf v) {
    alignas(64) float buf[W];
    v.store_aligned(buf);
    float m = buf[0];
    for (std::size_t i = 1; i < W; ++i) m = std::max(m, buf[i]);
    return m;
}

// x[i] = op(x[i]) for a vector op, tails included.
template <class Op>
inline void map_inplace(float* x, std::size_t n, Op op) {
    std::size_t i = 0;
    for (; i + W <= n; i += W) op(vf::load_unaligned(x + i)).store_unaligned(x + i);
    if (i < n) store_tail(x + i, op(load_tail(x + i, n - i, 0.0f)), n - i);
}

// Marks v as living in a register. In the attention micro-kernels GCC would
// otherwise fold the reused vector loads into every FMA, doubling the loads
// per FMA and making the loops load-bound.
inline void pin(vf& v) {
#if defined(__GNUC__)
    auto r = static_cast<typename vf::register_type>(v);
    asm("" : "+v"(r));
    v = vf(r);
#else
    (void)v;
#endif
}

// Sum of f(i, len) over the vectors of [0, n): f gets the start i and the lane
// count len (W, or n - i for the tail) and returns a vector to add. Partial sums
// stay in float within blocks of 1024 elements and are added up in double, so
// the error does not grow with n (a 50k-wide row) or shrink with W (SSE).
template <class F>
inline double sum_blocks(std::size_t n, F f) {
    constexpr std::size_t kBlock = 1024;
    double total = 0.0;
    std::size_t i = 0;
    while (i < n) {
        const std::size_t end = std::min(n, i + kBlock);
        vf a0(0.0f), a1(0.0f);
        for (; i + 2 * W <= end; i += 2 * W) {
            a0 += f(i, W);
            a1 += f(i + W, W);
        }
        for (; i + W <= end; i += W) a0 += f(i, W);
        if (i < end) {
            a1 += f(i, end - i);
            i = end;
        }
        total += double(hsum(a0 + a1));
    }
    return total;
}

// 1 / (1 + exp(-x)) without overflow trouble: exp(-x) = inf gives 0, as it should.
inline vf sigmoid(vf x) { return vf(1.0f) / (vf(1.0f) + xsimd::exp(-x)); }

// A 64-byte aligned float array (aligned vector loads; no std::vector
// value-initialisation cost on the hot path).
class Buffer {
public:
    Buffer() = default;
    explicit Buffer(std::size_t n) { resize(n); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { release(); }

    // Grows to at least n floats; contents are not preserved.
    void resize(std::size_t n) {
        if (n <= cap_) return;
        release();
        data_ = static_cast<float*>(::operator new(n * sizeof(float), std::align_val_t{64}));
        cap_ = n;
    }
    float* data() { return data_; }
    const float* data() const { return data_; }
    std::size_t size() const { return cap_; }

private:
    void release() {
        if (data_) ::operator delete(data_, std::align_val_t{64});
        data_ = nullptr;
        cap_ = 0;
    }
    float* data_ = nullptr;
    std::size_t cap_ = 0;
};

}  // namespace vmath
FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels
