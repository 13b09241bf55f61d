#pragma once
// LLaMA decoder layers (Hugging Face modeling_llama.py) as a TransformerBlock:
//   h = x + self_attn(input_layernorm(x))              RMSNorm, rotary q/k, grouped-query heads
//   out = h + mlp(post_attention_layernorm(h))         down(silu(gate(h)) * up(h))
#include <string>

#include "config.hpp"
#include "weights.hpp"
#include "../kernels/rope.hpp"
#include "../nn/block.hpp"

namespace flamingo::model {

struct Llama {
    static constexpr const char* layers = "lang_encoder.model.layers.";
    static constexpr const char* embed = "lang_encoder.model.embed_tokens.weight";
    static constexpr const char* final_norm = "lang_encoder.model.norm";
    static constexpr const char* head = "lang_encoder.lm_head.weight";

    static nn::TransformerBlock block(Weights& L, const std::string& p, const TextConfig& t,
                                      const kernels::RopeTable* rope) {
        nn::TransformerBlock b;
        const std::size_t D = std::size_t(t.hidden_size), hd = std::size_t(t.head_dim);
        const std::size_t nh = std::size_t(t.num_heads), nkv = std::size_t(t.num_kv_heads);
        b.norm1 = L.rms_norm(p + "input_layernorm", D, t.norm_eps);
        b.norm2 = L.rms_norm(p + "post_attention_layernorm", D, t.norm_eps);
        auto& a = b.attn;
        a.layout = nn::QKVLayout::Separate;
        a.heads = nh, a.kv_heads = nkv, a.head_dim = hd;
        a.scale = 1.0f / std::sqrt(float(hd));
        a.rope = rope;
        a.q = L.linear(p + "self_attn.q_proj", nh * hd, D, t.attention_bias);
        a.k = L.linear(p + "self_attn.k_proj", nkv * hd, D, t.attention_bias);
        a.v = L.linear(p + "self_attn.v_proj", nkv * hd, D, t.attention_bias);
        a.out = L.linear(p + "self_attn.o_proj", D, nh * hd, t.attention_bias);
        const std::size_t F = std::size_t(t.intermediate_size);
        b.ffn.gate = L.linear(p + "mlp.gate_proj", F, D, t.mlp_bias);
        b.ffn.up = L.linear(p + "mlp.up_proj", F, D, t.mlp_bias);
        b.ffn.down = L.linear(p + "mlp.down_proj", D, F, t.mlp_bias);
        b.ffn.act = nn::activation_from_name(t.hidden_act.empty() ? "silu" : t.hidden_act);
        return b;
    }
};

}  // namespace flamingo::model
