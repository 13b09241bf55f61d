#pragma once
// Multi-head attention of queries from one sequence over keys and values
// projected from another, each query row restricted to a range of key rows.
// It is one operation in OpenFlamingo, used twice:
//   Perceiver:  latents attend to [media features; latents], per medium;
//   Flamingo:   text attends to the visual tokens of its image(s).
//
//   q  = to_q(x)                    [M, heads * dim_head]
//   kv = to_kv(context)             [N, 2 * heads * dim_head]   (k | v)
//   y  = to_out(softmax(q k^T / sqrt(dim_head)) v)
// Query row i sees key rows [lo[i], hi[i]); an empty range gives a zero row.
// IDEFICS stores k and v as two projections (to_k, to_v, to_kv empty) and may
// normalise each head's q and k (q_norm, k_norm: LayerNorm in its Perceiver,
// RMSNorm in its gated cross-attention).
#include <cmath>
#include <cstdint>
#include <optional>

#include "../kernels/attention.hpp"
#include "linear.hpp"
#include "norm.hpp"
#include "workspace.hpp"

namespace flamingo::nn {

struct CrossAttention {
    Linear to_q, to_kv, to_out;  // no biases in OpenFlamingo
    Linear to_k, to_v;           // instead of to_kv when it is empty
    std::optional<Norm> q_norm, k_norm;  // of each head's dim_head values
    std::size_t heads = 0, dim_head = 0;

    std::size_t inner() const { return heads * dim_head; }
    std::size_t kv_width() const { return 2 * inner(); }

    // q [M, inner] = to_q(x [M, width]), each head normed with q_norm.
    void query(const CAct& x, const Act& q) const {
        to_q(x, q);
        if (q_norm)  // q [M, heads * dim_head] rows are [M * heads, dim_head] (contiguous)
            for (std::size_t h = 0; h < heads; ++h) (*q_norm)(columns(q, h * dim_head, dim_head), columns(q, h * dim_head, dim_head));
    }

    // kv [N, kv_width] = (k | v) of context [N, context width], each head of k normed with k_norm.
    void project(const CAct& context, const Act& kv) const {
        if (to_kv.empty()) {
            to_k(context, columns(kv, 0, inner()));
            to_v(context, columns(kv, inner(), inner()));
        } else {
            to_kv(context, kv);
        }
        if (k_norm)
            for (std::size_t h = 0; h < heads; ++h) (*k_norm)(columns(kv, h * dim_head, dim_head), columns(kv, h * dim_head, dim_head));
    }

    // o [M, inner] = softmax(q k^T / sqrt(dim_head)) v, row i over kv rows [lo[i], hi[i]).
    void attention(const CAct& q, const float* kv, std::size_t n_kv, const std::uint32_t* lo,
                   const std::uint32_t* hi, const Act& o) const {
        const std::size_t M = q.extent(0), D = inner();
        check(o.extent(0) == M && o.extent(1) == D && q.extent(1) == D, ErrorKind::Shape,
              "cross-attention: queries ", shape_string(q.extents()), " and output ", shape_string(o.extents()),
              " do not fit ", heads, " heads of ", dim_head);
        if (M == 0) return;
        if (n_kv == 0) {
            o.assign(0.0f);
            return;
        }
        kernels::AttentionArgs a;
        a.n_q = M, a.n_kv = n_kv;
        a.n_heads = a.n_kv_heads = heads, a.head_dim = dim_head;
        a.q = q.data(), a.q_row_stride = std::size_t(q.stride(0)), a.q_head_stride = dim_head;
        a.k = kv, a.k_row_stride = kv_width(), a.k_head_stride = dim_head;
        a.v = kv + D, a.v_row_stride = kv_width(), a.v_head_stride = dim_head;
        a.out = o.data(), a.out_row_stride = std::size_t(o.stride(0)), a.out_head_stride = dim_head;
        a.scale = 1.0f / std::sqrt(float(dim_head));
        a.kv_begin = lo, a.kv_end = hi;
        kernels::attention(a);
    }

    // y (+)= to_out(o).
    void output(const CAct& o, const Act& y, bool accumulate = false) const { to_out(o, y, accumulate); }
};

}  // namespace flamingo::nn
