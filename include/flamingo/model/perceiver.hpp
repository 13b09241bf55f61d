#pragma once
// OpenFlamingo's PerceiverResampler: a fixed set of learned latents attends to
// each medium's vision features (concatenated with the latents themselves),
// giving num_latents visual tokens per image or video.
//
//   x = features (+ frame_embs[frame]) (+ media_time_embs[medium])
//   for each layer:  latents = attn(x, latents) + latents
//                    latents = ff(latents) + latents
//   return norm(latents)
// with attn(x, latents):  q = to_q(norm_latents(latents))
//                         k, v = to_kv([norm_media(x); norm_latents(latents)])
//                         to_out(softmax(q k^T / sqrt(dim_head)) v)
#include <string>
#include <vector>

#include "../core/expr.hpp"
#include "../io/config.hpp"
#include "../nn/attention.hpp"
#include "../nn/mlp.hpp"

namespace flamingo::model {

// LayerNorm, Linear, GELU, Linear, all without bias: OpenFlamingo's FeedForward.
template <std::size_t Dim = dyn>
struct FeedForward {
    nn::Norm<Dim> norm;
    nn::Mlp<Dim, dyn> mlp;

    static FeedForward load(nn::WeightLoader& L, const std::string& p, std::size_t dim, std::size_t inner) {
        FeedForward f;
        f.norm = nn::Norm<Dim>::layer_norm(L, p + "0", dim, 1e-5f);
        f.mlp.up = nn::Linear<dyn, Dim>::load(L, p + "1", inner, dim, false);
        f.mlp.down = nn::Linear<Dim, dyn>::load(L, p + "3", dim, inner, false);
        f.mlp.act = nn::Activation::GeluErf;
        return f;
    }
    // y (+)= ff(x)
    template <class XV, class YV>
    void operator()(const XV& x, const YV& y, nn::Scratch& s, bool accumulate) const {
        auto h = s.rows<Dim>(nn::kInner3, x.extent(0), x.extent(1));
        norm(x, h);
        mlp(h, y, s, accumulate);
    }
};

template <std::size_t Dim = dyn>
class PerceiverResampler {
public:
    PerceiverResampler() = default;
    PerceiverResampler(nn::WeightLoader& L, const io::PerceiverConfig& c, std::size_t dim) : dim_(dim), cfg_(c) {
        const std::string p = "perceiver.";
        const std::size_t D = dim, inner = std::size_t(c.inner_dim()), n = std::size_t(c.num_latents);
        latents_ = L.floats(p + "latents", {n, D});
        if (c.max_num_frames) frame_embs_ = L.floats(p + "frame_embs", {std::size_t(*c.max_num_frames), D});
        if (c.max_num_media) media_time_embs_ = L.floats(p + "media_time_embs", {std::size_t(*c.max_num_media), 1, D});
        for (int i = 0; i < c.depth; ++i) {
            const std::string a = p + "layers." + std::to_string(i) + ".0.";
            Layer l;
            l.norm_media = nn::Norm<Dim>::layer_norm(L, a + "norm_media", D, 1e-5f);
            l.norm_latents = nn::Norm<Dim>::layer_norm(L, a + "norm_latents", D, 1e-5f);
            l.to_q = nn::Linear<dyn, Dim>::load(L, a + "to_q", inner, D, false);
            l.to_kv = nn::Linear<dyn, Dim>::load(L, a + "to_kv", 2 * inner, D, false);
            l.to_out = nn::Linear<Dim, dyn>::load(L, a + "to_out", D, inner, false);
            l.ff = FeedForward<Dim>::load(L, p + "layers." + std::to_string(i) + ".1.", D,
                                          std::size_t(c.ff_mult) * D);
            layers_.push_back(std::move(l));
        }
        norm_ = nn::Norm<Dim>::layer_norm(L, p + "norm", D, 1e-5f);
    }

    std::size_t num_latents() const { return std::size_t(cfg_.num_latents); }
    std::size_t dim() const { return dim_; }

