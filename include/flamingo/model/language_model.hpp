#pragma once
// The language model with OpenFlamingo's FlamingoLayers: decoder layer i is
// preceded by a gated cross-attention block when (i + 1) % every_n_layers == 0.
//   x = embed(tokens) (+ wpe(positions) for MPT with learned positions)
//   for each layer: x = cross_attn(x, media) if present; x = decoder_layer(x)
//   logits = head(final_norm(x)) (* logit_scale for MPT)
// IDEFICS's decoder (Config::arch) is LLaMA under its own names, with its own
// cross-attention blocks and decoupled vocabulary (idefics.hpp).
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "../kernels/rope.hpp"
#include "../nn/block.hpp"
#include "config.hpp"
#include "cross_attention.hpp"
#include "gpt_neox.hpp"
#include "idefics.hpp"
#include "llama.hpp"
#include "mpt.hpp"
#include "weights.hpp"

namespace flamingo::model {

// Rows to run through the decoder in one pass. Row i is token tokens[i];
// text_time[i] is the number of <image> tokens at or before it (for generated
// tokens: in the whole prompt). Segment s is a run of rows of one sequence
// (its KV cache and positions), reading media[s]'s visual keys and values:
// sequences of different requests can share one pass.
struct Batch {
    std::span<const std::int32_t> tokens;
    std::span<const std::uint32_t> text_time;
    std::span<const nn::Segment> segments;
    std::span<const MediaKV* const> media;  // one per segment
};

class LanguageModel {
public:
    LanguageModel() = default;
    LanguageModel(Weights& L, const Config& c) : cfg_(c.text) {
        if (c.arch == Arch::Idefics) {
            load_idefics(L, c);
            return;
        }
        switch (cfg_.family) {
            case Family::Llama: load<Llama>(L, c, Llama::final_norm, Llama::head); break;
            case Family::GptNeox: load<GptNeox>(L, c, GptNeox::final_norm, GptNeox::head); break;
            case Family::Mpt: load<Mpt>(L, c, Mpt::final_norm(cfg_), ""); break;
        }
    }

    std::size_t vocab_size() const { return embed_.rows() + (add_embed_.table.empty() ? 0 : add_embed_.rows()); }
    std::size_t hidden() const { return std::size_t(cfg_.hidden_size); }
    std::size_t num_layers() const { return blocks_.size(); }
    std::size_t kv_width() const { return blocks_.empty() ? 0 : blocks_[0].attn.kv_width(); }
    std::size_t max_positions() const { return std::size_t(cfg_.max_positions); }

    // Projects the visual tokens [n_media * n_latents, vis_dim] for every cross-attention layer.
    void project_media(const nn::CAct& visual, std::size_t n_media, std::size_t n_latents, MediaKV& media) const {
        media.n_media = n_media, media.n_latents = n_latents;
        media.kv.assign(blocks_.size(), {});
        const std::size_t rows = n_media * n_latents;
        check(visual.extent(0) == rows, ErrorKind::Shape, "visual tokens: ", visual.extent(0), " rows for ", n_media,
              " media of ", n_latents, " latents");
        for (std::size_t l = 0; l < blocks_.size(); ++l) {
            if (!xattn_[l]) continue;
            const std::size_t w = xattn_[l]->kv_width();
            media.kv[l].resize(rows * w);
            if (rows) xattn_[l]->project_media(visual, nn::act(media.kv[l].data(), rows, w));
        }
    }

    std::size_t workspace(std::size_t M, std::size_t logit_rows) const {
        const std::size_t D = hidden();
        std::size_t layer = 0;
        for (std::size_t l = 0; l < blocks_.size(); ++l) {
            layer = std::max(layer, blocks_[l].workspace(M));
            if (xattn_[l]) layer = std::max(layer, xattn_[l]->workspace(M));
        }
        return nn::ws_floats(M, D) + (doc_end_id_ >= 0 ? nn::ws_floats(M) : 0) +
               std::max(layer, nn::ws_floats(logit_rows, D));
    }

    // Runs the batch; writes logits [logit_rows.size(), vocab] for the chosen rows.
    void forward(const Batch& b, std::span<const std::size_t> logit_rows, const nn::Act& logits,
                 nn::Workspace& ws) const {
        nn::Workspace::Frame frame(ws);
        const std::size_t M = b.tokens.size(), D = hidden(), V = vocab_size();
        check(b.text_time.size() == M, "batch: ", M, " tokens but ", b.text_time.size(), " text times");
        check(b.media.size() == b.segments.size(), "batch: ", b.segments.size(), " segments but ", b.media.size(),
              " media");
        auto x = ws.rows(M, D);
        for (std::size_t i = 0; i < M; ++i) {
            const std::int32_t id = b.tokens[i];
            check(id >= 0 && std::size_t(id) < V, "token id ", id, " at position ", i,
                  " is outside the vocabulary of ", V, " tokens");
            if (std::size_t(id) < embed_.rows()) embed_(std::size_t(id), x[i].data());
            else add_embed_(std::size_t(id) - embed_.rows(), x[i].data());
        }
        for (const nn::Segment& seg : b.segments) {
            check(seg.pos0 + seg.rows <= max_positions(), ErrorKind::Limit, "sequence of ", seg.pos0 + seg.rows,
                  " tokens exceeds the model's context of ", max_positions(), " positions");
            if (wpe_)
                x.rows(seg.row0, seg.row0 + seg.rows)
                    .assign(x.rows(seg.row0, seg.row0 + seg.rows) +
                            make_view(wpe_ + seg.pos0 * D, dextents<2>(seg.rows, D)));
        }
        const std::uint32_t* text_time = b.text_time.data();
        if (doc_end_id_ >= 0) {
            std::uint32_t* tt = ws.indices(M);
            std::copy(b.text_time.begin(), b.text_time.end(), tt);
            idefics::cut_after_doc_end(b.tokens, {tt, M}, b.segments, image_id_, doc_end_id_);
            text_time = tt;
        }
        for (std::size_t l = 0; l < blocks_.size(); ++l) {
            if (xattn_[l]) (*xattn_[l])(x, text_time, b.segments, b.media, l, ws);
            blocks_[l](x, b.segments, l, ws);
        }
        if (logit_rows.empty()) return;
        check(logits.extent(0) == logit_rows.size() && logits.extent(1) == V, ErrorKind::Shape, "logits: expected [",
              logit_rows.size(), ", ", V, "], given ", shape_string(logits.extents()));
        auto h = ws.rows(logit_rows.size(), D);
        for (std::size_t i = 0; i < logit_rows.size(); ++i) h[i].assign(x[logit_rows[i]]);
        final_norm_(h, h);
        if (add_head_.empty()) {
            head_(h, logits);
        } else {  // [lm_head | additional_fc]
            head_(h, nn::columns(logits, 0, head_.out()));
            add_head_(h, nn::columns(logits, head_.out(), add_head_.out()));
        }
        if (logit_scale_ != 1.0f) logits.assign(logits * logit_scale_);
    }

private:
    // IDEFICS (modeling_idefics.py): model.layers.{i} are LLaMA layers; block
    // k of model.gated_cross_attn_layers comes before layer k * interval.
    void load_idefics(Weights& L, const Config& c) {
        const TextConfig& t = cfg_;
        image_id_ = c.media_token_id, doc_end_id_ = c.doc_end_token_id;
        const std::size_t D = hidden(), V = std::size_t(t.vocab_size), A = std::size_t(c.additional_vocab_size);
        embed_.table = L.matrix("model.embed_tokens.weight", V, D);
        head_ = L.projection("lm_head.weight", V, D);
        if (A) {
            add_embed_.table = L.matrix("model.embed_tokens.additional_embedding.weight", A, D);
            add_head_ = L.projection("lm_head.additional_fc.weight", A, D);
        }
        rope_ = std::make_unique<kernels::RopeTable>(std::size_t(t.rotary_dim), t.rope_theta, max_positions());
        const int interval = c.cross_attn.every_n_layers;
        for (int i = 0; i < t.num_layers; ++i) {
            if (c.cross_attn.has_cross_attn(i))
                xattn_.emplace_back(idefics::load_gated_cross_attention(
                    L, "model.gated_cross_attn_layers." + std::to_string(i / interval) + ".", c.cross_attn, t,
                    std::size_t(c.vision.width)));
            else
                xattn_.emplace_back();
            blocks_.push_back(Llama::block(L, "model.layers." + std::to_string(i) + ".", t, rope_.get()));
        }
        final_norm_ = L.rms_norm("model.norm", D, t.norm_eps);
    }

    template <class F>
    void load(Weights& L, const Config& c, const std::string& final_norm, const std::string& head) {
        const TextConfig& t = cfg_;
        const std::size_t D = hidden();
        // The vocabulary comes from the embedding's shape (OpenFlamingo enlarges it).
        auto es = L.shape_of(F::embed);
        if (!es) fail(ErrorKind::Shape, L.source(), ": required tensor '", F::embed, "' is missing");
        check(es->size() == 2 && (*es)[1] == D, ErrorKind::Shape, L.source(), ": tensor '", F::embed,
              "': expected shape [vocab, ", D, "], found ", io::shape_string(*es));
        const std::size_t V = (*es)[0];
        embed_.table = L.matrix(F::embed, V, D);
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
                xattn_.emplace_back(load_gated_cross_attention(L, p + "gated_cross_attn_layer.", c.cross_attn, D,
                                                               std::size_t(c.vision.width)));
            else
                xattn_.emplace_back();
            blocks_.push_back(F::block(L, p + "decoder_layer.", t, rope_.get()));
        }
        if constexpr (std::is_same_v<F, Llama>)
            final_norm_ = L.rms_norm(final_norm, D, t.norm_eps);
        else if constexpr (std::is_same_v<F, GptNeox>)
            final_norm_ = L.layer_norm(final_norm, D, t.norm_eps);
        else
            final_norm_ = Mpt::norm(L, final_norm, t);
        // Output head: its own matrix, or the tied token embedding.
        if (!head.empty() && L.has(head)) {
            auto hs = L.shape_of(head);
            // (a matrix stored quantised has its packed shape; projection checks it)
            check(L.stored_quantized(head) || (hs->size() == 2 && (*hs)[0] == V && (*hs)[1] == D), ErrorKind::Shape,
                  L.source(), ": tensor '",
                  head, "': expected shape [", V, ", ", D, "] (the token embedding's vocabulary), found ",
                  io::shape_string(*hs));
            head_ = L.projection(head, V, D);
        } else {
            check(head.empty() || t.tie_word_embeddings, ErrorKind::Shape, L.source(), ": required tensor '", head,
                  "' is missing (the config does not tie it to the token embedding)");
            head_ = L.projection_of(embed_.table);
        }
        if (t.logit_scale) logit_scale_ = *t.logit_scale;
    }

    TextConfig cfg_;
    nn::Embedding embed_;
    const float* wpe_ = nullptr;
    std::unique_ptr<kernels::RopeTable> rope_;
    std::vector<nn::TransformerBlock> blocks_;
    std::vector<std::optional<GatedCrossAttention>> xattn_;  // OpenFlamingo's or IDEFICS's parts
    nn::Norm final_norm_;
    nn::Linear head_;
    nn::Embedding add_embed_;  // IDEFICS additional vocabulary (ids from embed_.rows() on)
    nn::Linear add_head_;
    float logit_scale_ = 1.0f;
    std::int32_t image_id_ = -1, doc_end_id_ = -1;  // IDEFICS: text after </s> sees no image
};

}  // namespace flamingo::model
