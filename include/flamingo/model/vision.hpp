#pragma once
// open_clip's VisionTransformer (the CLIP image tower), as OpenFlamingo uses it:
//   x = conv1(pixels) as patches; x = [class_embedding, x] + positional_embedding
//   x = ln_pre(x); x = transformer(x)
//   tokens = x[:, 1:]  (ln_post applied first when tokens_ln_post)
//   pooled = ln_post(x[:, 0]) @ proj
#include <string>
#include <vector>

#include "../io/config.hpp"
#include "../kernels/gemm.hpp"
#include "../nn/block.hpp"

namespace flamingo::model {

template <std::size_t Width = dyn, std::size_t MlpWidth = dyn>
class VisionTransformer {
public:
    using Block = nn::TransformerBlock<Width, nn::Mlp<Width, MlpWidth>>;

    VisionTransformer() = default;
    VisionTransformer(nn::WeightLoader& L, const io::VisionConfig& c) : cfg_(c) {
        const std::string p = "vision_encoder.";
        const std::size_t W = std::size_t(c.width), P = std::size_t(c.patch_size), G = std::size_t(c.grid_size());
        nn::check_static(Width, W, "vision width");
        nn::check_static(MlpWidth, std::size_t(c.mlp_width), "vision MLP width");
        tokens_ = G * G + 1;
        // conv1 (stride = kernel = patch, no bias) is a linear map of each flattened [3, P, P] patch.
        const std::size_t conv_shape[4] = {W, 3, P, P};
        patch_embed_.w = L.matrix(p + "conv1.weight", conv_shape, W, 3 * P * P);
        class_embedding_ = L.floats(p + "class_embedding", {W});
        positional_embedding_ = L.floats(p + "positional_embedding", {tokens_, W});
        ln_pre_ = nn::Norm<Width>::layer_norm(L, p + "ln_pre", W, 1e-5f);
        for (int i = 0; i < c.layers; ++i) {
            const std::string b = p + "transformer.resblocks." + std::to_string(i) + ".";
            Block blk;
            blk.norm1 = nn::Norm<Width>::layer_norm(L, b + "ln_1", W, 1e-5f);
            blk.norm2 = nn::Norm<Width>::layer_norm(L, b + "ln_2", W, 1e-5f);
            auto& a = blk.attn;
            a.layout = nn::QKVLayout::Fused;
            a.heads = a.kv_heads = std::size_t(c.heads());
            a.head_dim = std::size_t(c.head_width);
            a.causal = false;
            a.scale = 1.0f / std::sqrt(float(a.head_dim));
            a.qkv.w = L.matrix(b + "attn.in_proj_weight", 3 * W, W);
            a.qkv.bias = L.floats(b + "attn.in_proj_bias", {3 * W});
            a.out = nn::Linear<Width, dyn>::load(L, b + "attn.out_proj", W, W, true);
            const std::size_t H = std::size_t(c.mlp_width);
            blk.ffn.up = nn::Linear<MlpWidth, Width>::load(L, b + "mlp.c_fc", H, W, true);
            blk.ffn.down = nn::Linear<Width, MlpWidth>::load(L, b + "mlp.c_proj", W, H, true);
            blk.ffn.act = c.quick_gelu ? nn::Activation::QuickGelu : nn::Activation::GeluErf;
            blocks_.push_back(std::move(blk));
        }
        ln_post_ = nn::Norm<Width>::layer_norm(L, p + "ln_post", W, 1e-5f);
        // The embedding size is proj's second dimension (open_clip's output_dim).
        embed_dim_ = W;
        if (auto shape = L.shape_of(p + "proj")) {
            embed_dim_ = shape->size() == 2 ? (*shape)[1] : 0;
            proj_ = L.floats(p + "proj", {W, embed_dim_});
        }
    }

    std::size_t width() const { return std::size_t(cfg_.width); }
    std::size_t num_patches() const { return tokens_ - 1; }
    std::size_t embed_dim() const { return embed_dim_; }

    // pixels: n images [3, S, S] (normalised). tokens: [n, patches, width] or
    // nullptr; pooled: [n, embed_dim] or nullptr.
    void forward(const float* pixels, std::size_t n, float* tokens, float* pooled, nn::Scratch& s) const {
        const std::size_t W = width(), S = std::size_t(cfg_.image_size), P = std::size_t(cfg_.patch_size);
        const std::size_t G = S / P, T = tokens_, M = n * T, K = 3 * P * P;
        // Patches: [n * G * G, 3 * P * P] in conv1's (channel, row, column) order.
        auto patches = s.rows(nn::kOuter0, n * G * G, K);
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t gy = 0; gy < G; ++gy)
                for (std::size_t gx = 0; gx < G; ++gx) {
                    float* row = patches.data() + ((i * G + gy) * G + gx) * K;
                    for (std::size_t ch = 0; ch < 3; ++ch)
                        for (std::size_t py = 0; py < P; ++py) {
                            const float* src = pixels + ((i * 3 + ch) * S + gy * P + py) * S + gx * P;
                            std::copy(src, src + P, row + (ch * P + py) * P);
                        }
                }
        auto x = s.rows<Width>(nn::kOuter1, M, W);
        auto emb = s.rows<Width>(nn::kBranch, n * G * G, W);
        patch_embed_(patches, emb);
        std::vector<nn::Segment> segs(n);
        for (std::size_t i = 0; i < n; ++i) {
            float* xi = x.data() + i * T * W;
            for (std::size_t d = 0; d < W; ++d) xi[d] = class_embedding_[d] + positional_embedding_[d];
            for (std::size_t t = 1; t < T; ++t)
                for (std::size_t d = 0; d < W; ++d)
                    xi[t * W + d] = emb.data()[(i * (T - 1) + t - 1) * W + d] + positional_embedding_[t * W + d];
            segs[i] = {i * T, T, 0, nullptr};
        }
        ln_pre_(x, x);
        for (const Block& b : blocks_) b(x, segs, 0, s);

        if (tokens) {
            for (std::size_t i = 0; i < n; ++i) {
                auto src = x.rows(i * T + 1, (i + 1) * T);
                auto dst = nn::act<Width>(tokens + i * (T - 1) * W, T - 1, W, W);
                if (cfg_.tokens_ln_post) ln_post_(src, dst);
                else dst.assign(src);
            }
        }
        if (pooled) {
            auto cls = s.rows<Width>(nn::kBranch, n, W);
            for (std::size_t i = 0; i < n; ++i) cls[i].assign(x[i * T]);
            ln_post_(cls, cls);
            if (proj_) kernels::matmul(n, embed_dim_, W, cls.data(), W, proj_, embed_dim_, pooled, embed_dim_);
            else std::copy(cls.data(), cls.data() + n * W, pooled);
        }
    }

private:
    io::VisionConfig cfg_;
    std::size_t tokens_ = 0, embed_dim_ = 0;
    nn::Linear<Width, dyn> patch_embed_;
    const float* class_embedding_ = nullptr;
    const float* positional_embedding_ = nullptr;
    nn::Norm<Width> ln_pre_, ln_post_;
    std::vector<Block> blocks_;
    const float* proj_ = nullptr;
};

}  // namespace flamingo::model
