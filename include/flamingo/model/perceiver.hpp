#pragma once
// OpenFlamingo's PerceiverResampler: a fixed set of learned latents attends to
// each medium's vision features (concatenated with the latents themselves),
// giving num_latents visual tokens per image or video.
//
//   x = features (+ frame_embs[frame]) (+ media_time_embs[medium])
//   for each layer:
//       latents = attn(norm_media(x), norm_latents(latents)) + latents
//       latents = ff(latents) + latents
//   return norm(latents)
// where attn(x, l) = to_out(softmax(to_q(l) k^T / sqrt(dim_head)) v),
//       k, v = to_kv([x; l])
// IDEFICS's (PerceiverConfig::idefics) is the same under its own names, with
// separate k/v projections, optional LayerNorms of each head's q and k before
// the scores, and a ReLU MLP; no frame or media-time embeddings.
#include <optional>
#include <string>
#include <vector>

#include "../core/expr.hpp"
#include "../nn/cross_attention.hpp"
#include "../nn/mlp.hpp"
#include "config.hpp"
#include "weights.hpp"

namespace flamingo::model {

// OpenFlamingo's FeedForward: LayerNorm, Linear, GELU, Linear, no biases.
inline nn::FeedForward load_feed_forward(Weights& L, const std::string& p, std::size_t dim, std::size_t inner) {
    nn::FeedForward f;
    f.norm = L.layer_norm(p + "0", dim, 1e-5f);
    f.mlp.up = L.linear(p + "1", inner, dim, false);
    f.mlp.down = L.linear(p + "3", dim, inner, false);
    f.mlp.act = nn::Activation::GeluErf;
    return f;
}

inline nn::CrossAttention load_cross_attention(Weights& L, const std::string& p, std::size_t dim,
                                               std::size_t context_dim, std::size_t heads, std::size_t dim_head) {
    nn::CrossAttention a;
    a.heads = heads, a.dim_head = dim_head;
    a.to_q = L.linear(p + "to_q", heads * dim_head, dim, false);
    a.to_kv = L.linear(p + "to_kv", 2 * heads * dim_head, context_dim, false);
    a.to_out = L.linear(p + "to_out", dim, heads * dim_head, false);
    return a;
}

class PerceiverResampler {
public:
    PerceiverResampler() = default;
    PerceiverResampler(Weights& L, const PerceiverConfig& c, std::size_t dim) : dim_(dim), cfg_(c) {
        if (c.idefics) {
            load_idefics(L, "model.perceiver_resampler.");
            return;
        }
        const std::string p = "perceiver.";
        const std::size_t D = dim, n = std::size_t(c.num_latents);
        latents_ = L.floats(p + "latents", {n, D});
        if (c.max_num_frames) frame_embs_ = L.floats(p + "frame_embs", {std::size_t(*c.max_num_frames), D});
        if (c.max_num_media) media_time_embs_ = L.floats(p + "media_time_embs", {std::size_t(*c.max_num_media), 1, D});
        for (int i = 0; i < c.depth; ++i) {
            const std::string a = p + "layers." + std::to_string(i) + ".0.";
            Layer l;
            l.norm_media = L.layer_norm(a + "norm_media", D, 1e-5f);
            l.norm_latents = L.layer_norm(a + "norm_latents", D, 1e-5f);
            l.attn = load_cross_attention(L, a, D, D, std::size_t(c.heads), std::size_t(c.dim_head));
            l.ff = load_feed_forward(L, p + "layers." + std::to_string(i) + ".1.", D, std::size_t(c.ff_mult) * D);
            layers_.push_back(std::move(l));
        }
        norm_ = L.layer_norm(p + "norm", D, 1e-5f);
    }

    std::size_t num_latents() const { return std::size_t(cfg_.num_latents); }
    std::size_t dim() const { return dim_; }

    std::size_t workspace(std::size_t n_media, std::size_t frames, std::size_t v) const {
        const std::size_t nx = n_media * frames * v, nl = n_media * num_latents(), D = dim_;
        std::size_t inner = 0;
        for (const Layer& l : layers_)
            inner = std::max(inner, nn::ws_floats(nl, D) + 2 * nn::ws_floats(nl, l.attn.inner()) + l.ff.workspace(nl));
        const std::size_t kv_width = layers_.empty() ? 0 : layers_[0].attn.kv_width();
        return nn::ws_floats(nx, D) + nn::ws_floats(nx + nl, D) + nn::ws_floats(nx + nl, kv_width) +
               2 * nn::ws_floats(n_media * num_latents()) + inner;
    }

    // features: [n_media * frames * v, D] vision tokens -> out: [n_media * num_latents, D].
    void forward(const float* features, std::size_t n_media, std::size_t frames, std::size_t v, const nn::Act& out,
                 nn::Workspace& ws) const {
        nn::Workspace::Frame frame(ws);
        const std::size_t D = dim_, nl = num_latents(), nx = frames * v, nkv = nx + nl;
        if (frame_embs_)
            check(frames <= std::size_t(*cfg_.max_num_frames), ErrorKind::Limit, "a video of ", frames,
                  " frames exceeds the Perceiver's max_num_frames (", *cfg_.max_num_frames, ")");
        if (media_time_embs_)
            check(n_media <= std::size_t(*cfg_.max_num_media), ErrorKind::Limit, n_media,
                  " media exceed the Perceiver's max_num_media (", *cfg_.max_num_media, ")");

        // x: the features with their frame and media-time embeddings.
        auto x = ws.rows(n_media * nx, D);
        x.assign(make_view(features, dextents<2>(n_media * nx, D)));
        for (std::size_t m = 0; m < n_media; ++m)
            for (std::size_t f = 0; f < frames; ++f) {
                auto rows = x.rows((m * frames + f) * v, (m * frames + f + 1) * v);
                if (frame_embs_) rows.assign(rows + make_view(frame_embs_ + f * D, dextents<1>(D)));
                if (media_time_embs_) rows.assign(rows + make_view(media_time_embs_ + m * D, dextents<1>(D)));
            }
        const auto lat = out;  // the latents, updated in place
        for (std::size_t m = 0; m < n_media; ++m) lat.rows(m * nl, (m + 1) * nl).assign(make_view(latents_, dextents<2>(nl, D)));

        // Medium m's latents attend to its rows [m * nkv, (m + 1) * nkv) of kv_in.
        auto kv_in = ws.rows(n_media * nkv, D);
        auto kv = ws.rows(n_media * nkv, layers_.empty() ? 0 : layers_[0].attn.kv_width());
        std::uint32_t* lo = ws.indices(n_media * nl);
        std::uint32_t* hi = ws.indices(n_media * nl);
        for (std::size_t i = 0; i < n_media * nl; ++i)
            lo[i] = std::uint32_t(i / nl * nkv), hi[i] = std::uint32_t((i / nl + 1) * nkv);
        for (const Layer& l : layers_) {
            nn::Workspace::Frame layer_frame(ws);
            auto normed = ws.rows(n_media * nl, D);
            auto q = ws.rows(n_media * nl, l.attn.inner());
            l.norm_latents(lat, normed);
            for (std::size_t m = 0; m < n_media; ++m) {
                l.norm_media(x.rows(m * nx, (m + 1) * nx), kv_in.rows(m * nkv, m * nkv + nx));
                kv_in.rows(m * nkv + nx, (m + 1) * nkv).assign(normed.rows(m * nl, (m + 1) * nl));
            }
            l.attn.query(normed, q);
            l.attn.project(kv_in, kv);
            auto o = ws.rows(n_media * nl, l.attn.inner());
            l.attn.attention(q, kv.data(), n_media * nkv, lo, hi, o);
            l.attn.output(o, lat, /*accumulate=*/true);
            l.ff(lat, lat, ws, /*accumulate=*/true);
        }
        norm_(lat, lat);
    }

private:
    struct Layer {
        nn::Norm norm_media, norm_latents;
        nn::CrossAttention attn;  // IDEFICS: to_k / to_v, per-head q/k LayerNorms
        nn::FeedForward ff;
    };

    void load_idefics(Weights& L, const std::string& p) {
        const PerceiverConfig& c = cfg_;
        const std::size_t D = dim_, n = std::size_t(c.num_latents), H = std::size_t(c.heads);
        const std::size_t dh = std::size_t(c.dim_head), inner = H * dh;
        latents_ = L.floats(p + "latents", {n, D});
        for (int i = 0; i < c.depth; ++i) {
            const std::string a = p + "blocks." + std::to_string(i) + ".0.", m = p + "blocks." + std::to_string(i) + ".1.";
            Layer l;
            l.norm_media = L.layer_norm(a + "context_layer_norm", D, 1e-5f);
            l.norm_latents = L.layer_norm(a + "latents_layer_norm", D, 1e-5f);
            if (c.qk_layer_norms) {
                l.attn.q_norm = L.layer_norm(a + "q_layer_norm", dh, 1e-5f);
                l.attn.k_norm = L.layer_norm(a + "k_layer_norm", dh, 1e-5f);
            }
            l.attn.heads = H, l.attn.dim_head = dh;
            l.attn.to_q = L.linear(a + "q_proj", inner, D, false);
            l.attn.to_k = L.linear(a + "k_proj", inner, D, false);
            l.attn.to_v = L.linear(a + "v_proj", inner, D, false);
            l.attn.to_out = L.linear(a + "output_proj", D, inner, false);
            l.ff.norm = L.layer_norm(m + "ln", D, 1e-5f);
            l.ff.mlp.up = L.linear(m + "fc", std::size_t(c.ff_mult) * D, D, false);
            l.ff.mlp.down = L.linear(m + "c_proj", D, std::size_t(c.ff_mult) * D, false);
            l.ff.mlp.act = nn::Activation::Relu;
            layers_.push_back(std::move(l));
        }
        norm_ = L.layer_norm(p + "layer_norm", D, 1e-5f);
    }

    std::size_t dim_ = 0;
    PerceiverConfig cfg_;
    const float* latents_ = nullptr;
    const float* frame_embs_ = nullptr;
    const float* media_time_embs_ = nullptr;
    std::vector<Layer> layers_;
    nn::Norm norm_;
};

}  // namespace flamingo::model
