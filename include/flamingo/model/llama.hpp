#pragma once
// LLaMA decoder layers (Hugging Face modeling_llama.py) as a TransformerBlock:
//   h = x + self_attn(input_layernorm(x))              RMSNorm, rotary q/k, grouped-query heads
//   out = h + mlp(post_attention_layernorm(h))         down(silu(gate(h)) * up(h))
#include <string>

#include "../io/config.hpp"
#include "../kernels/rope.hpp"
#include "../nn/block.hpp"

namespace flamingo::model {

struct Llama {
    static constexpr const char* layers = "lang_encoder.model.layers.";
    static constexpr const char* embed = "lang_encoder.model.embed_tokens.weight";
    static constexpr const char* final_norm = "lang_encoder.model.norm";
    static constexpr const char* head = "lang_encoder.lm_head.weight";

    template <std::size_t H, class Ffn>
    static nn::TransformerBlock<H, Ffn> block(nn::WeightLoader& L, const std::string& p, const io::TextConfig& t,
                                              const kernels::RopeTable* rope) {
        nn::TransformerBlock<H, Ffn> b;
        const std::size_t D = std::size_t(t.hidden_size), hd = std::size_t(t.head_dim);
        const std::size_t nh = std::size_t(t.num_heads), nkv = std::size_t(t.num_kv_heads);
        b.norm1 = nn::Norm<H>::rms_norm(L, p + "input_layernorm", D, t.norm_eps);
        b.norm2 = nn::Norm<H>::rms_norm(L, p + "post_attention_layernorm", D, t.norm_eps);
        auto& a = b.attn;
        a.layout = nn::QKVLayout::Separate;
        a.heads = nh, a.kv_heads = nkv, a.head_dim = hd;
        a.scale = 1.0f / std::sqrt(float(hd));
        a.rope = rope;
        a.q = nn::Linear<dyn, H>::load(L, p + "self_attn.q_proj", nh * hd, D, t.attention_bias);
        a.k = nn::Linear<dyn, H>::load(L, p + "self_attn.k_proj", nkv * hd, D, t.attention_bias);
        a.v = nn::Linear<dyn, H>::load(L, p + "self_attn.v_proj", nkv * hd, D, t.attention_bias);
        a.out = nn::Linear<H, dyn>::load(L, p + "self_attn.o_proj", D, nh * hd, t.attention_bias);
        const std::size_t F = std::size_t(t.intermediate_size);
        if constexpr (requires { b.ffn.gate; }) {
            b.ffn.gate = decltype(b.ffn.gate)::load(L, p + "mlp.gate_proj", F, D, t.mlp_bias);
            b.ffn.up = decltype(b.ffn.up)::load(L, p + "mlp.up_proj", F, D, t.mlp_bias);
            b.ffn.down = decltype(b.ffn.down)::load(L, p + "mlp.down_proj", D, F, t.mlp_bias);
            b.ffn.act = nn::activation_from_name(t.hidden_act.empty() ? "silu" : t.hidden_act);
        } else {
            fail("LLaMA needs the gated MLP instantiation");
        }
        return b;
    }
};

}  // namespace flamingo::model
