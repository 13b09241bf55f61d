#pragma once
// The language model with OpenFlamingo's FlamingoLayers: decoder layer i is
// preceded by a gated cross-attention block when (i + 1) % every_n_layers == 0.
//   x = embed(tokens) (+ wpe(positions) for MPT with learned positions)
//   for each layer: x = cross_attn(x, media) if present; x = decoder_layer(x)
//   logits = head(final_norm(x)) (* logit_scale for MPT)
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "../io/config.hpp"
#include "../kernels/rope.hpp"
#include "../nn/block.hpp"
#include "cross_attention.hpp"
#include "gpt_neox.hpp"
#include "llama.hpp"
#include "mpt.hpp"

namespace flamingo::model {

// The visual tokens' keys and values for every cross-attention layer, projected
// once per prompt and shared by every sequence (beam, candidate) that reads it.
struct MediaContext {
    std::size_t n_media = 0, n_latents = 0;
    std::vector<std::vector<float>> kv;  // per decoder layer; empty where it has no cross-attention
};

// Rows to run through the decoder in one pass. Row i is token tokens[i];
// text_time[i] is the number of <image> tokens at or before it (for generated
// tokens: in the whole prompt). Segments say which rows form which sequence.
struct Batch {
    std::span<const std::int32_t> tokens;
    std::span<const std::uint32_t> text_time;
    std::span<const nn::Segment> segments;
};

template <std::size_t Hidden, class Ffn, std::size_t VisDim>
class LanguageModel {
public:
    using Block = nn::TransformerBlock<Hidden, Ffn>;
    using CrossAttn = GatedCrossAttention<Hidden, VisDim>;

    LanguageModel() = default;
    LanguageModel(nn::WeightLoader& L, const io::FlamingoConfig& c) : cfg_(c.text) {
        const io::TextConfig& t = cfg_;
        hidden_ = std::size_t(t.hidden_size);
        switch (t.family) {
            case io::Family::Llama: load<Llama>(L, c, Llama::final_norm, Llama::head); break;
            case io::Family::GptNeox: load<GptNeox>(L, c, GptNeox::final_norm, GptNeox::head); break;
            case io::Family::Mpt: load<Mpt>(L, c, Mpt::final_norm(t), ""); break;
        }
    }

    std::size_t vocab_size() const { return embed_.rows; }
    std::size_t hidden() const { return hidden_; }
    std::size_t num_layers() const { return blocks_.size(); }
    std::size_t kv_width() const { return blocks_.empty() ? 0 : blocks_[0].attn.kv_width(); }
    std::size_t max_positions() const { return std::size_t(cfg_.max_positions); }

    // Projects the visual tokens [n_media * n_latents, VisDim] for every cross-attention layer.
    void project_media(const float* visual, std::size_t n_media, std::size_t n_latents, std::size_t vis_dim,
                       MediaContext& ctx) const {
        ctx.n_media = n_media, ctx.n_latents = n_latents;
        ctx.kv.assign(blocks_.size(), {});
        for (std::size_t l = 0; l < blocks_.size(); ++l) {
            if (!xattn_[l]) continue;
            ctx.kv[l].resize(n_media * n_latents * xattn_[l]->kv_width());
            if (n_media) xattn_[l]->project_media(visual, n_media * n_latents, vis_dim, ctx.kv[l].data());
        }
    }

