#pragma once
// Rotary position embedding, "rotate_half" form (Hugging Face LLaMA, GPT-NeoX):
// the first rot_dim dims of a head are split into halves x1, x2 and become
//   x1 * cos - x2 * sin,   x2 * cos + x1 * sin,
// with frequency i (i < rot_dim / 2) used by both element i and element i + rot_dim / 2.
// Dims past rot_dim are left as they are (GPT-NeoX's rotary_pct < 1).
#include <cmath>
#include <cstddef>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "detail/vmath.hpp"

namespace flamingo::kernels {

// cos and sin of pos * inv_freq[i] for every position below max_positions.
//
// The values follow the Hugging Face recipe step by step in float32, since at
// position 2048 one float ulp of the angle already moves cos by ~1e-4:
//   inv_freq[i] = 1 / theta^(float(2i) / rot_dim)     (float32 power and reciprocal)
//   angle       = float(pos) * inv_freq[i]            (float32 product)
//   cos, sin    = of that float angle, correctly rounded to float.
// PyTorch computes the power with a vectorised powf that is off by one ulp for
// a few (rot_dim, theta) pairs; we round the exact power, which matches it in
// all other cases.
class RopeTable {
public:
    RopeTable() = default;

    RopeTable(std::size_t rot_dim, float theta, std::size_t max_positions)
        : rot_dim_(rot_dim), max_positions_(max_positions), theta_(theta) {
        check(rot_dim > 0 && rot_dim % 2 == 0, "RopeTable: rotary dimension must be even and positive, got ",
              rot_dim);
        check(std::isfinite(theta) && theta > 0.0f, "RopeTable: rope theta must be positive, got ", theta);
        // Positions are float32 in the reference; beyond 2^24 they stop being exact.
        check(max_positions >= 1 && max_positions <= (std::size_t(1) << 24),
              "RopeTable: max positions must be in [1, 2^24], got ", max_positions);
        const std::size_t h = rot_dim / 2;
        check(h <= (std::size_t(1) << 25) / max_positions, "RopeTable: table of ", max_positions, " positions x ",
              rot_dim, " dims is too large (limit 2^25 cos/sin pairs)");
        inv_freq_.resize(h);
        for (std::size_t i = 0; i < h; ++i) {
            const float e = float(2 * i) / float(rot_dim);
            const float p = float(std::pow(double(theta), double(e)));
            inv_freq_[i] = 1.0f / p;
        }
        cos_.resize(max_positions * h);
        sin_.resize(max_positions * h);
        for (std::size_t pos = 0; pos < max_positions; ++pos)
            for (std::size_t i = 0; i < h; ++i) {
                const float angle = float(pos) * inv_freq_[i];
                cos_[pos * h + i] = float(std::cos(double(angle)));
                sin_[pos * h + i] = float(std::sin(double(angle)));
            }
    }

    std::size_t rot_dim() const { return rot_dim_; }
    std::size_t max_positions() const { return max_positions_; }
    float theta() const { return theta_; }
    const float* inv_freq() const { return inv_freq_.data(); }
    // rot_dim / 2 values for position pos < max_positions().
    const float* cos(std::size_t pos) const { return cos_.data() + pos * (rot_dim_ / 2); }
    const float* sin(std::size_t pos) const { return sin_.data() + pos * (rot_dim_ / 2); }

private:
    std::size_t rot_dim_ = 0, max_positions_ = 0;
    float theta_ = 0.0f;
    std::vector<float> inv_freq_, cos_, sin_;
};

FLAMINGO_KERNELS_BEGIN

namespace detail::rope_impl {

inline void rotate(float* x, const float* c, const float* s, std::size_t h) {
    using namespace vmath;
    float* x2p = x + h;
    auto step = [&](std::size_t i, std::size_t len) {
        const bool full = len == W;
        const vf x1 = full ? vf::load_unaligned(x + i) : load_tail(x + i, len, 0.0f);
        const vf x2 = full ? vf::load_unaligned(x2p + i) : load_tail(x2p + i, len, 0.0f);
        const vf cv = full ? vf::load_unaligned(c + i) : load_tail(c + i, len, 0.0f);
        const vf sv = full ? vf::load_unaligned(s + i) : load_tail(s + i, len, 0.0f);
        const vf y1 = x1 * cv - x2 * sv;
        const vf y2 = x2 * cv + x1 * sv;
        if (full) {
            y1.store_unaligned(x + i);
            y2.store_unaligned(x2p + i);
        } else {
            store_tail(x + i, y1, len);
            store_tail(x2p + i, y2, len);
        }
    };
    std::size_t i = 0;
    for (; i + W <= h; i += W) step(i, W);
    if (i < h) step(i, h - i);
}

}  // namespace detail::rope_impl

// Rotates, in place, the first rot_dim dims of each of n_heads heads in each of
// n_rows rows: element d of head hd in row r is x[r * row_stride + hd * head_stride + d],
// and row r is at position pos0 + r.
inline void apply_rope(float* x, std::size_t n_rows, std::size_t row_stride, std::size_t n_heads,
                       std::size_t head_stride, std::size_t rot_dim, std::size_t pos0, const RopeTable& table) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().apply_rope(x, n_rows, row_stride, n_heads, head_stride, rot_dim, pos0, table);
#else
    if (n_rows == 0 || n_heads == 0) return;
    check(rot_dim == table.rot_dim(), "apply_rope: rotary dimension ", rot_dim, " but the table is for ",
          table.rot_dim());
    check(pos0 <= table.max_positions() && n_rows <= table.max_positions() - pos0, "apply_rope: positions ", pos0,
          "..", pos0 + n_rows - 1, " exceed the rotary table's ", table.max_positions(), " positions");
    const std::size_t h = rot_dim / 2;
    auto body = [&](std::size_t begin, std::size_t end) {
        for (std::size_t r = begin; r < end; ++r)
            for (std::size_t hd = 0; hd < n_heads; ++hd)
                detail::rope_impl::rotate(x + r * row_stride + hd * head_stride, table.cos(pos0 + r),
                                          table.sin(pos0 + r), h);
    };
    if (n_rows > 1 && n_rows * n_heads * rot_dim >= (std::size_t(1) << 15))
        parallel_for(n_rows, body);
    else
        body(0, n_rows);
#endif
}

FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels
