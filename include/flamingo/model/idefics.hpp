#pragma once
// What IDEFICS (Hugging Face's Flamingo, modeling_idefics.py) does differently
// from OpenFlamingo, on the generic modules; the vision tower and the Perceiver
// differ only in names and small options, kept beside OpenFlamingo's in
// vision.hpp and perceiver.hpp (VisionConfig::hf_clip, PerceiverConfig::idefics).
//
// Gated cross-attention (IdeficsGatedCrossAttentionLayer), before decoder
// layers 0, n, 2n, ... (n = cross_layer_interval): the shared block
// (cross_attention.hpp) with LLaMA-shaped parts (load_gated_cross_attention):
//   a = o_proj(attention(q_proj(rms1(x)), k_proj(v), v_proj(v)))   v: visual tokens
//       (with qk_layer_norms, RMSNorms of each head's q and k)
//   a = 0 on rows that attend to no image (the cross_attention_gate)
//   x = x + tanh(alpha_cross_attn) * a
//   x = x + tanh(alpha_dense) * mlp(rms2(x))                        SwiGLU
// alpha_* are one float or one per channel (alpha_type). Which image a row
// sees is the processor's image_attention_mask: the latest <image> at or
// before it (none before the first), as OpenFlamingo's immediate mode, and
// none after a </s> until the next <image> (cut_after_doc_end).
//
// Decoupled vocabulary: ids >= vocab_size read additional_embedding, and the
// logits are [lm_head | additional_fc] (IdeficsDecoupledEmbedding / Linear).
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "../core/expr.hpp"
#include "../io/json.hpp"
#include "../io/mmap.hpp"
#include "../nn/cross_attention.hpp"
#include "../nn/mlp.hpp"
#include "config.hpp"
#include "cross_attention.hpp"
#include "weights.hpp"