    // features: [n_media, frames, v, D] vision tokens -> out: [n_media, num_latents, D].
    void forward(const float* features, std::size_t n_media, std::size_t frames, std::size_t v, float* out,
                 nn::Scratch& s) const {
        const std::size_t D = dim_, nl = num_latents(), inner = std::size_t(cfg_.inner_dim());
        const std::size_t nx = frames * v, nkv = nx + nl;
        if (frame_embs_)
            check(frames <= std::size_t(*cfg_.max_num_frames), "a video of ", frames,
                  " frames exceeds the Perceiver's max_num_frames (", *cfg_.max_num_frames, ")");
        if (media_time_embs_)
            check(n_media <= std::size_t(*cfg_.max_num_media), n_media,
                  " media exceed the Perceiver's max_num_media (", *cfg_.max_num_media, ")");

        // kv_in holds, per medium, [norm_media(x); norm_latents(latents)]; x is kept aside.
        auto x = s.rows<Dim>(nn::kOuter0, n_media * nx, D);
        for (std::size_t m = 0; m < n_media; ++m)
            for (std::size_t f = 0; f < frames; ++f)
                for (std::size_t t = 0; t < v; ++t) {
                    const float* src = features + ((m * frames + f) * v + t) * D;
                    float* dst = x.data() + (m * nx + f * v + t) * D;
                    for (std::size_t d = 0; d < D; ++d) {
                        float val = src[d];
                        if (frame_embs_) val += frame_embs_[f * D + d];
                        if (media_time_embs_) val += media_time_embs_[m * D + d];
                        dst[d] = val;
                    }
                }
        auto lat = nn::act<Dim>(out, n_media * nl, D, D);
        for (std::size_t m = 0; m < n_media; ++m) std::copy(latents_, latents_ + nl * D, out + m * nl * D);

        auto kv_in = s.rows<Dim>(nn::kOuter1, n_media * nkv, D);
        auto q = s.rows(nn::kNormed, n_media * nl, inner);
        auto kv = s.rows(nn::kBranch, n_media * nkv, 2 * inner);
        auto o = s.rows(nn::kInner1, n_media * nl, inner);
        for (const Layer& l : layers_) {
            for (std::size_t m = 0; m < n_media; ++m) {
                l.norm_media(x.rows(m * nx, (m + 1) * nx), kv_in.rows(m * nkv, m * nkv + nx));
                l.norm_latents(lat.rows(m * nl, (m + 1) * nl), kv_in.rows(m * nkv + nx, (m + 1) * nkv));
            }
            // q from the normed latents: gather them into one block first.
            auto qin = s.rows<Dim>(nn::kInner2, n_media * nl, D);
            for (std::size_t m = 0; m < n_media; ++m)
                qin.rows(m * nl, (m + 1) * nl).assign(kv_in.rows(m * nkv + nx, (m + 1) * nkv));
            l.to_q(qin, q);
            l.to_kv(kv_in, kv);
            for (std::size_t m = 0; m < n_media; ++m) {
                kernels::AttentionArgs a;
                a.n_q = nl, a.n_kv = nkv;
                a.n_heads = a.n_kv_heads = std::size_t(cfg_.heads), a.head_dim = std::size_t(cfg_.dim_head);
                a.q = q.data() + m * nl * inner, a.q_row_stride = inner, a.q_head_stride = a.head_dim;
                a.k = kv.data() + m * nkv * 2 * inner, a.k_row_stride = 2 * inner, a.k_head_stride = a.head_dim;
                a.v = a.k + inner, a.v_row_stride = 2 * inner, a.v_head_stride = a.head_dim;
                a.out = o.data() + m * nl * inner, a.out_row_stride = inner, a.out_head_stride = a.head_dim;
                a.scale = 1.0f / std::sqrt(float(cfg_.dim_head));
                kernels::attention(a);
            }
            l.to_out(o, lat, /*accumulate=*/true);
            l.ff(lat, lat, s, /*accumulate=*/true);
        }
        norm_(lat, lat);
    }

private:
    struct Layer {
        nn::Norm<Dim> norm_media, norm_latents;
        nn::Linear<dyn, Dim> to_q, to_kv;
        nn::Linear<Dim, dyn> to_out;
        FeedForward<Dim> ff;
    };

    std::size_t dim_ = 0;
    io::PerceiverConfig cfg_;
    const float* latents_ = nullptr;
    const float* frame_embs_ = nullptr;
    const float* media_time_embs_ = nullptr;
    std::vector<Layer> layers_;
    nn::Norm<Dim> norm_;
};

}  // namespace flamingo::model