    // Runs the batch; writes logits [logit_rows.size(), vocab] for the chosen rows.
    void forward(const Batch& b, const MediaContext& media, std::span<const std::size_t> logit_rows, float* logits,
                 nn::Scratch& s) const {
        const std::size_t M = b.tokens.size(), D = hidden_, V = vocab_size();
        check(b.text_time.size() == M, "batch: ", M, " tokens but ", b.text_time.size(), " text times");
        auto x = s.rows<Hidden>(nn::kOuter0, M, D);
        for (std::size_t i = 0; i < M; ++i) {
            const std::int32_t id = b.tokens[i];
            check(id >= 0 && std::size_t(id) < V, "token id ", id, " at position ", i,
                  " is outside the vocabulary of ", V, " tokens");
            embed_.row(std::size_t(id), x.data() + i * D);
        }
        for (const nn::Segment& seg : b.segments) {
            check(seg.pos0 + seg.rows <= max_positions(), "sequence of ", seg.pos0 + seg.rows,
                  " tokens exceeds the model's context of ", max_positions(), " positions");
            if (wpe_)
                for (std::size_t r = 0; r < seg.rows; ++r) {
                    float* xr = x.data() + (seg.row0 + r) * D;
                    const float* pe = wpe_ + (seg.pos0 + r) * D;
                    for (std::size_t d = 0; d < D; ++d) xr[d] += pe[d];
                }
        }
        for (std::size_t l = 0; l < blocks_.size(); ++l) {
            if (xattn_[l]) (*xattn_[l])(x, b.text_time.data(), media.kv[l].data(), media.n_media, media.n_latents, s);
            blocks_[l](x, b.segments, l, s);
        }
        if (logit_rows.empty()) return;
        auto h = s.rows<Hidden>(nn::kNormed, logit_rows.size(), D);
        for (std::size_t i = 0; i < logit_rows.size(); ++i) h[i].assign(x[logit_rows[i]]);
        final_norm_(h, h);
        auto out = nn::act(logits, logit_rows.size(), V, V);
        head_(h, out);
        if (logit_scale_ != 1.0f) out.assign(out * logit_scale_);
    }

private:
    template <class F>
    void load(nn::WeightLoader& L, const io::FlamingoConfig& c, const std::string& final_norm,
              const std::string& head) {
        const io::TextConfig& t = cfg_;
        const std::size_t D = hidden_;
        // The vocabulary comes from the embedding's shape (OpenFlamingo enlarges it).
        auto es = L.shape_of(F::embed);
        if (!es) fail(L.source(), ": required tensor '", F::embed, "' is missing");
        check(es->size() == 2 && (*es)[1] == D, L.source(), ": tensor '", F::embed, "': expected shape [vocab, ", D,
              "], found ", io::shape_string(*es));
        const std::size_t V = (*es)[0];
        embed_ = L.matrix(F::embed, V, D);
        if (t.uses_rope()) {
            const std::size_t rot = std::size_t(t.rotary_dim);
            if (rot > 0) rope_ = std::make_unique<kernels::RopeTable>(rot, t.rope_theta, max_positions());
        }
        if constexpr (std::is_same_v<F, Mpt>) {
            if (t.learned_pos_emb && !t.alibi) wpe_ = L.floats(Mpt::position, {max_positions(), D});
        }
        for (int i = 0; i < t.num_layers; ++i) {
            const std::string p = std::string(F::layers) + std::to_string(i) + ".";
            if (c.cross_attn.has_cross_attn(i))
                xattn_.emplace_back(std::in_place, L, p + "gated_cross_attn_layer.", c.cross_attn, D,
                                    std::size_t(c.vision.width));
            else
                xattn_.emplace_back();
            blocks_.push_back(F::template block<Hidden, Ffn>(L, p + "decoder_layer.", t, rope_.get()));
        }
        if constexpr (std::is_same_v<F, Llama>)
            final_norm_ = nn::Norm<Hidden>::rms_norm(L, final_norm, D, t.norm_eps);
        else if constexpr (std::is_same_v<F, GptNeox>)
            final_norm_ = nn::Norm<Hidden>::layer_norm(L, final_norm, D, t.norm_eps);
        else
            final_norm_ = Mpt::norm<Hidden>(L, final_norm, t);
        // Output head: its own matrix, or the tied token embedding.
        if (!head.empty() && L.has(head)) {
            auto hs = L.shape_of(head);
            check(hs->size() == 2 && (*hs)[0] == V && (*hs)[1] == D, L.source(), ": tensor '", head,
                  "': expected shape [", V, ", ", D, "] (the token embedding's vocabulary), found ",
                  io::shape_string(*hs));
            head_.w = L.matrix(head, V, D);
        } else {
            check(head.empty() || t.tie_word_embeddings, L.source(), ": required tensor '", head,
                  "' is missing (the config does not tie it to the token embedding)");
            head_.w = embed_;
        }
        if (t.logit_scale) logit_scale_ = *t.logit_scale;
    }

    io::TextConfig cfg_;
    std::size_t hidden_ = 0;
    nn::Matrix embed_;
    const float* wpe_ = nullptr;
    std::unique_ptr<kernels::RopeTable> rope_;
    std::vector<Block> blocks_;
    std::vector<std::optional<CrossAttn>> xattn_;
    nn::Norm<Hidden> final_norm_;
    nn::Linear<dyn, Hidden> head_;
    float logit_scale_ = 1.0f;
};

}  // namespace flamingo::model
