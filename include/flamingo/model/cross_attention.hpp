#pragma once
// The gated cross-attention block placed before a decoder layer, as
// OpenFlamingo (GatedCrossAttentionBlock) and IDEFICS
// (IdeficsGatedCrossAttentionLayer) have it:
//   x = x + attn_gate * attn(norm(x), media)
//   x = x + ff_gate * ff(x)                      ff: its own norm, then an MLP
// The two differ only in parts, which their loaders choose (OpenFlamingo's
// below, IDEFICS's in idefics.hpp): LayerNorm and a GELU MLP or RMSNorm and
// SwiGLU; fused or separate k/v projections and per-head q/k norms
// (nn::CrossAttention); gates tanh(alpha) of one float or one per channel.
// The media mask: with only_attend_immediate_media (IDEFICS always), a text
// token attends to the visual tokens of the last <image> at or before it and
// text with none gets a zero attention output; otherwise it attends to all
// images at or before it, and text before the first image gets upstream's
// masked softmax over nothing, i.e. the uniform average over every visual token.
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
    struct Parts {
        nn::Norm norm;
        nn::CrossAttention attn;
        nn::FeedForward ff;
        std::vector<float> attn_gate, ff_gate;  // tanh(alpha): one value, or one per channel
        bool only_attend_immediate_media = true;
    };

    GatedCrossAttention() = default;
    explicit GatedCrossAttention(Parts p) : p_(std::move(p)) {
        const std::size_t D = p_.norm.n;
        for (const auto* g : {&p_.attn_gate, &p_.ff_gate})
            check(g->size() == 1 || g->size() == D, ErrorKind::Shape, "cross-attention gate of ", g->size(),
                  " values for width ", D);
    }

    std::size_t kv_width() const { return p_.attn.kv_width(); }

    // Keys and values of the visual tokens [rows, vis_dim] -> kv [rows, kv_width]; once per prompt.
    void project_media(const nn::CAct& visual, const nn::Act& kv) const { p_.attn.project(visual, kv); }

    std::size_t workspace(std::size_t M) const {
        const std::size_t D = p_.norm.n;
        return nn::ws_floats(M, D) + 2 * nn::ws_floats(M, p_.attn.inner()) + 2 * nn::ws_floats(M) +
               p_.ff.workspace(M);
    }

    // x [M, D] in place. text_time[i]: the number of <image> tokens at or
    // before row i (for generated tokens: in the whole prompt), 0 for a row
    // that sees no image. The rows of segment s read media[s]'s keys and
    // values of `layer`.
    void operator()(const nn::Act& x, const std::uint32_t* text_time, std::span<const nn::Segment> segments,
                    std::span<const MediaKV* const> media, std::size_t layer, nn::Workspace& ws) const {
        nn::Workspace::Frame frame(ws);
        const std::size_t M = x.extent(0), D = x.extent(1), inner = p_.attn.inner();
        auto h = ws.rows(M, D);
        auto q = ws.rows(M, inner);
        auto o = ws.rows(M, inner);
        std::uint32_t* lo = ws.indices(M);
        std::uint32_t* hi = ws.indices(M);
        p_.norm(x, h);
        p_.attn.query(h, q);
        nn::for_each_segment(segments, [&](const nn::Segment& seg) {
            const MediaKV& mk = *media[std::size_t(&seg - segments.data())];
            const std::uint32_t n = std::uint32_t(mk.n_latents), all = std::uint32_t(mk.n_media * mk.n_latents);
            for (std::size_t i = seg.row0; i < seg.row0 + seg.rows; ++i) {
                const std::uint32_t t = text_time[i];
                check(t <= mk.n_media, "token ", i, " follows ", t, " <image> tokens but only ", mk.n_media,
                      " media were given");
                if (p_.only_attend_immediate_media) {
                    lo[i] = t ? (t - 1) * n : 0, hi[i] = t ? t * n : 0;
                } else if (t) {
                    lo[i] = 0, hi[i] = t * n;
                } else {  // every score masked alike: softmax is uniform, as zero queries give
                    lo[i] = 0, hi[i] = all;
                    q[i].assign(0.0f);
                }
            }
            const auto rows = [&](const nn::Act& a) { return a.rows(seg.row0, seg.row0 + seg.rows); };
            p_.attn.attention(rows(q), mk.kv.empty() ? nullptr : mk.kv[layer].data(), mk.n_media * mk.n_latents,
                              lo + seg.row0, hi + seg.row0, rows(o));
        });
        auto y = h;  // the normed input is spent: reuse it for the branches
        p_.attn.output(o, y);
        add_gated(x, y, p_.attn_gate);
        p_.ff(x, y, ws);
        add_gated(x, y, p_.ff_gate);
    }

private:
    static void add_gated(const nn::Act& x, const nn::Act& y, const std::vector<float>& g) {
        if (g.size() == 1) x.assign(x + y * g[0]);
        else x.assign(x + y * make_view(g.data(), dextents<1>(g.size())));
    }

    Parts p_;
};

// OpenFlamingo's block under its names (gated_cross_attn_layer.*).
inline GatedCrossAttention load_gated_cross_attention(Weights& L, const std::string& p, const CrossAttnConfig& c,
                                                      std::size_t dim, std::size_t vis_dim) {
    GatedCrossAttention::Parts b;
    b.norm = L.layer_norm(p + "attn.norm", dim, 1e-5f);
    b.attn = load_cross_attention(L, p + "attn.", dim, vis_dim, std::size_t(c.heads), std::size_t(c.dim_head));
    b.attn_gate = {std::tanh(*L.floats(p + "attn_gate", {1}))};
    b.ff = load_feed_forward(L, p + "ff.", dim, std::size_t(c.ff_mult) * dim);
    b.ff_gate = {std::tanh(*L.floats(p + "ff_gate", {1}))};
    b.only_attend_immediate_media = c.only_attend_immediate_media;
    return GatedCrossAttention(std::move(b));
}

}  // namespace flamingo::model
