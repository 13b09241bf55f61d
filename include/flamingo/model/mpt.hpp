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

#include "config.hpp"
#include "weights.hpp"
#include "../nn/block.hpp"

namespace flamingo::model {

struct Mpt {
    static constexpr const char* layers = "lang_encoder.transformer.blocks.";
    static constexpr const char* embed = "lang_encoder.transformer.wte.weight";
    static constexpr const char* position = "lang_encoder.transformer.wpe.weight";

    static bool mosaic(const TextConfig& t) { return t.model_type == "mosaic_gpt"; }
    static std::string final_norm(const TextConfig& t) {
        return mosaic(t) ? "lang_encoder.transformer.ln_f" : "lang_encoder.transformer.norm_f";
    }

    // ALiBi slopes 2^(-max * k / n'). MPT takes n' = the next power of two and,
    // when that exceeds the head count, interleaves (odd entries first);
    // MosaicGPT uses n' = n_heads throughout.
    static std::vector<float> alibi_slopes(const TextConfig& t) {
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

    static nn::Norm norm(Weights& L, const std::string& name, const TextConfig& t) {
        const std::size_t D = std::size_t(t.hidden_size);
        if (t.norm == NormType::RMSNorm) return L.rms_norm(name, D, 1e-5f);
        return L.layer_norm(name, D, 1e-5f, t.norm_bias);
    }

    static nn::TransformerBlock block(Weights& L, const std::string& p, const TextConfig& t,
                                      const kernels::RopeTable*) {
        nn::TransformerBlock b;
        const bool old = mosaic(t);
        const std::size_t D = std::size_t(t.hidden_size), nh = std::size_t(t.num_heads), hd = D / nh;
        const bool bias = !t.no_bias;
        b.norm1 = norm(L, p + (old ? "ln_1" : "norm_1"), t);
        b.norm2 = norm(L, p + (old ? "ln_2" : "norm_2"), t);
        auto& a = b.attn;
        a.layout = nn::QKVLayout::Fused;
        a.heads = a.kv_heads = nh, a.head_dim = hd;
        a.scale = t.softmax_scale ? *t.softmax_scale : 1.0f / std::sqrt(float(hd));
        if (t.alibi) a.alibi_slopes = alibi_slopes(t);
        a.clip_qkv = t.clip_qkv;
        a.qkv = L.linear(p + "attn.Wqkv", 3 * D, D, bias);
        if (t.qk_ln) {
            a.q_ln = norm(L, p + "attn.q_ln", t);
            a.k_ln = norm(L, p + "attn.k_ln", t);
        }
        a.out = L.linear(p + "attn.out_proj", D, D, bias);
        const std::size_t F = std::size_t(t.intermediate_size);
        b.ffn.up = L.linear(p + (old ? "mlp.mlp_up" : "ffn.up_proj"), F, D, bias);
        b.ffn.down = L.linear(p + (old ? "mlp.mlp_down" : "ffn.down_proj"), D, F, bias);
        b.ffn.act = nn::Activation::GeluErf;
        return b;
    }
};

}  // namespace flamingo::model