namespace flamingo::model {

namespace idefics {

inline constexpr const char* kFakeToken = "<fake_token_around_image>";
inline constexpr const char* kImageToken = "<image>";
inline constexpr const char* kEndOfUtterance = "<end_of_utterance>";

// The processor's prompt for a text in which the user wrote <image> for each
// image: <image> becomes <fake_token_around_image><image><fake_token_around_image>,
// or <image><fake_token_around_image> right after another image (the fake
// token between two images is shared). The pieces of text between images are
// the processor's text items: stripped of spaces at both ends, and an image
// with only spaces between it and the previous one is consecutive to it. A
// text that already has the fake tokens is taken as the processor's output.
inline std::string prompt_text(std::string_view text) {
    const std::string_view image = kImageToken;
    const std::string fake = kFakeToken;
    if (text.find(fake) != std::string_view::npos) return std::string(text);
    std::string out;
    bool last_was_image = false;
    std::size_t pos = 0;
    while (true) {
        const std::size_t at = text.find(image, pos);
        std::string_view piece = text.substr(pos, at == std::string_view::npos ? std::string_view::npos : at - pos);
        while (!piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
        while (!piece.empty() && piece.back() == ' ') piece.remove_suffix(1);
        if (!piece.empty()) out += piece, last_was_image = false;
        if (at == std::string_view::npos) break;
        out += last_was_image ? std::string(image) + fake : fake + std::string(image) + fake;
        last_was_image = true;
        pos = at + image.size();
    }
    return out;
}

// The id of `token` in a tokenizer.json: its added_tokens entry, else its
// model.vocab entry (IDEFICS's config.json names no token ids).
inline int token_id(const std::filesystem::path& tokenizer_json, std::string_view token) {
    const std::string src = tokenizer_json.string();
    io::MappedFile f = io::MappedFile::open(tokenizer_json);
    const io::json j = io::parse_json(f.text(), src);
    if (j.is_object()) {
        if (auto a = j.find("added_tokens"); a != j.end() && a->is_array())
            for (const io::json& t : *a)
                if (t.is_object() && t.value("content", std::string()) == token && t.contains("id") &&
                    t["id"].is_number_integer())
                    return t["id"].get<int>();
        if (auto m = j.find("model"); m != j.end() && m->is_object())
            if (auto v = m->find("vocab"); v != m->end() && v->is_object())
                if (auto e = v->find(token); e != v->end() && e->is_number_integer()) return e->get<int>();
    }
    fail(ErrorKind::Config, src, ": no ", token, " token (an IDEFICS tokenizer has ", kFakeToken, " and ", kImageToken,
         ")");
}

// The processor's image_attention_mask (image_attention_mask_for_packed_input_ids)
// beyond "the latest <image> at or before a token": after an end of document
// </s>, the tokens up to the next <image> attend to no image. tt holds the
// <image> count of each row (Batch::text_time); the rows so cut off get 0.
// Whether the position before a segment was cut off is kept in the marks of
// its KV cache, so a prompt read in pieces, a cached prefix, a conversation's
// history and beams carry it. Generated tokens follow the same rule, which is
// transformers' generate() (each generated row repeats the prompt's last row)
// except after a generated </s> that generation goes on past.
inline void cut_after_doc_end(std::span<const std::int32_t> tokens, std::span<std::uint32_t> tt,
                              std::span<const nn::Segment> segments, std::int32_t image_id, std::int32_t doc_end_id) {
    for (const nn::Segment& seg : segments) {
        check(seg.cache || seg.pos0 == 0, "IDEFICS: a segment at position ", seg.pos0, " has no KV cache");
        bool cut = seg.pos0 > 0 && seg.cache->mark(seg.pos0 - 1);
        for (std::size_t i = seg.row0; i < seg.row0 + seg.rows; ++i) {
            if (tokens[i] == image_id) cut = false;
            if (cut) tt[i] = 0;
            if (tokens[i] == doc_end_id) cut = true;
            if (seg.cache) seg.cache->set_mark(seg.pos0 + (i - seg.row0), cut);
        }
    }
}

// Parameters of an IDEFICS model of this config (every tensor its
// directory holds), counted from the shapes alone: for sizing a model
// without its weights.
inline std::uint64_t parameter_count(const Config& c) {
    using u = std::uint64_t;
    const VisionConfig& v = c.vision;
    const u W = u(v.width), P = u(v.patch_size), T = u(v.num_patches()) + 1, Fv = u(v.mlp_width);
    const u vision = 3 * P * P * W + W + T * W + 2 * W +
                     u(v.layers) * (4 * (W * W + W) + 2 * W * Fv + Fv + W + 4 * W) + 2 * W;
    const PerceiverConfig& pc = c.perceiver;
    const u inner = u(pc.inner_dim()), dh = u(pc.dim_head), Fp = u(pc.ff_mult) * W;
    const u perceiver = u(pc.num_latents) * W + 2 * W +
                        u(pc.depth) * (4 * W + (pc.qk_layer_norms ? 4 * dh : 0) + 4 * W * inner + 2 * W + 2 * W * Fp);
    const TextConfig& t = c.text;
    const u D = u(t.hidden_size), F = u(t.intermediate_size), V = u(t.vocab_size) + u(c.additional_vocab_size);
    const u decoder = 2 * V * D + D + u(t.num_layers) * (4 * D * D + 3 * D * F + 2 * D);
    const CrossAttnConfig& x = c.cross_attn;
    const u blocks = u(t.num_layers / x.every_n_layers);
    const u cross = blocks * (2 * D * D + 2 * W * D + 3 * D * F + 2 * D + (x.qk_layer_norms ? 2 * u(x.dim_head) : 0) +
                              2 * (x.alpha_vector ? D : 1));
    return vision + perceiver + decoder + cross;
}

// IDEFICS's gated cross-attention block (IdeficsGatedCrossAttentionLayer)
// under its names, as the shared block's parts.
inline GatedCrossAttention load_gated_cross_attention(Weights& L, const std::string& p, const CrossAttnConfig& c,
                                                      const TextConfig& t, std::size_t vis_dim) {
    const std::size_t D = std::size_t(t.hidden_size), H = std::size_t(c.heads), dh = std::size_t(c.dim_head);
    const std::size_t F = std::size_t(t.intermediate_size);
    const float eps = t.norm_eps;
    GatedCrossAttention::Parts b;
    b.norm = L.rms_norm(p + "input_layernorm", D, eps);
    nn::CrossAttention& a = b.attn;
    a.heads = H, a.dim_head = dh;
    a.to_q = L.linear(p + "cross_attn.q_proj", H * dh, D, false);
    a.to_k = L.linear(p + "cross_attn.k_proj", H * dh, vis_dim, false);
    a.to_v = L.linear(p + "cross_attn.v_proj", H * dh, vis_dim, false);
    a.to_out = L.linear(p + "cross_attn.o_proj", D, H * dh, false);
    if (c.qk_layer_norms) {
        a.q_norm = L.rms_norm(p + "cross_attn.q_layer_norm", dh, eps);
        a.k_norm = L.rms_norm(p + "cross_attn.k_layer_norm", dh, eps);
    }
    b.ff.norm = L.rms_norm(p + "post_attention_layernorm", D, eps);
    b.ff.mlp.gate = L.linear(p + "mlp.gate_proj", F, D, false);
    b.ff.mlp.up = L.linear(p + "mlp.up_proj", F, D, false);
    b.ff.mlp.down = L.linear(p + "mlp.down_proj", D, F, false);
    b.ff.mlp.act = nn::activation_from_name(t.hidden_act);
    const auto gate = [&](const std::string& name) {
        const std::size_t n = c.alpha_vector ? D : 1;
        const float* alpha = c.alpha_vector ? L.floats(p + name, {1, 1, D}) : L.floats(p + name, {1});
        std::vector<float> g(n);
        for (std::size_t i = 0; i < n; ++i) g[i] = std::tanh(alpha[i]);
        return g;
    };
    b.attn_gate = gate("alpha_cross_attn");
    b.ff_gate = gate("alpha_dense");
    b.only_attend_immediate_media = true;  // the processor's image_attention_mask: the latest image
    return GatedCrossAttention(std::move(b));
}

}  // namespace idefics

}  // namespace flamingo::model
