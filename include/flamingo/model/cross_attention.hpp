#pragma once
// OpenFlamingo's GatedCrossAttentionBlock, placed before a decoder layer:
//   x = masked_cross_attn(x, media) * tanh(attn_gate) + x
//   x = ff(x) * tanh(ff_gate) + x
// The media mask: with only_attend_immediate_media, a text token attends to
// the visual tokens of the last <image> at or before it and text before the
// first image gets a zero attention output; otherwise it attends to all images
// at or before it, and text before the first image gets upstream's masked
// softmax over nothing, i.e. the uniform average over every visual token.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/expr.hpp"
#include "../io/config.hpp"
#include "../nn/attention.hpp"
#include "perceiver.hpp"

namespace flamingo::model {

template <std::size_t Dim = dyn, std::size_t VisDim = dyn>
class GatedCrossAttention {
public:
    GatedCrossAttention() = default;
    GatedCrossAttention(nn::WeightLoader& L, const std::string& p, const io::CrossAttnConfig& c, std::size_t dim,
                        std::size_t vis_dim)
        : heads_(std::size_t(c.heads)), dim_head_(std::size_t(c.dim_head)),
          immediate_(c.only_attend_immediate_media) {
        const std::size_t inner = heads_ * dim_head_;
        norm_ = nn::Norm<Dim>::layer_norm(L, p + "attn.norm", dim, 1e-5f);
        to_q_ = nn::Linear<dyn, Dim>::load(L, p + "attn.to_q", inner, dim, false);
        to_kv_ = nn::Linear<dyn, VisDim>::load(L, p + "attn.to_kv", 2 * inner, vis_dim, false);
        to_out_ = nn::Linear<Dim, dyn>::load(L, p + "attn.to_out", dim, inner, false);
        attn_gate_ = std::tanh(*L.floats(p + "attn_gate", {1}));
        ff_ = FeedForward<Dim>::load(L, p + "ff.", dim, std::size_t(c.ff_mult) * dim);
        ff_gate_ = std::tanh(*L.floats(p + "ff_gate", {1}));
    }

    std::size_t kv_width() const { return 2 * heads_ * dim_head_; }

    // Keys and values of the visual tokens [rows, VisDim] -> kv [rows, 2 * inner]; once per prompt.
    void project_media(const float* visual, std::size_t rows, std::size_t vis_dim, float* kv) const {
        to_kv_(nn::CAct<VisDim>(visual, extents<dyn, VisDim>(rows, vis_dim)), nn::act(kv, rows, kv_width(), kv_width()));
    }

    // x [M, Dim] in place. text_time[i]: number of <image> tokens at or before
    // row i (or, for generated tokens, in the whole prompt); kv: project_media
    // of n_media * n_latents visual tokens.
    template <class XV>
    void operator()(const XV& x, const std::uint32_t* text_time, const float* kv, std::size_t n_media,
                    std::size_t n_latents, nn::Scratch& s) const {
        const std::size_t M = x.extent(0), D = x.extent(1), inner = heads_ * dim_head_;
        auto h = s.rows<Dim>(nn::kNormed, M, D);
        norm_(x, h);
        auto q = s.rows(nn::kInner0, M, inner);
        to_q_(h, q);
        std::uint32_t* lo = s.indices(0, M);
        std::uint32_t* hi = s.indices(1, M);
        const std::uint32_t n = std::uint32_t(n_latents), all = std::uint32_t(n_media * n_latents);
        for (std::size_t i = 0; i < M; ++i) {
            const std::uint32_t t = text_time[i];
            check(t <= n_media, "token ", i, " follows ", t, " <image> tokens but only ", n_media, " media were given");
            if (immediate_) {
                lo[i] = t ? (t - 1) * n : 0, hi[i] = t ? t * n : 0;
            } else if (t) {
                lo[i] = 0, hi[i] = t * n;
            } else {  // every score masked alike: softmax is uniform, as zero queries give
                lo[i] = 0, hi[i] = all;
                std::fill_n(q.data() + i * inner, inner, 0.0f);
            }
        }
        auto o = s.rows(nn::kInner1, M, inner);
        kernels::AttentionArgs a;
        a.n_q = M, a.n_kv = n_media * n_latents;
        a.n_heads = a.n_kv_heads = heads_, a.head_dim = dim_head_;
        a.q = q.data(), a.q_row_stride = inner, a.q_head_stride = dim_head_;
        a.k = kv, a.k_row_stride = 2 * inner, a.k_head_stride = dim_head_;
        a.v = kv + inner, a.v_row_stride = 2 * inner, a.v_head_stride = dim_head_;
        a.out = o.data(), a.out_row_stride = inner, a.out_head_stride = dim_head_;
        a.scale = 1.0f / std::sqrt(float(dim_head_));
        a.kv_begin = lo, a.kv_end = hi;
        if (a.n_kv == 0) std::fill_n(o.data(), M * inner, 0.0f);
        else kernels::attention(a);
        auto y = s.rows<Dim>(nn::kBranch, M, D);
        to_out_(o, y);
        x.assign(x + y * attn_gate_);
        ff_(x, y, s, /*accumulate=*/false);
        x.assign(x + y * ff_gate_);
    }

private:
    std::size_t heads_ = 0, dim_head_ = 0;
    bool immediate_ = true;
    nn::Norm<Dim> norm_;
    nn::Linear<dyn, Dim> to_q_;
    nn::Linear<dyn, VisDim> to_kv_;
    nn::Linear<Dim, dyn> to_out_;
    FeedForward<Dim> ff_;
    float attn_gate_ = 0.0f, ff_gate_ = 0.0f;
};

}  // namespace flamingo::model
