#pragma once
// MPT (MosaicML llm-foundry, "mpt") and its predecessor MosaicGPT ("mosaic_gpt",
// OpenFlamingo-3B's MPT-1B), pre-norm blocks with a fused Wqkv:
//   qkv = Wqkv(norm_1(x)), clamped to +-clip_qkv; q, k = q_ln(q), k_ln(k) when qk_ln
//   x = x + out_proj(softmax(q k^T * scale + alibi, causal) v)
//   x = x + down(gelu(up(norm_2(x))))
// Logits use the tied token embedding, times logit_scale when set.
#include <cmath>
#include <string>
#include <vector>

#include "../io/config.hpp"
#include "../nn/block.hpp"

namespace flamingo::model {

struct Mpt {
    static constexpr const char* layers = "lang_encoder.transformer.blocks.";
    static constexpr const char* embed = "lang_encoder.transformer.wte.weight";
    static constexpr const char* position = "lang_encoder.transformer.wpe.weight";

    static bool mosaic(const io::TextConfig& t) { return t.model_type == "mosaic_gpt"; }
    static std::string final_norm(const io::TextConfig& t) {
        return mosaic(t) ? "lang_encoder.transformer.ln_f" : "lang_encoder.transformer.norm_f";
    }

    // ALiBi slopes 2^(-max * k / n'). MPT takes n' = the next power of two and,
    // when that exceeds the head count, interleaves (odd entries first);
    // MosaicGPT uses n' = n_heads throughout.
    static std::vector<float> alibi_slopes(const io::TextConfig& t) {
        const std::size_t n = std::size_t(t.num_heads);
        std::size_t n2 = mosaic(t) ? n : 1;
        while (n2 < n) n2 *= 2;
        std::vector<float> all(n2);
        for (std::size_t k = 0; k < n2; ++k) {
            const float m = float(k + 1) * (t.alibi_bias_max / float(n2));
            all[k] = 1.0f / std::pow(2.0f, m);
        }
        if (n2 == n) return all;
        std::vector<float> s;
        for (std::size_t k = 1; k < n2; k += 2) s.push_back(all[k]);
        for (std::size_t k = 0; k < n2; k += 2) s.push_back(all[k]);
        s.resize(n);
        return s;
    }

    template <std::size_t H>
    static nn::Norm<H> norm(nn::WeightLoader& L, const std::string& name, const io::TextConfig& t) {
        const std::size_t D = std::size_t(t.hidden_size);
        if (t.norm == io::NormType::RMSNorm) return nn::Norm<H>::rms_norm(L, name, D, 1e-5f);
        return nn::Norm<H>::layer_norm(L, name, D, 1e-5f, t.norm_bias);
    }

    template <std::size_t H, class Ffn>
    static nn::TransformerBlock<H, Ffn> block(nn::WeightLoader& L, const std::string& p, const io::TextConfig& t,
                                              const kernels::RopeTable*) {
        nn::TransformerBlock<H, Ffn> b;
        const bool old = mosaic(t);
        const std::size_t D = std::size_t(t.hidden_size), nh = std::size_t(t.num_heads), hd = D / nh;
        const bool bias = !t.no_bias;
        b.norm1 = norm<H>(L, p + (old ? "ln_1" : "norm_1"), t);
        b.norm2 = norm<H>(L, p + (old ? "ln_2" : "norm_2"), t);
        auto& a = b.attn;
        a.layout = nn::QKVLayout::Fused;
        a.heads = a.kv_heads = nh, a.head_dim = hd;
        a.scale = t.softmax_scale ? *t.softmax_scale : 1.0f / std::sqrt(float(hd));
        if (t.alibi) a.alibi_slopes = alibi_slopes(t);
        a.clip_qkv = t.clip_qkv;
        a.qkv = nn::Linear<dyn, H>::load(L, p + "attn.Wqkv", 3 * D, D, bias);
        if (t.qk_ln) {
            a.q_ln = norm<dyn>(L, p + "attn.q_ln", t);
            a.k_ln = norm<dyn>(L, p + "attn.k_ln", t);
        }
        a.out = nn::Linear<H, dyn>::load(L, p + "attn.out_proj", D, D, bias);
        const std::size_t F = std::size_t(t.intermediate_size);
        if constexpr (requires { b.ffn.gate; }) {
            fail("MPT needs the plain MLP instantiation");
        } else {
            b.ffn.up = decltype(b.ffn.up)::load(L, p + (old ? "mlp.mlp_up" : "ffn.up_proj"), F, D, bias);
            b.ffn.down = decltype(b.ffn.down)::load(L, p + (old ? "mlp.mlp_down" : "ffn.down_proj"), D, F, bias);
            b.ffn.act = nn::Activation::GeluErf;
        }
        return b;
    }
};

}  // namespace flamingo::model
