#pragma once
// open_clip's VisionTransformer (the CLIP image tower), as OpenFlamingo uses it:
//   x = conv1(pixels) as patches; x = [class_embedding, x] + positional_embedding
//   x = ln_pre(x); x = transformer(x)
//   tokens = x[:, 1:]  (ln_post applied first when tokens_ln_post)
//   pooled = ln_post(x[:, 0]) @ proj
// IDEFICS's tower (VisionConfig::hf_clip) is the same network under Hugging
// Face CLIP's names (embeddings.*, pre_layrnorm, encoder.layers.*,
// post_layernorm; separate q/k/v projections, no proj); it hands on every
// token of the last layer, the class token first, without ln_post.
#include <cmath>
#include <string>
#include <vector>

#include "../core/expr.hpp"
#include "../kernels/gemm.hpp"
#include "../nn/block.hpp"
#include "config.hpp"
#include "weights.hpp"

namespace flamingo::model {

class VisionTransformer {
public:
    VisionTransformer() = default;
    VisionTransformer(Weights& L, const VisionConfig& c) : cfg_(c) {
        if (c.hf_clip) {
            load_hf(L, "model.vision_model.");
            return;
        }
        const std::string p = "vision_encoder.";
        const std::size_t W = width(), P = std::size_t(c.patch_size), G = std::size_t(c.grid_size());
        tokens_ = G * G + 1;
        // conv1 (stride = kernel = patch, no bias) is a linear map of each flattened [3, P, P] patch.
        const std::size_t conv_shape[4] = {W, 3, P, P};
        patch_embed_ = L.projection(p + "conv1.weight", conv_shape, W, 3 * P * P);
        class_embedding_ = L.floats(p + "class_embedding", {W});
        positional_embedding_ = L.floats(p + "positional_embedding", {tokens_, W});
        ln_pre_ = L.layer_norm(p + "ln_pre", W, 1e-5f);
        for (int i = 0; i < c.layers; ++i) {
            const std::string b = p + "transformer.resblocks." + std::to_string(i) + ".";
            nn::TransformerBlock blk;
            blk.norm1 = L.layer_norm(b + "ln_1", W, 1e-5f);
            blk.norm2 = L.layer_norm(b + "ln_2", W, 1e-5f);
            auto& a = blk.attn;
            a.layout = nn::QKVLayout::Fused;
            a.heads = a.kv_heads = std::size_t(c.heads());
            a.head_dim = std::size_t(c.head_width);
            a.causal = false;
            a.scale = 1.0f / std::sqrt(float(a.head_dim));
            a.qkv = L.projection(b + "attn.in_proj_weight", 3 * W, W);
            a.qkv.bias = L.floats(b + "attn.in_proj_bias", {3 * W});
            a.out = L.linear(b + "attn.out_proj", W, W, true);
            const std::size_t H = std::size_t(c.mlp_width);
            blk.ffn.up = L.linear(b + "mlp.c_fc", H, W, true);
            blk.ffn.down = L.linear(b + "mlp.c_proj", W, H, true);
            blk.ffn.act = c.quick_gelu ? nn::Activation::QuickGelu : nn::Activation::GeluErf;
            blocks_.push_back(std::move(blk));
        }
        ln_post_ = L.layer_norm(p + "ln_post", W, 1e-5f);
        // The embedding size is proj's second dimension (open_clip's output_dim).
        embed_dim_ = W;
        if (auto shape = L.shape_of(p + "proj")) {
            embed_dim_ = shape->size() == 2 ? (*shape)[1] : 0;
            proj_ = L.floats(p + "proj", {W, embed_dim_});
        }
    }

    std::size_t width() const { return std::size_t(cfg_.width); }
    std::size_t image_size() const { return std::size_t(cfg_.image_size); }
    std::size_t num_patches() const { return tokens_ - 1; }
    std::size_t num_tokens() const { return cfg_.hf_clip ? tokens_ : tokens_ - 1; }  // handed to the Perceiver
    std::size_t embed_dim() const { return embed_dim_; }

    std::size_t workspace(std::size_t n) const {
        const std::size_t P = std::size_t(cfg_.patch_size), M = n * tokens_;
        std::size_t blocks = 0;
        for (const auto& b : blocks_) blocks = std::max(blocks, b.workspace(M));
        return nn::ws_floats(n * num_patches(), 3 * P * P) + nn::ws_floats(n * num_patches(), width()) +
               nn::ws_floats(M, width()) + std::max(blocks, nn::ws_floats(n, width()));
    }

