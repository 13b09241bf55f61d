#pragma once
// OpenFlamingo's GatedCrossAttentionBlock, placed before a decoder layer:
//   x = attn(norm(x), media) * tanh(attn_gate) + x
//   x = ff(x) * tanh(ff_gate) + x
// The media mask: with only_attend_immediate_media, a text token attends to
// the visual tokens of the last <image> at or before it and text before the
// first image gets a zero attention output; otherwise it attends to all images
// at or before it, and text before the first image gets upstream's masked
// softmax over nothing, i.e. the uniform average over every visual token.
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../core/expr.hpp"
#include "../nn/attention.hpp"
#include "../nn/cross_attention.hpp"
#include "../nn/mlp.hpp"
#include "config.hpp"
#include "perceiver.hpp"
#include "weights.hpp"

namespace flamingo::model {

// The visual tokens' keys and values for every cross-attention layer, projected
// once per prompt and shared by every sequence (beam, candidate) that reads it.
struct MediaKV {
    std::size_t n_media = 0, n_latents = 0;
    std::vector<std::vector<float>> kv;  // per decoder layer [n_media * n_latents, kv_width]; empty where none
};

class GatedCrossAttention {
public:
    GatedCrossAttention() = default;
    GatedCrossAttention(Weights& L, const std::string& p, const CrossAttnConfig& c, std::size_t dim,
                        std::size_t vis_dim)
        : immediate_(c.only_attend_immediate_media) {
        norm_ = L.layer_norm(p + "attn.norm", dim, 1e-5f);
        attn_ = load_cross_attention(L, p + "attn.", dim, vis_dim, std::size_t(c.heads), std::size_t(c.dim_head));
        attn_gate_ = std::tanh(*L.floats(p + "attn_gate", {1}));
        ff_ = load_feed_forward(L, p + "ff.", dim, std::size_t(c.ff_mult) * dim);
        ff_gate_ = std::tanh(*L.floats(p + "ff_gate", {1}));
    }

    std::size_t kv_width() const { return attn_.kv_width(); }

    // Keys and values of the visual tokens [rows, vis_dim] -> kv [rows, kv_width]; once per prompt.
    void project_media(const nn::CAct& visual, const nn::Act& kv) const { attn_.project(visual, kv); }

    std::size_t workspace(std::size_t M) const {
        const std::size_t D = norm_.n;
        return nn::ws_floats(M, D) + 2 * nn::ws_floats(M, attn_.inner()) + 2 * nn::ws_floats(M) + ff_.workspace(M);
    }

    // x [M, D] in place. text_time[i]: the number of <image> tokens at or
    // before row i (for generated tokens: in the whole prompt). The rows of
    // segment s read media[s]'s keys and values of `layer`.
    void operator()(const nn::Act& x, const std::uint32_t* text_time, std::span<const nn::Segment> segments,
                    std::span<const MediaKV* const> media, std::size_t layer, nn::Workspace& ws) const {
        nn::Workspace::Frame frame(ws);
        const std::size_t M = x.extent(0), D = x.extent(1), inner = attn_.inner();
        auto h = ws.rows(M, D);
        auto q = ws.rows(M, inner);
        auto o = ws.rows(M, inner);
        std::uint32_t* lo = ws.indices(M);
        std::uint32_t* hi = ws.indices(M);
        norm_(x, h);
        attn_.query(h, q);
        for (std::size_t s = 0; s < segments.size(); ++s) {
            const nn::Segment& seg = segments[s];
            const MediaKV& mk = *media[s];
            const std::uint32_t n = std::uint32_t(mk.n_latents), all = std::uint32_t(mk.n_media * mk.n_latents);
            for (std::size_t i = seg.row0; i < seg.row0 + seg.rows; ++i) {
                const std::uint32_t t = text_time[i];
                check(t <= mk.n_media, "token ", i, " follows ", t, " <image> tokens but only ", mk.n_media,
                      " media were given");
                if (immediate_) {
                    lo[i] = t ? (t - 1) * n : 0, hi[i] = t ? t * n : 0;
                } else if (t) {
                    lo[i] = 0, hi[i] = t * n;
                } else {  // every score masked alike: softmax is uniform, as zero queries give
                    lo[i] = 0, hi[i] = all;
                    q[i].assign(0.0f);
                }
            }
            const auto rows = [&](const nn::Act& a) { return a.rows(seg.row0, seg.row0 + seg.rows); };
            attn_.attention(rows(q), mk.kv.empty() ? nullptr : mk.kv[layer].data(), mk.n_media * mk.n_latents,
                            lo + seg.row0, hi + seg.row0, rows(o));
        }
        auto y = h;  // the normed input is spent: reuse it for the branches
        attn_.output(o, y);
        x.assign(x + y * attn_gate_);
        ff_(x, y, ws);
        x.assign(x + y * ff_gate_);
    }

private:
    bool immediate_ = true;
    nn::Norm norm_;
    nn::CrossAttention attn_;
    nn::FeedForward ff_;
    float attn_gate_ = 0.0f, ff_gate_ = 0.0f;
};

}  // namespace flamingo::model
