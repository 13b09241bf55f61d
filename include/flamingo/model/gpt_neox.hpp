#pragma once
// GPT-NeoX / RedPajama-INCITE layers (Hugging Face modeling_gpt_neox.py):
//   attn = attention(input_layernorm(x))   fused per-head query_key_value, rotary on rotary_pct of each head
//   parallel:   out = x + attn + mlp(post_attention_layernorm(x))
//   sequential: h = x + attn; out = h + mlp(post_attention_layernorm(h))
#include <string>

#include "config.hpp"
#include "weights.hpp"
#include "../kernels/rope.hpp"
#include "../nn/block.hpp"

namespace flamingo::model {

struct GptNeox {
    static constexpr const char* layers = "lang_encoder.gpt_neox.layers.";
    static constexpr const char* embed = "lang_encoder.gpt_neox.embed_in.weight";
    static constexpr const char* final_norm = "lang_encoder.gpt_neox.final_layer_norm";
    static constexpr const char* head = "lang_encoder.embed_out.weight";

    static nn::TransformerBlock block(Weights& L, const std::string& p, const TextConfig& t,
                                      const kernels::RopeTable* rope) {
        nn::TransformerBlock b;
        const std::size_t D = std::size_t(t.hidden_size), nh = std::size_t(t.num_heads), hd = D / nh;
        b.norm1 = L.layer_norm(p + "input_layernorm", D, t.norm_eps);
        b.norm2 = L.layer_norm(p + "post_attention_layernorm", D, t.norm_eps);
        b.parallel_residual = t.use_parallel_residual;
        auto& a = b.attn;
        a.layout = nn::QKVLayout::PerHead;
        a.heads = a.kv_heads = nh, a.head_dim = hd;
        a.scale = 1.0f / std::sqrt(float(hd));
        a.rope = rope;
        a.qkv = L.linear(p + "attention.query_key_value", 3 * D, D, t.attention_bias);
        a.out = L.linear(p + "attention.dense", D, D, t.attention_bias);
        const std::size_t F = std::size_t(t.intermediate_size);
        b.ffn.up = L.linear(p + "mlp.dense_h_to_4h", F, D, true);
        b.ffn.down = L.linear(p + "mlp.dense_4h_to_h", D, F, true);
        b.ffn.act = nn::activation_from_name(t.hidden_act.empty() ? "gelu" : t.hidden_act);
        return b;
    }
};

}  // namespace flamingo::model