    // pixels: n images [3, S, S] (normalised). tokens: [n * num_tokens(), width] or
    // empty; pooled: [n, embed_dim] or empty.
    void forward(const float* pixels, std::size_t n, const nn::Act& tokens, const nn::Act& pooled,
                 nn::Workspace& ws) const {
        nn::Workspace::Frame frame(ws);
        const std::size_t W = width(), S = image_size(), P = std::size_t(cfg_.patch_size);
        const std::size_t G = S / P, T = tokens_;
        // Patches [n * G * G, 3 * P * P] in conv1's (channel, row, column) order:
        // per image and channel, the [S, S] plane seen as [G, P, G, P] and
        // reordered to [G, G, P, P] lands in the patch rows.
        auto patches = ws.rows(n * G * G, 3 * P * P);
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t ch = 0; ch < 3; ++ch) {
                const float* plane = pixels + (i * 3 + ch) * S * S;
                auto src = reshape<dextents<4>>(make_view(plane, dextents<2>(S, S)), G, P, G, P);
                auto dst = TensorView<float, dextents<4>>(
                    patches.data() + i * G * G * 3 * P * P + ch * P * P, dextents<4>(G, G, P, P),
                    {std::ptrdiff_t(G * 3 * P * P), std::ptrdiff_t(3 * P * P), std::ptrdiff_t(P), 1});
                dst.assign(permute<0, 2, 1, 3>(src));
            }
        auto emb = ws.rows(n * G * G, W);
        patch_embed_(patches, emb);

        auto x = ws.rows(n * T, W);
        auto cls = make_view(class_embedding_, dextents<1>(W));
        auto pos = make_view(positional_embedding_, dextents<2>(T, W));
        std::vector<nn::Segment> segs(n);
        for (std::size_t i = 0; i < n; ++i) {
            x[i * T].assign(cls + pos[0]);
            x.rows(i * T + 1, (i + 1) * T).assign(emb.rows(i * (T - 1), (i + 1) * (T - 1)) + pos.rows(1, T));
            segs[i] = {i * T, T, 0, nullptr};
        }
        ln_pre_(x, x);
        for (const auto& b : blocks_) b(x, segs, 0, ws);

        if (tokens.data() && cfg_.hf_clip) {
            tokens.assign(x);
        } else if (tokens.data()) {
            for (std::size_t i = 0; i < n; ++i) {
                auto src = x.rows(i * T + 1, (i + 1) * T);
                auto dst = tokens.rows(i * (T - 1), (i + 1) * (T - 1));
                if (cfg_.tokens_ln_post) ln_post_(src, dst);
                else dst.assign(src);
            }
        }
        if (pooled.data()) {
            auto c = ws.rows(n, W);
            for (std::size_t i = 0; i < n; ++i) c[i].assign(x[i * T]);
            ln_post_(c, c);
            if (proj_) kernels::matmul(n, embed_dim_, W, c.data(), W, proj_, embed_dim_, pooled.data(), embed_dim_);
            else pooled.assign(c);
        }
    }

private:
    // Hugging Face CLIPVisionTransformer names (IDEFICS's vision_model).
    void load_hf(Weights& L, const std::string& p) {
        const VisionConfig& c = cfg_;
        const std::size_t W = width(), P = std::size_t(c.patch_size), G = std::size_t(c.grid_size());
        const float eps = c.layer_norm_eps;
        tokens_ = G * G + 1;
        const std::size_t conv_shape[4] = {W, 3, P, P};
        patch_embed_ = L.projection(p + "embeddings.patch_embedding.weight", conv_shape, W, 3 * P * P);
        class_embedding_ = L.floats(p + "embeddings.class_embedding", {W});
        positional_embedding_ = L.floats(p + "embeddings.position_embedding.weight", {tokens_, W});
        ln_pre_ = L.layer_norm(p + "pre_layrnorm", W, eps);
        for (int i = 0; i < c.layers; ++i) {
            const std::string b = p + "encoder.layers." + std::to_string(i) + ".";
            nn::TransformerBlock blk;
            blk.norm1 = L.layer_norm(b + "layer_norm1", W, eps);
            blk.norm2 = L.layer_norm(b + "layer_norm2", W, eps);
            auto& a = blk.attn;
            a.layout = nn::QKVLayout::Separate;
            a.heads = a.kv_heads = std::size_t(c.heads());
            a.head_dim = std::size_t(c.head_width);
            a.causal = false;
            a.scale = 1.0f / std::sqrt(float(a.head_dim));
            a.q = L.linear(b + "self_attn.q_proj", W, W, true);
            a.k = L.linear(b + "self_attn.k_proj", W, W, true);
            a.v = L.linear(b + "self_attn.v_proj", W, W, true);
            a.out = L.linear(b + "self_attn.out_proj", W, W, true);
            const std::size_t H = std::size_t(c.mlp_width);
            blk.ffn.up = L.linear(b + "mlp.fc1", H, W, true);
            blk.ffn.down = L.linear(b + "mlp.fc2", W, H, true);
            blk.ffn.act = c.quick_gelu ? nn::Activation::QuickGelu : nn::Activation::GeluErf;
            blocks_.push_back(std::move(blk));
        }
        ln_post_ = L.layer_norm(p + "post_layernorm", W, eps);  // the pooled embedding's (flamingo embed)
        embed_dim_ = W;
    }

    VisionConfig cfg_;
    std::size_t tokens_ = 0, embed_dim_ = 0;
    nn::Linear patch_embed_;
    const float* class_embedding_ = nullptr;
    const float* positional_embedding_ = nullptr;
    nn::Norm ln_pre_, ln_post_;
    std::vector<nn::TransformerBlock> blocks_;
    const float* proj_ = nullptr;
};

}  // namespace flamingo::model
